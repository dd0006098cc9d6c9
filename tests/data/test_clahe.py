"""CLAHE / CLAHEd: OpenCV applied by hand on the same uint8 array, shapes, types, range, contrast, metadata, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_xai.data.clahe import CLAHE, CLAHEd


def _low_contrast(shape: tuple[int, ...] = (1, 48, 40), seed: int = 0) -> np.ndarray:
    """Values 1000-1040 (12-bit-like, narrow range): a faint bright square on a faint gradient with noise."""
    rng = np.random.default_rng(seed)
    image = 1000.0 + np.linspace(0, 10, shape[-1])[None, None, :] + rng.normal(0, 2, shape)
    image[..., 10:20, 12:25] += 20
    return image


def _by_hand(image: np.ndarray, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> np.ndarray:
    low, high = image.min(), image.max()
    scaled = np.rint((image - low) / (high - low) * 255).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles[1], tiles[0]))  # OpenCV: (columns, rows)
    return np.stack([clahe.apply(np.ascontiguousarray(channel)) for channel in scaled]) / 255.0


def test_matches_opencv_by_hand_channel_by_channel() -> None:
    image = _low_contrast((3, 48, 40))
    image[1] = 2000.0 - image[1]  # channels differ: each is equalised on its own
    out = CLAHE()(image)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 48, 40)
    np.testing.assert_allclose(out, _by_hand(image), atol=1e-6)
    np.testing.assert_allclose(
        CLAHE(clip_limit=4.0, tile_grid_size=(4, 2))(image), _by_hand(image, 4.0, (4, 2)), atol=1e-6
    )
    np.testing.assert_allclose(CLAHE(tile_grid_size=4)(image), _by_hand(image, 2.0, (4, 4)), atol=1e-6)
    assert not np.allclose(CLAHE(tile_grid_size=(4, 2))(image), CLAHE(tile_grid_size=(2, 4))(image))


def test_uint8_input_range_and_shape() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(1, 40, 48), dtype=np.uint8)
    image[0, 0, 0], image[0, 0, 1] = 0, 255  # full range: the rescale is the identity
    out = CLAHE()(image)
    assert out.shape == (1, 40, 48) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(image[0]) / 255.0
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_contrast_increases_on_a_low_contrast_image() -> None:
    image = _low_contrast()
    out = CLAHE()(image)
    # compare on the same [0, 1] scale: the input rescaled by its own range, as CLAHE sees it
    rescaled = (image - image.min()) / (image.max() - image.min())
    assert out.std() > 1.2 * rescaled.std()
    assert len(np.unique(out)) > 0.5 * len(np.unique(np.rint(rescaled * 255)))


def test_metatensor_keeps_metadata_and_type() -> None:
    affine = torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.as_tensor(_low_contrast()), affine=affine, meta={"filename_or_obj": "/data/x.dcm"})
    out = CLAHE()(image)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.shape == (1, 48, 40)
    assert out.meta["filename_or_obj"] == "/data/x.dcm" and torch.equal(out.affine, affine)
    np.testing.assert_allclose(out.numpy(), _by_hand(_low_contrast()), atol=1e-6)
    plain = CLAHE()(torch.as_tensor(_low_contrast()))
    assert type(plain) is torch.Tensor and plain.dtype == torch.float32


def test_dictionary_version() -> None:
    data = {"image": MetaTensor(torch.as_tensor(_low_contrast())), "mask": np.zeros((1, 48, 40)), "label": 1}
    out = Compose([CLAHEd(keys="image", clip_limit=3.0)])(data)
    np.testing.assert_allclose(out["image"].numpy(), _by_hand(_low_contrast(), 3.0), atol=1e-6)
    assert out["mask"] is data["mask"] and out["label"] == 1
    assert "other" not in CLAHEd(keys=["image", "other"], allow_missing_keys=True)(data)


def test_constant_image_gives_zeros_like_opencv() -> None:
    out = CLAHE()(np.full((1, 16, 16), 7.0))
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.zeros((16, 16), np.uint8)) / 255.0
    np.testing.assert_allclose(out[0], expected)


@pytest.mark.parametrize("shape", [(48, 40), (1, 8, 8, 8), (1, 1, 8, 8, 8)])
def test_non_2d_input_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"channel-first 2D image \(C, W, H\)"):
        CLAHE()(np.zeros(shape))


def test_bad_arguments_and_values_are_refused() -> None:
    with pytest.raises(ValueError, match="clip_limit"):
        CLAHE(clip_limit=0)
    for grid in ((8,), (0, 8), (8, 2.5), True):
        with pytest.raises(ValueError, match="tile_grid_size"):
            CLAHE(tile_grid_size=grid)
    image = _low_contrast()
    image[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CLAHE()(image)
