import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from monai_xai.visualize import (
    fullest_slice,
    orthogonal_slices,
    peak_voxel,
    plot_metric_curves,
    save_map_grid_png,
    save_overlay_png,
)


def test_fullest_slice_cuts_the_mask_where_it_is_largest():
    mask = torch.zeros(1, 6, 7, 8, dtype=torch.bool)
    mask[0, 0:2, 0:2, 1] = True  # 4 voxels on axial slice 1
    mask[0, 4:6, 4:7, 6] = True  # 6 on slice 6: the centroid (slice 4) would miss both parts
    assert fullest_slice(mask) == 6
    assert fullest_slice(mask, axis=0) == 4  # rows 4 and 5 hold 3 voxels each, rows 0 and 1 hold 2
    assert fullest_slice(mask, axis=1) == 0  # every occupied column holds 2: the first wins
    flat = np.zeros((1, 5, 9))
    flat[0, 1, 3] = flat[0, 4, 3] = 1
    assert fullest_slice(flat) == 3 and fullest_slice(flat, axis=0) == 1
    assert fullest_slice(torch.zeros(1, 4, 6, 8)) == 4


def _brightness(path) -> float:
    return float(imread(path)[..., :3].mean())


def test_map_grid_shows_the_axial_slice_through_the_mask(tmp_path):
    # the maps are bright on axial slice 5 only; the grid must cut there when the mask is centred on it
    image = torch.zeros(1, 8, 8, 8)
    heat = torch.zeros(1, 8, 8, 8)
    heat[..., 5] = 1
    maps = {"trained": {"a": heat, "b": heat}, "randomised": {"a": heat, "b": heat}}
    on, off = torch.zeros(1, 8, 8, 8), torch.zeros(1, 8, 8, 8)
    on[0, 3:5, 3:5, 5] = 1
    off[0, 3:5, 3:5, 1] = 1
    options = {"alpha": 1.0, "cmap": "gray"}
    through = save_map_grid_png(image, maps, tmp_path / "on.png", mask=on, **options)
    beside = save_map_grid_png(image, maps, tmp_path / "off.png", mask=off, **options)
    assert _brightness(through) > _brightness(beside) + 0.2
    # a column per method, a row per set of maps
    wide = save_map_grid_png(image, {"trained": {m: heat for m in "abcd"}}, tmp_path / "wide.png", **options)
    assert imread(wide).shape[1] > 1.8 * imread(through).shape[1]
    assert imread(wide).shape[0] < imread(through).shape[0]


def test_map_grid_2d_and_bad_inputs(tmp_path):
    image, heat = torch.rand(1, 6, 6), torch.rand(1, 6, 6)
    labels = {"gradcam": "gradcam\nrho=0.12"}
    assert save_map_grid_png(image, {"trained": {"gradcam": heat}}, tmp_path / "2d.png", column_labels=labels).exists()
    with pytest.raises(ValueError, match="maps is empty"):
        save_map_grid_png(image, {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same methods in the same order"):
        save_map_grid_png(image, {"a": {"gradcam": heat}, "b": {"hirescam": heat}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="spatial shape"):
        save_map_grid_png(image, {"a": {"gradcam": torch.rand(1, 4, 4)}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="channel-first"):
        save_map_grid_png(torch.rand(6, 6), {"a": {"gradcam": heat}}, tmp_path / "x.png")


def test_metric_curves_with_named_steps_widen_and_draw_the_reference(tmp_path):
    steps = [f"layer{index}.conv" for index in range(40)]
    curves = {"gradcam": (range(40), np.linspace(1, 0, 40).tolist())}
    plain = imread(plot_metric_curves({"gradcam": (range(3), [1.0, 0.5, 0.2])}, tmp_path / "plain.png", "x", "y"))
    named = imread(plot_metric_curves(curves, tmp_path / "named.png", "x", "y", xtick_labels=steps))
    assert named.shape[1] > 1.5 * plain.shape[1]  # 40 vertical layer names need room
    with_line = imread(plot_metric_curves(curves, tmp_path / "line.png", "x", "y", xtick_labels=steps, reference=0.5))
    assert with_line.shape == named.shape and not np.array_equal(with_line, named)
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        plot_metric_curves({"a": (range(3), [1.0, 0.5])}, tmp_path / "bad.png", "x", "y")


def test_peak_voxel_finds_an_off_centre_lesion():
    saliency = torch.zeros(1, 10, 12, 14)
    saliency[0, 7, 2, 11] = 1.0  # the peak, far from the middle (5, 6, 7)
    saliency[0, 7, 3, 11] = 0.9
    assert peak_voxel(saliency) == (7, 2, 11)
    saliency[0, 1, 1, 1] = float("nan")  # NaN is not a peak
    assert peak_voxel(saliency) == (7, 2, 11)
    assert peak_voxel(torch.full((1, 4, 6, 8), float("nan"))) == (2, 3, 4)


def test_orthogonal_slices_and_overlay(tmp_path):
    volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    slices = orthogonal_slices(volume)
    np.testing.assert_array_equal(slices[0], volume[0, 1].numpy())
    np.testing.assert_array_equal(slices[1], volume[0, :, 1].numpy())
    np.testing.assert_array_equal(slices[2], volume[0, :, :, 2].numpy())
    through = orthogonal_slices(volume, (0, 2, 1))
    np.testing.assert_array_equal(through[0], volume[0, 0].numpy())
    np.testing.assert_array_equal(through[1], volume[0, :, 2].numpy())
    np.testing.assert_array_equal(through[2], volume[0, :, :, 1].numpy())
    assert len(orthogonal_slices(torch.zeros(1, 5, 6))) == 1
    with pytest.raises(ValueError, match="centre must be 3 indices"):
        orthogonal_slices(volume, (2, 0, 0))
    with pytest.raises(ValueError, match="share the spatial shape"):
        save_overlay_png(torch.zeros(1, 8, 8), torch.zeros(1, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="centre must be"):
        save_overlay_png(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8), tmp_path / "x.png", centre="max")
    assert save_overlay_png(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8), tmp_path / "y.png").exists()
    assert not math.isnan(float(slices[0].mean()))


def test_2d_overlay_shows_the_image_as_its_file_looks(tmp_path):
    """MONAI reads a 2D file as (x, y) = (column, row); the PNG must put the file's top-left corner top-left."""
    from monai.transforms import LoadImage
    from PIL import Image

    rows, columns = 60, 80
    pixels = np.zeros((rows, columns), dtype=np.uint8)
    pixels[5:15, 5:20] = 255  # a bright patch near the top-left corner of the file
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = LoadImage(image_only=True, ensure_channel_first=True)(tmp_path / "photo.png")
    assert image.shape == (1, columns, rows)
    heat = (image > 0).float()
    path = save_overlay_png(image, heat, tmp_path / "overlay.png", alpha=1.0, cmap="Reds")
    drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
    dark_red = np.argwhere((drawn[..., 0] > 80) & (drawn[..., 1] < 40) & (drawn[..., 2] < 40))
    inside = dark_red[:, 0]
    assert len(dark_red)
    top, bottom = np.percentile(inside, [5, 95])
    # the patch lies in the upper sixth of the panel: the top quarter of the figure, not its bottom
    assert bottom < drawn.shape[0] * 0.45, (top, bottom, drawn.shape)


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 12, 12, 12)])
def test_overlay_caption_is_written_below_the_panels_unclipped(tmp_path, shape):
    """A long caption wraps to the figure's width: the PNG grows downwards, the text lies in the new strip, and no
    text touches the bottom or right edge (nothing is cut off)."""
    from PIL import Image

    image, heat = torch.rand(shape), torch.rand(shape)
    caption = "Prediction: NV (60.00% confidence, calibrated). Focus: small (26 mm²), elongated region " * 3
    plain = np.asarray(Image.open(save_overlay_png(image, heat, tmp_path / "plain.png")).convert("L"))
    drawn = np.asarray(Image.open(save_overlay_png(image, heat, tmp_path / "c.png", caption=caption)).convert("L"))
    assert drawn.shape[1] == plain.shape[1] and drawn.shape[0] > plain.shape[0] + 40
    strip = drawn[plain.shape[0] :]
    rows, columns = np.nonzero(strip < 128)
    assert len(rows) > 100  # the caption's text, in several lines
    assert rows.max() < strip.shape[0] - 2 and columns.max() < drawn.shape[1] - 2
