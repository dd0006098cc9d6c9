import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid
from scipy.ndimage import distance_transform_edt

from monai_xai.metrics import (
    EHRAUCMetric,
    HeatDiffMetric,
    PointingGameMetric,
    RelevanceMassAccuracyMetric,
    SaliencyDiceMetric,
    SaliencyIoUMetric,
    effective_heat_ratios,
    ehr_auc,
    heat_diff,
    otsu_threshold,
    pointing_game,
    relevance_mass_accuracy,
    saliency_auprc,
    saliency_dice,
    saliency_iou,
)

# saliency [[1.0, 0.5], [0.0, 0.25]] as (1, 1, 2, 2)
HAND_SALIENCY = torch.tensor([[1.0, 0.5], [0.0, 0.25]])[None, None]


def _mask(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)[None, None]


def inputiba_ehr_reference(heatmap: np.ndarray, roi: np.ndarray, weight_by_heat: bool) -> float:
    """numpy transcription of InputIBA EffectiveHeatRatios.evaluate (mask ROI, 11 quantiles, base threshold 0.1)."""
    heatmap = heatmap.astype(float).copy()
    roi_mask = roi.astype(bool)
    if heatmap.max() > 1.0:
        heatmap = heatmap / 255.0
    poi_mask = heatmap >= 0.1
    heatmap[~poi_mask] = 0.0
    poi = heatmap[poi_mask]
    quantiles = np.linspace(0, 1.0, 11)
    ratios = np.zeros(len(quantiles))
    max_heat = heatmap.max()
    for i, q in enumerate(quantiles):
        t = min(np.quantile(poi, q), max_heat * 0.99)
        bin_mask = heatmap >= t
        total_points = bin_mask.sum()
        heat_in_roi = heatmap[bin_mask * roi_mask].sum() if weight_by_heat else (bin_mask * roi_mask).sum()
        ratios[i] = heat_in_roi / (total_points + 1e-8)
    return float(trapezoid(ratios, quantiles))


def test_ehr_equidistant_hand_values():
    # thresholds 0, 0.5, 1 (steps=3); mask = the 1.0 voxel
    # t=0: all 4 selected, 1 inside -> 1/4; t=0.5: {1.0, 0.5}, 1 inside -> 1/2; t=1: {1.0} -> 1
    # AUC = 0.5 * (0.25 + 0.5) / 2 + 0.5 * (0.5 + 1) / 2 = 0.5625
    mask = _mask([[1, 0], [0, 0]])
    ratios, levels = effective_heat_ratios(HAND_SALIENCY, mask, steps=3)
    assert torch.allclose(levels, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(ratios, torch.tensor([[0.25, 0.5, 1.0]]))
    assert torch.allclose(ehr_auc(HAND_SALIENCY, mask, steps=3), torch.tensor([0.5625]))


def test_ehr_equidistant_weighted_hand_values():
    # mask = the 0.5 voxel. counts: t=0: 1/4, t=0.5: 1/2, t=1: 0/1 -> AUC 0.5*0.75/2 + 0.5*0.5/2 = 0.3125
    # heat-weighted: t=0: 0.5/4, t=0.5: 0.5/2, t=1: 0 -> AUC 0.5*0.375/2 + 0.5*0.25/2 = 0.15625
    mask = _mask([[0, 1], [0, 0]])
    assert torch.allclose(ehr_auc(HAND_SALIENCY, mask, steps=3), torch.tensor([0.3125]))
    assert torch.allclose(ehr_auc(HAND_SALIENCY, mask, steps=3, weighted=True), torch.tensor([0.15625]))


def test_ehr_quantile_hand_values():
    # heat [0.05, 0.2, 0.6, 1.0] -> 0.05 zeroed; points of interest [0.2, 0.6, 1.0]; levels 0, 0.5, 1
    # q=0: t=0.2 -> 3 selected, 1 inside -> 1/3; q=0.5: t=0.6 -> 1/2; q=1: t=min(1.0, 0.99)=0.99 -> 1/1
    # AUC = 0.5 * (1/3 + 1/2) / 2 + 0.5 * (1/2 + 1) / 2 = 0.208333 + 0.375
    saliency = torch.tensor([0.05, 0.2, 0.6, 1.0])[None, None, None]
    mask = torch.tensor([0, 0, 0, 1], dtype=torch.bool)[None, None, None]
    auc = ehr_auc(saliency, mask, thresholds="quantile", steps=3)
    assert torch.allclose(auc, torch.tensor([0.5 * (1 / 3 + 1 / 2) / 2 + 0.375]))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spatial", [(9, 11), (4, 5, 6)])
def test_ehr_quantile_matches_inputiba_transcription(weighted, spatial):
    generator = torch.Generator().manual_seed(3)
    saliency = torch.rand(3, 1, *spatial, generator=generator, dtype=torch.float64) ** 2
    mask = torch.rand(3, 1, *spatial, generator=generator) > 0.7
    auc = ehr_auc(saliency, mask, thresholds="quantile", steps=11, weighted=weighted)
    expected = [inputiba_ehr_reference(saliency[b, 0].numpy(), mask[b, 0].numpy(), weighted) for b in range(3)]
    assert np.allclose(auc.numpy(), expected, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    thresholds=st.sampled_from(["equidistant", "quantile"]),
    weighted=st.booleans(),
    steps=st.integers(2, 12),
)
def test_ehr_curve_and_auc_in_unit_interval(seed, thresholds, weighted, steps):
    generator = torch.Generator().manual_seed(seed)
    saliency = torch.rand(2, 1, 6, 7, generator=generator) ** 3
    saliency[:, :, 0, 0] = 1.0  # at least one point of interest for the quantile mode
    mask = torch.rand(2, 1, 6, 7, generator=generator) > 0.6
    mask[:, :, -1, -1] = True
    ratios, _ = effective_heat_ratios(saliency, mask, thresholds=thresholds, steps=steps, weighted=weighted)
    auc = ehr_auc(saliency, mask, thresholds=thresholds, steps=steps, weighted=weighted)
    assert ratios.shape == (2, steps)
    assert (ratios >= 0).all() and (ratios <= 1).all()
    assert (auc >= 0).all() and (auc <= 1).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), thresholds=st.sampled_from(["equidistant", "quantile"]))
def test_map_equal_to_mask_beats_random_map(seed, thresholds):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(1, 1, 8, 8, generator=generator) > 0.7
    mask[..., 0, 0], mask[..., 7, 7] = True, False  # neither empty nor full
    random_map = torch.rand(1, 1, 8, 8, generator=generator)  # in [0, 1): never reaches the top threshold 1
    perfect = mask.float()
    assert ehr_auc(perfect, mask, thresholds=thresholds) >= ehr_auc(random_map, mask, thresholds=thresholds)
    if thresholds == "equidistant":  # the random map selects nothing at t=1 where the perfect map scores 1
        assert ehr_auc(perfect, mask) > ehr_auc(random_map, mask)
    assert heat_diff(perfect, mask) == 1.0
    assert heat_diff(perfect, mask) > heat_diff(random_map, mask)


def test_heat_diff_hand_values():
    # mask = top row: inside mean (1 + 0.5) / 2 = 0.75, outside (0 + 0.25) / 2 = 0.125 -> 0.625
    assert torch.allclose(heat_diff(HAND_SALIENCY, _mask([[1, 1], [0, 0]])), torch.tensor([0.625]))


def test_iou_and_dice_hand_values_with_threshold_and_top_fraction():
    saliency = torch.tensor([[0.9, 0.6], [0.6, 0.1]])[None, None]
    mask = _mask([[1, 0], [1, 0]])
    # threshold 0.5: S = {0, 1, 2}, M = {0, 2}: IoU 2/3, Dice 2*2/(3+2) = 0.8
    assert torch.allclose(saliency_iou(saliency, mask, threshold=0.5), torch.tensor([2 / 3]))
    assert torch.allclose(saliency_dice(saliency, mask, threshold=0.5), torch.tensor([0.8]))
    # top half = 2 voxels: 0.9 (index 0), then the tie at 0.6 goes to the lower index 1 -> S = {0, 1}
    # IoU 1/3, Dice 2*1/(2+2) = 0.5
    assert torch.allclose(saliency_iou(saliency, mask, top_fraction=0.5), torch.tensor([1 / 3]))
    assert torch.allclose(saliency_dice(saliency, mask, top_fraction=0.5), torch.tensor([0.5]))


def test_pointing_game_hand_values_and_spacing():
    saliency = torch.zeros(1, 1, 5, 5)
    saliency[0, 0, 0, 0] = 1.0  # peak at (0, 0)
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 2, 0] = True  # 2 voxels away along axis 0
    assert pointing_game(saliency, mask, tolerance=3).item() == 1.0
    assert pointing_game(saliency, mask, tolerance=2).item() == 0.0  # strictly closer than the tolerance (TorchRay)
    # spacing 2 mm along axis 0: the mask is 4 mm away
    assert pointing_game(saliency, mask, tolerance=3, spacing=(2.0, 1.0)).item() == 0.0
    assert pointing_game(saliency, mask, tolerance=4.5, spacing=(2.0, 1.0)).item() == 1.0
    # tolerance 0: hit only inside the mask
    mask[0, 0, 0, 0] = True
    assert pointing_game(saliency, mask, tolerance=0).item() == 1.0


def test_pointing_game_first_maximum_wins_ties():
    saliency = torch.zeros(1, 1, 1, 9)
    saliency[..., 1] = saliency[..., 8] = 1.0
    mask = torch.zeros(1, 1, 1, 9, dtype=torch.bool)
    mask[..., 8] = True
    assert pointing_game(saliency, mask, tolerance=1).item() == 0.0  # the point is index 1, 7 voxels away


@pytest.mark.parametrize("spatial, spacing", [((7, 9), None), ((5, 6, 7), (2.0, 1.0, 0.5))])
def test_pointing_game_matches_distance_transform(spatial, spacing):
    generator = torch.Generator().manual_seed(5)
    saliency = torch.rand(6, 1, *spatial, generator=generator)
    mask = torch.rand(6, 1, *spatial, generator=generator) > 0.93
    mask[:, :, 0] = False
    for tolerance in (0, 1.5, 3):
        hits = pointing_game(saliency, mask, tolerance=tolerance, spacing=spacing)
        for b in range(6):
            peak = np.unravel_index(int(saliency[b].argmax()), spatial)
            # distance from every voxel to the nearest mask voxel, scipy as the oracle
            distance = distance_transform_edt(~mask[b, 0].numpy(), sampling=spacing)[peak]
            assert hits[b].item() == float(distance < tolerance or distance == 0)


def test_relevance_mass_accuracy_hand_value():
    # relevance [[2, -1], [1, 1]] -> positive [[2, 0], [1, 1]], total 4; mask = top row holds 2 -> 0.5
    saliency = torch.tensor([[2.0, -1.0], [1.0, 1.0]])[None, None]
    assert torch.allclose(relevance_mass_accuracy(saliency, _mask([[1, 1], [0, 0]])), torch.tensor([0.5]))


METRICS = {
    "ehr": lambda s, m: ehr_auc(s, m),
    "ehr_quantile": lambda s, m: ehr_auc(s, m, thresholds="quantile", weighted=True),
    "diff": heat_diff,
    "iou": lambda s, m: saliency_iou(s, m, threshold=0.5),
    "dice": lambda s, m: saliency_dice(s, m, top_fraction=0.2),
    "pointing": lambda s, m: pointing_game(s, m, tolerance=2),
    "mass": relevance_mass_accuracy,
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_empty_mask_gives_nan_and_a_warning(name):
    saliency = torch.rand(3, 1, 6, 6)
    mask = torch.rand(3, 1, 6, 6) > 0.5
    mask[1] = False
    with pytest.warns(UserWarning, match="1 of 3 samples skipped"):
        values = METRICS[name](saliency, mask)
    assert values.shape == (3,)
    assert torch.isnan(values[1]) and not torch.isnan(values[[0, 2]]).any()


def test_other_undefined_samples():
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    with pytest.warns(UserWarning, match="whole image"):
        assert torch.isnan(heat_diff(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4))).all()
    with pytest.warns(UserWarning, match="no positive relevance"):
        assert torch.isnan(relevance_mass_accuracy(-torch.rand(2, 1, 4, 4), mask)).all()
    with pytest.warns(UserWarning, match="no saliency >= 0.1"):
        # not flat (a flat map has no peak, see test_flat_maps_point_nowhere), but all heat below 0.1
        assert torch.isnan(ehr_auc(0.09 * torch.rand(2, 1, 4, 4), mask, thresholds="quantile")).all()


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_flat_maps_point_nowhere(value):
    """The all-zero map of an empty pixel set (or any constant map) has no peak: NaN, not a lucky 1.0 when the
    lesion touches voxel 0, nor an EHR-AUC of 1e-4."""
    mask = torch.zeros(2, 1, 6, 5, 4, dtype=torch.bool)
    mask[:, :, :2, :2, :2] = True  # contains voxel 0, where argmax of a flat map lands
    flat = torch.full((2, 1, 6, 5, 4), value)
    with pytest.warns(UserWarning, match="flat map"):
        assert torch.isnan(pointing_game(flat, mask)).all()
    with pytest.warns(UserWarning, match="flat map"):
        assert torch.isnan(ehr_auc(flat, mask)).all()
    peaked = flat.clone()
    peaked[:, :, 0, 0, 0] += 0.1
    assert pointing_game(peaked, mask).tolist() == [1.0, 1.0]


def test_pointing_game_in_half_precision_does_not_overflow():
    """Squared distances of a 300-voxel axis exceed float16's 65504: they are computed in float32."""
    saliency = torch.zeros(1, 1, 300, 4, dtype=torch.float16)
    saliency[0, 0, 299, 0] = 1
    mask = torch.zeros(1, 1, 300, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = True  # 299 voxels away: a miss at tolerance 10, a hit at 300
    assert pointing_game(saliency, mask, tolerance=10).item() == 0.0
    assert pointing_game(saliency, mask, tolerance=300).item() == 1.0
    assert pointing_game(saliency, mask, tolerance=299).item() == 0.0  # strictly closer than the tolerance


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_runs_on_3d_batches(name):
    saliency = torch.rand(2, 1, 4, 5, 6)
    mask = torch.zeros(2, 1, 4, 5, 6, dtype=torch.bool)
    mask[0, :, :2, :2, :2] = True
    mask[1, :, 2:, 3:, 1:4] = True
    values = METRICS[name](saliency, mask)
    assert values.shape == (2,) and torch.isfinite(values).all()
    for b in range(2):  # samples are independent
        assert torch.allclose(values[b], METRICS[name](saliency[b : b + 1], mask[b : b + 1])[0])


CUMULATIVE = [
    (EHRAUCMetric, {}, METRICS["ehr"]),
    (EHRAUCMetric, {"thresholds": "quantile", "weighted": True}, METRICS["ehr_quantile"]),
    (HeatDiffMetric, {}, heat_diff),
    (SaliencyIoUMetric, {"threshold": 0.5}, METRICS["iou"]),
    (SaliencyDiceMetric, {"top_fraction": 0.2}, METRICS["dice"]),
    (PointingGameMetric, {"tolerance": 2}, METRICS["pointing"]),
    (RelevanceMassAccuracyMetric, {}, relevance_mass_accuracy),
]


@pytest.mark.filterwarnings("ignore:.*samples skipped")
@pytest.mark.parametrize("metric_class, args, function", CUMULATIVE)
def test_cumulative_two_iterations_equal_one_over_the_concatenation(metric_class, args, function):
    saliency = torch.rand(5, 1, 6, 7)
    mask = torch.rand(5, 1, 6, 7) > 0.6
    mask[3] = False  # skipped sample: left out of the mean, not counted
    split = metric_class(**args, get_not_nans=True)
    split(y_pred=saliency[:2], y=mask[:2])
    split(y_pred=saliency[2:], y=mask[2:])
    whole = metric_class(**args, get_not_nans=True)
    whole(y_pred=saliency, y=mask)
    (split_mean, split_count), (whole_mean, whole_count) = split.aggregate(), whole.aggregate()
    expected = function(saliency, mask)
    assert split_count.item() == whole_count.item() == 4
    assert torch.allclose(split_mean, whole_mean)
    assert torch.allclose(split_mean, expected.nanmean().float())
    assert torch.allclose(split.aggregate()[0], split_mean)  # aggregating twice does not consume the NaN
    assert torch.equal(torch.isnan(split.get_buffer()[:, 0]), torch.isnan(expected))


def test_cumulative_with_only_skipped_samples_is_nan():
    metric = HeatDiffMetric(get_not_nans=True)
    with pytest.warns(UserWarning):
        metric(y_pred=torch.rand(2, 1, 4, 4), y=torch.zeros(2, 1, 4, 4))
    mean, count = metric.aggregate()
    assert math.isnan(mean.item()) and count.item() == 0


def test_bad_inputs_raise_clear_errors():
    saliency = torch.rand(2, 1, 4, 4)
    mask = torch.rand(2, 1, 4, 4) > 0.5
    with pytest.raises(ValueError, match="shape"):
        heat_diff(saliency, mask[:, :, :3])
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        heat_diff(saliency[:, 0, 0], mask)
    with pytest.raises(ValueError, match="binary"):
        heat_diff(saliency, mask.float() * 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        heat_diff(saliency.numpy(), mask)
    with pytest.raises(ValueError, match="NaN"):
        heat_diff(saliency.masked_fill(mask, float("nan")), mask)
    with pytest.raises(ValueError, match=r"\[0, 1\].*normalize_per_sample"):
        ehr_auc(saliency * 2, mask)
    with pytest.raises(ValueError, match="equidistant"):
        ehr_auc(saliency, mask, thresholds="linear")
    with pytest.raises(ValueError, match="steps"):
        ehr_auc(saliency, mask, steps=1)
    with pytest.raises(ValueError, match="exactly one"):
        saliency_iou(saliency, mask)
    with pytest.raises(ValueError, match="exactly one"):
        saliency_dice(saliency, mask, threshold=0.5, top_fraction=0.1)
    with pytest.raises(ValueError, match="top_fraction"):
        saliency_iou(saliency, mask, top_fraction=1.5)
    with pytest.raises(ValueError, match="spacing must hold 2"):
        pointing_game(saliency, mask, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(saliency, mask, tolerance=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_stay_on_the_gpu_and_match_the_cpu(name):
    saliency = torch.rand(2, 1, 6, 7, 8)
    mask = torch.rand(2, 1, 6, 7, 8) > 0.7
    on_gpu = METRICS[name](saliency.cuda(), mask.cuda())
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), METRICS[name](saliency, mask), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_otsu_threshold_matches_scikit_image(seed):
    from skimage.filters import threshold_otsu

    generator = torch.Generator().manual_seed(seed)
    # bimodal maps of different sizes and ranges, 2D and 3D
    shape = (3, 1, 9, 11) if seed % 2 else (2, 1, 4, 5, 6)
    low = torch.rand(shape, generator=generator) * 0.3
    high = 0.6 + torch.rand(shape, generator=generator) * (seed + 1)
    maps = torch.where(torch.rand(shape, generator=generator) > 0.7, high, low).double()
    ours = otsu_threshold(maps)
    expected = torch.tensor([threshold_otsu(sample[0].numpy()) for sample in maps], dtype=torch.float64)
    torch.testing.assert_close(ours, expected)
    # the per-sample thresholds binarise each map on its own
    iou = saliency_iou(maps, maps >= expected.reshape(-1, 1, *[1] * (maps.ndim - 2)), threshold=ours)
    assert torch.equal(iou, torch.ones_like(iou))


def test_otsu_threshold_of_a_flat_map_is_its_value_and_threshold_shape_is_checked():
    assert torch.equal(otsu_threshold(torch.full((2, 1, 3, 3), 0.25)), torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="one per sample"):
        saliency_iou(torch.rand(3, 1, 4, 4), torch.ones(3, 1, 4, 4), threshold=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("seed", range(5))
def test_auprc_matches_scikit_learn_with_ties(seed):
    from sklearn.metrics import average_precision_score

    generator = torch.Generator().manual_seed(seed)
    # values on a coarse grid so that many voxels tie
    maps = (torch.rand(3, 1, 6, 7, generator=generator) * 5).floor() / 4
    masks = torch.rand(3, 1, 6, 7, generator=generator) > 0.6
    ours = saliency_auprc(maps, masks)
    expected = [average_precision_score(m.flatten().numpy(), s.flatten().numpy()) for s, m in zip(maps, masks)]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32))


def test_auprc_hand_values_and_empty_mask():
    # ranks 1.0 (in), 0.5 (out), 0.25 (in), 0.0 (out): AP = 1/2 * 1 + 1/2 * 2/3
    mask = _mask([[1, 0], [0, 1]])
    assert saliency_auprc(HAND_SALIENCY, mask).item() == pytest.approx(0.5 + 1 / 3)
    # a flat map ranks all voxels together: AP = share of the mask
    assert saliency_auprc(torch.ones(1, 1, 2, 2), mask).item() == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="empty mask"):
        value = saliency_auprc(HAND_SALIENCY.expand(2, -1, -1, -1), torch.cat([mask, torch.zeros_like(mask)]))
    assert value[0].item() == pytest.approx(0.5 + 1 / 3) and math.isnan(value[1].item())
