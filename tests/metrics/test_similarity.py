import math

import numpy as np
import pytest
import torch

from monai_xai.metrics import (
    NSSMetric,
    SaliencyCCMetric,
    SaliencyKLMetric,
    SaliencySIMMetric,
    kl_divergence,
    nss,
    pearson_cc,
    similarity_sim,
)

EPS = np.finfo(float).eps  # MATLAB eps


# straightforward numpy transcriptions of the MIT benchmark's MATLAB code (cvzoya/saliency code_forMetrics)
def kl_reference(saliency: np.ndarray, fixation: np.ndarray) -> float:
    map1, map2 = saliency.astype(float), fixation.astype(float)
    if map1.any():
        map1 = map1 / map1.sum()
    if map2.any():
        map2 = map2 / map2.sum()
    return float(np.sum(map2 * np.log(EPS + map2 / (map1 + EPS))))


def cc_reference(saliency: np.ndarray, fixation: np.ndarray) -> float:
    map1 = (saliency - saliency.mean()) / saliency.std(ddof=1)
    map2 = (fixation - fixation.mean()) / fixation.std(ddof=1)
    return float(np.corrcoef(map2.ravel(), map1.ravel())[0, 1])


def sim_reference(saliency: np.ndarray, fixation: np.ndarray) -> float:
    def normalise(values: np.ndarray) -> np.ndarray:
        if values.any():
            values = (values - values.min()) / (values.max() - values.min())
            values = values / values.sum()
        return values

    return float(np.minimum(normalise(saliency.astype(float)), normalise(fixation.astype(float))).sum())


def nss_reference(saliency: np.ndarray, fixations: np.ndarray) -> float:
    values = (saliency - saliency.mean()) / saliency.std(ddof=1)
    return float(values[fixations.astype(bool)].mean())


CASES = [
    (kl_divergence, kl_reference),
    (pearson_cc, cc_reference),
    (similarity_sim, sim_reference),
]


@pytest.mark.parametrize("function, reference", CASES)
@pytest.mark.parametrize("spatial", [(7, 8), (3, 4, 5)])
def test_metrics_match_numpy_transcriptions_of_the_mit_code(function, reference, spatial):
    generator = torch.Generator().manual_seed(11)
    saliency = torch.rand(3, 1, *spatial, generator=generator, dtype=torch.float64) ** 2
    gaze = torch.rand(3, 1, *spatial, generator=generator, dtype=torch.float64) ** 4
    saliency[0, 0].view(-1)[:5] = 0  # zeros exercise the eps terms of KL
    values = function(saliency, gaze)
    expected = [reference(saliency[b, 0].numpy(), gaze[b, 0].numpy()) for b in range(3)]
    assert values.shape == (3,)
    assert np.allclose(values.numpy(), expected, rtol=1e-10)
    # float32 inputs stay float32 and agree to single precision
    assert np.allclose(function(saliency.float(), gaze.float()).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial", [(7, 8), (3, 4, 5)])
def test_nss_matches_numpy_transcription(spatial):
    generator = torch.Generator().manual_seed(12)
    saliency = torch.randn(3, 1, *spatial, generator=generator, dtype=torch.float64)
    fixations = torch.rand(3, 1, *spatial, generator=generator) > 0.8
    fixations[:, :, 0] = True
    expected = [nss_reference(saliency[b, 0].numpy(), fixations[b, 0].numpy()) for b in range(3)]
    assert np.allclose(nss(saliency, fixations).numpy(), expected, rtol=1e-10)


def test_hand_values():
    # KL: P = [0.5, 0.5], Q = [1, 0] -> 1 * log(1 / 0.5) = log 2
    assert torch.allclose(
        kl_divergence(torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[3.0, 0.0]]]])), torch.tensor([math.log(2)])
    )
    # CC: x' = [-1, 0, 1], y = [2, 4, 7] -> y' = [-7/3, -1/3, 8/3]; sum x'y' = 5, sum x'^2 = 2, sum y'^2 = 114/9
    cc = pearson_cc(torch.tensor([[[[1.0, 2.0, 3.0]]]]), torch.tensor([[[[2.0, 4.0, 7.0]]]]))
    assert torch.allclose(cc, torch.tensor([5 / math.sqrt(2 * 114 / 9)]))
    # SIM: [0, 1, 3] -> min-max [0, 1/3, 1] -> /(4/3) [0, 0.25, 0.75]; [1, 1, 0] -> [0.5, 0.5, 0]; sum of min 0.25
    sim = similarity_sim(torch.tensor([[[[0.0, 1.0, 3.0]]]]), torch.tensor([[[[1.0, 1.0, 0.0]]]]))
    assert torch.allclose(sim, torch.tensor([0.25]))
    # NSS: [1, 2, 3, 4] has mean 2.5, std (N-1) sqrt(5/3); fixation on 4 -> 1.5 / sqrt(5/3)
    value = nss(torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]]), torch.tensor([[[[0, 0, 0, 1]]]]))
    assert torch.allclose(value, torch.tensor([1.5 / math.sqrt(5 / 3)]))


def test_identical_maps_score_perfectly():
    maps = torch.rand(2, 1, 6, 6) + 0.1
    assert torch.allclose(kl_divergence(maps, maps), torch.zeros(2), atol=1e-6)
    assert torch.allclose(pearson_cc(maps, maps), torch.ones(2))
    assert torch.allclose(similarity_sim(maps, maps), torch.ones(2))


def test_undefined_samples_are_nan_with_a_warning():
    saliency = torch.rand(2, 1, 4, 4)
    reference = torch.rand(2, 1, 4, 4)
    reference[1] = 0
    for function in (kl_divergence, similarity_sim, pearson_cc):
        with pytest.warns(UserWarning, match="1 of 2 samples skipped"):
            values = function(saliency, reference)
        assert torch.isfinite(values[0]) and torch.isnan(values[1])
    constant = saliency.clone()
    constant[0] = 0.3
    with pytest.warns(UserWarning, match="constant"):
        assert torch.isnan(pearson_cc(constant, saliency)[0])
    with pytest.warns(UserWarning, match="constant non-zero"):
        assert torch.isnan(similarity_sim(constant, saliency)[0])
    # an all-zero saliency map is no distribution but the MIT code keeps it: SIM 0
    assert similarity_sim(torch.zeros(1, 1, 4, 4), saliency[:1]).item() == 0.0
    fixations = saliency > 0.5
    fixations[1] = False
    with pytest.warns(UserWarning, match="no fixation"):
        assert torch.isnan(nss(saliency, fixations)[1])
    fixations[1, 0, 0, 0] = True
    with pytest.warns(UserWarning, match="constant"):
        assert torch.isnan(nss(constant, fixations)[0])


@pytest.mark.parametrize(
    "metric_class, function",
    [(SaliencyKLMetric, kl_divergence), (SaliencyCCMetric, pearson_cc), (SaliencySIMMetric, similarity_sim)],
)
def test_cumulative_two_iterations_equal_one_over_the_concatenation(metric_class, function):
    saliency, reference = torch.rand(5, 1, 6, 6), torch.rand(5, 1, 6, 6)
    split, whole = metric_class(), metric_class()
    split(y_pred=saliency[:3], y=reference[:3])
    split(y_pred=saliency[3:], y=reference[3:])
    whole(y_pred=saliency, y=reference)
    assert torch.allclose(split.aggregate(), whole.aggregate())
    assert torch.allclose(split.aggregate(), function(saliency, reference).mean())


def test_nss_cumulative_skips_samples_without_fixations():
    saliency = torch.rand(4, 1, 5, 5, 5)
    fixations = saliency > 0.9
    fixations[2] = False
    metric = NSSMetric(get_not_nans=True)
    with pytest.warns(UserWarning):
        metric(y_pred=saliency[:2], y=fixations[:2])
        metric(y_pred=saliency[2:], y=fixations[2:])
    mean, count = metric.aggregate()
    assert count.item() == 3
    assert torch.allclose(mean, nss(saliency[[0, 1, 3]], fixations[[0, 1, 3]]).mean())


def test_bad_inputs_raise_clear_errors():
    saliency = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(saliency - 0.5, saliency)
    with pytest.raises(ValueError, match="non-negative"):
        similarity_sim(saliency, saliency - 0.5)
    with pytest.raises(ValueError, match="reference must have shape"):
        pearson_cc(saliency, saliency[:, :, :3])
    with pytest.raises(ValueError, match="binary"):
        nss(saliency, saliency)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("function", [kl_divergence, pearson_cc, similarity_sim, nss])
def test_metrics_stay_on_the_gpu_and_match_the_cpu(function):
    saliency = torch.rand(2, 1, 5, 6, 7)
    reference = (torch.rand(2, 1, 5, 6, 7) > 0.8).float()
    on_gpu = function(saliency.cuda(), reference.cuda())
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), function(saliency, reference), atol=1e-5)
