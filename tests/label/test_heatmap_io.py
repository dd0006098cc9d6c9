"""Heat bins, quantisation and grid resampling, against hand computations, numpy and scipy oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage.color import rgb2lab

from monai_xai.label import (
    DescribeHeatmapd,
    HeatmapToInputGridd,
    QuantizeHeatmapd,
    heat_bins,
    heat_color,
    quantize_heatmap,
    resample_to_grid,
)


def test_heat_bins_names_edges_and_dark_to_bright_colors():
    bins = heat_bins(10)
    assert [b.label for b in bins] == list(range(1, 11))
    assert bins[0].name == "heat 0.0-0.1" and bins[5].name == "heat 0.5-0.6" and bins[-1].name == "heat 0.9-1.0"
    assert bins[3].low == pytest.approx(0.3) and bins[3].high == pytest.approx(0.4)
    assert [b.color for b in bins] == [heat_color((b.low + b.high) / 2) for b in bins]
    assert [b.name for b in heat_bins(4)] == ["heat 0.00-0.25", "heat 0.25-0.50", "heat 0.50-0.75", "heat 0.75-1.00"]
    assert [b.name for b in heat_bins(3)] == ["heat 0.00-0.33", "heat 0.33-0.67", "heat 0.67-1.00"]
    for n in (7, 99, 101, 255):
        assert len({b.name for b in heat_bins(n)}) == n


def test_heat_color_is_a_perceptual_dark_to_bright_ramp():
    """CIELAB lightness (scikit-image, independent of matplotlib) rises at every step and spans most of its range;
    the hue goes from violet (blue over red, no green) to yellow (red and green over blue)."""
    values = np.linspace(0, 1, 21)
    lightness = rgb2lab(np.asarray([[heat_color(v) for v in values]]))[0, :, 0]
    assert (np.diff(lightness) > 0).all() and lightness[-1] - lightness[0] > 60
    steps = np.diff(lightness)
    assert steps.max() < 2 * steps.min()  # evenly: no band that jumps out
    dark, bright = heat_color(0.0), heat_color(1.0)
    assert dark[2] > dark[0] > dark[1] and min(bright[:2]) > 0.9 > 0.3 > bright[2]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        heat_color(1.5)


@pytest.mark.parametrize("n_bins, min_heat", [(10, 0.0), (10, 0.25), (4, 0.5), (1, 0.0)])
def test_quantize_matches_numpy_digitize(n_bins, min_heat):
    heat = torch.rand(2, 1, 5, 6, 7)
    heat[0, 0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5])
    labels = quantize_heatmap(heat, n_bins, min_heat)
    edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    expected = np.digitize(heat.numpy(), edges) + 1
    expected[heat.numpy() < min_heat] = 0
    assert labels.dtype == torch.uint8 and labels.shape == heat.shape
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert labels[0, 0, 0, 0, 1] == n_bins  # 1.0 falls in the last bin


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        quantize_heatmap(torch.tensor([0.5, 1.5]), 10)
    with pytest.raises(ValueError, match="n_bins"):
        quantize_heatmap(torch.tensor([0.5]), 256)
    with pytest.raises(ValueError, match="min_heat"):
        quantize_heatmap(torch.tensor([0.5]), 10, min_heat=-0.1)


def test_resample_flips_and_permutes_exactly():
    """A grid with permuted, flipped axes and a shifted origin: the resampled volume is an index remapping."""
    source = torch.rand(1, 4, 5, 6)
    affine = torch.tensor([[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]], dtype=torch.float64)
    # destination voxel (i, j, k) = source voxel (3 - j, i, k + 1): axes 0 and 1 swapped, source x flipped, z shifted.
    dst_affine = torch.tensor([[0, -2.0, 0, 16], [3.0, 0, 0, 20], [0, 0, 4.0, 34], [0, 0, 0, 1]], dtype=torch.float64)
    resampled = resample_to_grid(MetaTensor(source, affine=affine), dst_affine, (5, 4, 6), mode="nearest")
    expected = torch.zeros(1, 5, 4, 6)
    for i in range(5):
        for j in range(4):
            expected[0, i, j, :5] = source[0, 3 - j, i, 1:]
    assert resampled.shape == (1, 5, 4, 6)
    torch.testing.assert_close(resampled.as_tensor(), expected)
    torch.testing.assert_close(resampled.affine, dst_affine)


def test_resample_bilinear_matches_scipy_inside_the_volume():
    source = torch.rand(1, 6, 7, 8, dtype=torch.float64).float()
    affine = np.diag([1.0, 1.5, 2.0, 1.0])
    dst_affine = np.diag([0.5, 0.75, 1.0, 1.0])
    dst_affine[:3, 3] = [0.25, 0.5, 1.0]
    shape = (9, 10, 12)
    resampled = resample_to_grid(MetaTensor(source, affine=torch.as_tensor(affine)), dst_affine, shape)
    # Source voxel coordinates of every destination voxel, then trilinear interpolation by scipy.
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=0).reshape(3, -1)
    world = dst_affine[:3, :3] @ grid + dst_affine[:3, 3:]
    voxels = np.linalg.solve(affine[:3, :3], world - affine[:3, 3:])
    expected = ndimage.map_coordinates(source[0].double().numpy(), voxels, order=1).reshape(shape)
    np.testing.assert_allclose(resampled[0].numpy(), expected, atol=1e-5)


def test_heatmap_to_input_grid_uses_the_loaded_grid_and_meta():
    original_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    heat = MetaTensor(torch.rand(1, 8, 8, 8), affine=torch.eye(4, dtype=torch.float64))
    image = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.eye(4, dtype=torch.float64))
    image.meta["original_affine"] = original_affine
    image.meta["spatial_shape"] = np.array([4, 4, 4])
    out = HeatmapToInputGridd(keys="pred")({"pred": heat, "image": image})
    assert out["pred"].shape == (1, 4, 4, 4)
    np.testing.assert_array_equal(out["pred_meta_dict"]["affine"], original_affine)
    # Destination voxel (i, j, k) sits at world 2 * (i, j, k): source voxel 2 * (i, j, k), no interpolation needed.
    torch.testing.assert_close(out["pred"].as_tensor(), heat.as_tensor()[:, ::2, ::2, ::2])
    with pytest.raises(ValueError, match="original_affine"):
        HeatmapToInputGridd(keys="pred")({"pred": heat, "image": MetaTensor(torch.zeros(1, 8, 8, 8))})


def test_quantize_dict_transform_keeps_meta():
    heat = MetaTensor(torch.tensor([[0.05, 0.55, 1.0]]), meta={"marker": 1})
    out = QuantizeHeatmapd(keys="pred", n_bins=10, min_heat=0.1)({"pred": heat})["pred"]
    assert out.tolist() == [[0, 6, 10]] and out.meta["marker"] == 1


def test_describe_dict_transform_fills_the_result_json_as_strict_json():
    """A hot corner on a grid whose affine swaps the first two axes: the sides are the patient's; non-finite fields
    (the contrast of a map that is 0 outside its hot region) become null; a NaN heatmap gets an empty description."""
    heat = torch.zeros(1, 8, 8, 8)
    heat[0, :2, 6:, 6:] = 1.0  # low first index, high second and third
    swap = torch.tensor([[0.0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    data = {"pred": MetaTensor(heat, affine=swap), "result": {"class": "lesion"}}
    out = DescribeHeatmapd(keys="pred", class_names=["background", "lesion"], explained=1)(data)
    result = out["result"]
    assert result["class"] == "lesion" and out["pred"] is data["pred"]
    assert result["description"].startswith(
        "The map explains lesion. Focus: small (16 mm³)"
    )  # 2 x 2 x 2 voxels of 2 mm³
    # RAS: x = 2 j (high: right), y = i (low: posterior), z = k (high: superior)
    assert "right, posterior and superior part of the volume (patient terms)" in result["description"]
    assert result["description_fields"]["region_location"] == "R-P-S"
    assert result["description_fields"]["region_contrast"] is None
    json.dumps(result, allow_nan=False)
    broken = DescribeHeatmapd(keys="pred")({"pred": MetaTensor(torch.full((1, 4, 4, 4), float("nan")))})
    assert broken["result"] == {"description": "", "description_fields": {}}
