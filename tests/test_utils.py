import numpy as np
import pytest
import torch

from monai_xai.utils import affine_4x4, check_batch_map, normalize_per_sample, per_sample_index


def test_normalize_per_sample_hand_values_and_constant_sample():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]]).unsqueeze(1)  # (2, 1, 2, 2)
    out = normalize_per_sample(maps)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # constant sample: zeros, not NaN


def test_normalize_per_sample_3d_keeps_samples_apart():
    maps = torch.rand(3, 1, 4, 5, 6) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1, 1, 1)
    out = normalize_per_sample(maps)
    for b in range(3):
        assert out[b].min() == 0 and out[b].max() == 1
        assert torch.allclose(out[b], normalize_per_sample(maps[b : b + 1])[0])


def test_per_sample_index_broadcast_and_errors():
    assert per_sample_index(2, 3).tolist() == [2, 2, 2]
    assert per_sample_index([0, 1, 2], 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="one per sample"):
        per_sample_index([0, 1], 3)


def test_check_batch_map_messages():
    images = torch.zeros(2, 3, 8, 8)
    check_batch_map("saliency", torch.zeros(2, 1, 8, 8), images)
    with pytest.raises(ValueError, match=r"saliency must have shape \(B, 1, \*spatial\)"):
        check_batch_map("saliency", torch.zeros(2, 8, 8), images)
    with pytest.raises(ValueError, match="NaN"):
        check_batch_map("saliency", torch.full((2, 1, 8, 8), float("nan")), images)


def test_affine_4x4_embeds_a_2d_affine_and_keeps_a_3d_one():
    two_d = np.array([[0.5, 0.0, 3.0], [0.0, -0.7, 4.0], [0.0, 0.0, 1.0]])
    full = affine_4x4(torch.as_tensor(two_d), 2)
    # voxel (i, j) lands where the 2D affine puts it, on the plane z = 0
    assert np.allclose(full @ [2, 5, 0, 1], [*(two_d @ [2, 5, 1])[:2], 0, 1])
    assert np.array_equal(affine_4x4(np.diag([1.0, 2.0, 3.0, 1.0]), 3), np.diag([1.0, 2.0, 3.0, 1.0]))
    with pytest.raises(ValueError, match="affine must be 4x4"):
        affine_4x4(np.eye(3), 3)  # a 3D grid needs its 4x4 affine
