"""Sliding-window CAMs: windows blended back exactly where they came from, masks cropped with them, empty windows
skipped, and window-by-window maps equal to whole-volume maps for a network whose maps are local."""

import pytest
import torch
from torch import nn

from monai_xai.cams import CAMExplainer
from monai_xai.cams.sliding_window import sliding_window_cam
from tests.helpers.nets import box_mask


class _RecordingWindowExplainer:
    """Returns the windows' first image channel, their mask crop and the product, and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, object]] = []

    def __call__(self, window_images, window_mask):
        self.calls.append((window_images, window_mask))
        maps = {"image": window_images[:, :1]}
        if isinstance(window_mask, torch.Tensor):
            maps["mask"] = window_mask
            maps["product"] = window_images[:, :1] * window_mask
        return maps


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "image_size, roi_size", [((20, 17), (8, 8)), ((9, 14, 11), (6, 6, 6)), ((5, 12, 7), (8, 6, 6))]
)
def test_windows_are_blended_back_where_they_came_from(mode, image_size, roi_size):
    """An explainer returning its window unchanged must give back the image (also where windows are padded)."""
    images = torch.randn(2, 2, *image_size)
    explain_window = _RecordingWindowExplainer()
    maps = sliding_window_cam(explain_window, images, None, roi_size, 3, 0.25, mode)
    assert maps["image"].shape == (2, 1, *image_size)
    assert torch.allclose(maps["image"], images[:, :1], atol=1e-5)
    # memory bound: never more than sw_batch_size windows of roi_size at once
    assert {tuple(window_images.shape[2:]) for window_images, _ in explain_window.calls} == {roi_size}
    assert max(window_images.shape[0] for window_images, _ in explain_window.calls) == 3


def test_tensor_mask_is_cropped_with_each_window_and_empty_windows_are_skipped():
    images = torch.randn(2, 1, 24, 20, 16)
    mask = torch.zeros(2, 1, 24, 20, 16)
    mask[0, 0, 0:5, 0:4, 0:6] = 1.0  # sample 0: corner, so the first batch of windows is not empty
    mask[1, 0, 14:20, 9:15, 3:12] = 0.5  # sample 1: a soft box in the middle
    explain_window = _RecordingWindowExplainer()
    maps = sliding_window_cam(explain_window, images, mask, (8, 8, 8), 4, 0.5, "gaussian")
    assert torch.allclose(maps["mask"], mask, atol=1e-6)
    assert torch.allclose(maps["product"], images * mask, atol=1e-5)
    # image channel is zero where every window covering the voxel was skipped, the image where none was
    run = sum(window_images.shape[0] for window_images, _ in explain_window.calls)
    windows_per_sample = 5 * 4 * 3  # overlap 0.5, roi 8: 24 -> 5 windows, 20 -> 4, 16 -> 3
    assert 0 < run < 2 * windows_per_sample
    for _, window_mask in explain_window.calls:
        assert (window_mask.flatten(1).amax(dim=1) > 0).all()
    assert torch.allclose(maps["image"][1, :, 16:18, 11:13, 6:9], images[1, :, 16:18, 11:13, 6:9], atol=1e-5)
    assert (maps["image"][1, :, :8] == 0).all()  # only windows starting at 0 and 4 (empty for sample 1) cover it


def test_voxel_and_box_masks_are_given_in_whole_image_coordinates():
    images = torch.randn(1, 1, 30, 26)
    box = (slice(20, 27), slice(3, 9))
    maps = sliding_window_cam(_RecordingWindowExplainer(), images, box, 10, 2, 0.25, "constant")
    assert torch.equal(maps["mask"], box_mask((30, 26), box))
    maps = sliding_window_cam(_RecordingWindowExplainer(), images, (25, 4), 10, 2, 0.25, "constant")
    assert maps["mask"][0, 0, 25, 4] == 1 and maps["mask"].sum() == 1


def test_named_pixel_sets_pass_through_or_are_refused():
    images = torch.randn(1, 1, 12, 12)
    explain_window = _RecordingWindowExplainer()
    sliding_window_cam(explain_window, images, "pred", 8, 1, 0.25, "gaussian")
    sliding_window_cam(explain_window, images, "image", 8, 1, 0.25, "gaussian")
    assert [window_mask for _, window_mask in explain_window.calls] == ["pred"] * 4 + ["image"] * 4
    with pytest.raises(ValueError, match="whole volume"):
        sliding_window_cam(explain_window, images, "largest_component", 8, 1, 0.25, "gaussian")
    with pytest.raises(ValueError, match=r"pixel_set must be one of \[.*\], got 'everything'"):
        sliding_window_cam(explain_window, images, "everything", 8, 1, 0.25, "gaussian")
    with pytest.raises(ValueError, match="pixel_set spatial shape"):
        sliding_window_cam(explain_window, images, torch.ones(1, 1, 12, 10), 8, 1, 0.25, "gaussian")
    with pytest.raises(TypeError, match="pixel_set must be"):
        sliding_window_cam(explain_window, images, 3.0, 8, 1, 0.25, "gaussian")
    with pytest.raises(ValueError, match="images must be"):
        sliding_window_cam(explain_window, images[0], None, 8, 1, 0.25, "gaussian")


def _segmenter(kernel_size: int) -> nn.Module:
    """Fully convolutional 3D segmenter, 1 -> 2 classes; ``features`` is the explained layer (full resolution)."""
    padding = kernel_size // 2
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv3d(1, 6, kernel_size, padding=padding), nn.ReLU(), nn.Conv3d(6, 6, kernel_size, padding=padding)
    )
    model.head = nn.Sequential(nn.ReLU(), nn.Conv3d(6, 2, 1))
    model.forward = lambda images: model.head(model.features(images))
    return model.eval()


@pytest.mark.parametrize("mask", ["ground_truth", "pred", "image"])
def test_sliding_window_equals_whole_volume_for_local_maps(mask):
    """With 1x1x1 convolutions every voxel's HiResCAM / LayerCAM value (g(p) A(p), g(p) = head weights x M(p)) depends
    on that voxel only, so every window computes exactly the whole-volume value and blending must reproduce it: any
    difference beyond float rounding (1e-5) is a misplaced window or a mis-cropped mask."""
    model = _segmenter(kernel_size=1)
    images = torch.randn(2, 1, 20, 18, 13)
    pixel_set = (torch.rand(2, 1, 20, 18, 13) > 0.7).float() if mask == "ground_truth" else mask
    methods = ("hirescam", "layercam", "gradcam_elementwise")
    whole = CAMExplainer(model, "features", methods)(images, class_idx=1, pixel_set=pixel_set)
    windowed = CAMExplainer(model, "features", methods, roi_size=(8, 8, 8), sw_batch_size=3, overlap=0.25)(
        images, class_idx=1, pixel_set=pixel_set
    )
    for method in methods:
        assert windowed[method].shape == whole[method].shape == (2, 1, 20, 18, 13)
        assert whole[method].amax() == 1
        assert (windowed[method] - whole[method]).abs().max() <= 1e-5


def test_sliding_window_close_to_whole_volume_for_small_receptive_field():
    """Two 3x3x3 convolutions: a voxel within 2 voxels of a window border sees zero padding instead of its neighbours,
    so windows disagree there; Gaussian blending down-weights those borders. The maps agree closely, not exactly:
    correlation > 0.998 and mean difference < 0.2 % of the range (measured 0.9996 and 0.02 %; with constant blending
    the same case gives 0.88 and 0.4 %, so these bounds also check that the Gaussian weights are applied)."""
    model = _segmenter(kernel_size=3)
    images = torch.randn(1, 1, 24, 24, 16)
    pixel_set = box_mask((24, 24, 16), (slice(4, 20), slice(6, 18), slice(2, 14)))
    whole = CAMExplainer(model, "features", "hirescam")(images, class_idx=1, pixel_set=pixel_set)["hirescam"]
    windowed = CAMExplainer(model, "features", "hirescam", roi_size=(12, 12, 12), sw_batch_size=2, overlap=0.5)(
        images, class_idx=1, pixel_set=pixel_set
    )["hirescam"]
    assert torch.corrcoef(torch.stack([whole.flatten(), windowed.flatten()]))[0, 1] > 0.998
    assert (whole - windowed).abs().mean() < 2e-3
