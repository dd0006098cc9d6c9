import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from monai_xai.metrics import (
    ExpectedCalibrationErrorMetric,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram_data,
)

# five predictions with confidence 0.6 (right), 0.7 (wrong), 0.9 (right), 0.8 (right), 0.75 (wrong)
HAND_PROBS = torch.tensor([[0.4, 0.6], [0.7, 0.3], [0.1, 0.9], [0.8, 0.2], [0.25, 0.75]])
HAND_LABELS = torch.tensor([1, 1, 1, 0, 0])
# the same as binary probabilities of class 1: max(p, 1 - p) gives the same confidences and predictions
HAND_BINARY = torch.tensor([0.6, 0.3, 0.9, 0.2, 0.75])
# 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]:
#   (.5, .75]: 0.6 right, 0.7 wrong, 0.75 wrong (upper edge included) -> conf 2.05/3, acc 1/3, gap 0.35, weight 3/5
#   (.75, 1]: 0.9 right, 0.8 right -> conf 0.85, acc 1, gap 0.15, weight 2/5
#   ECE = 0.6 * 0.35 + 0.4 * 0.15 = 0.27
HAND_ECE = 0.27


def ece_reference(confidences: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Loop over bins as in gpleiss/temperature_scaling _ECELoss (lower < conf <= upper)."""
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidences > lower) & (confidences <= upper)
        if in_bin.any():
            ece += in_bin.mean() * abs(confidences[in_bin].mean() - correct[in_bin].mean())
    return ece


def test_ece_hand_count_multiclass_and_binary():
    assert torch.isclose(expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=4), torch.tensor(HAND_ECE))
    assert torch.isclose(expected_calibration_error(HAND_BINARY, HAND_LABELS, n_bins=4), torch.tensor(HAND_ECE))
    assert torch.isclose(
        expected_calibration_error(HAND_BINARY[:, None], HAND_LABELS, n_bins=4), torch.tensor(HAND_ECE)
    )
    one_hot = F.one_hot(HAND_LABELS, 2)
    assert torch.isclose(expected_calibration_error(HAND_PROBS, one_hot, n_bins=4), torch.tensor(HAND_ECE))


def test_reliability_diagram_hand_count():
    bins = reliability_diagram_data(HAND_PROBS, HAND_LABELS, n_bins=4)
    assert torch.allclose(bins.bin_lower, torch.tensor([0.0, 0.25, 0.5, 0.75]))
    assert torch.allclose(bins.bin_upper, torch.tensor([0.25, 0.5, 0.75, 1.0]))
    assert bins.count.tolist() == [0, 0, 3, 2]
    assert torch.isnan(bins.confidence[:2]).all() and torch.isnan(bins.accuracy[:2]).all()
    assert torch.allclose(bins.confidence[2:], torch.tensor([2.05 / 3, 0.85]))
    assert torch.allclose(bins.accuracy[2:], torch.tensor([1 / 3, 1.0]))


@pytest.mark.parametrize("classes", [2, 5])
def test_ece_matches_the_reference_loop_and_logits_path(classes):
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(300, classes, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (300,), generator=generator)
    probs = logits.softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    expected = ece_reference(confidence.numpy(), (predicted == labels).numpy().astype(float), 15)
    assert np.isclose(expected_calibration_error(probs, labels).item(), expected)
    assert np.isclose(expected_calibration_error(logits, labels, from_logits=True).item(), expected)
    bins = reliability_diagram_data(probs, labels)
    assert bins.count.sum() == 300 and bins.count.shape == (15,)


def test_binary_logits_use_the_sigmoid():
    logits = torch.tensor([0.4, -0.8, 2.2, -1.4, 1.1])
    assert torch.isclose(
        expected_calibration_error(logits, HAND_LABELS, n_bins=4, from_logits=True),
        expected_calibration_error(logits.sigmoid(), HAND_LABELS, n_bins=4),
    )


def _overconfident(classes: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(400, classes, generator=generator, dtype=torch.float64) * 2
    labels = torch.multinomial(true_logits.softmax(dim=1), 1, generator=generator)[:, 0]
    return scale * true_logits, labels


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_fit_temperature_reaches_the_nll_optimum_multiclass(scale):
    logits, labels = _overconfident(4, scale)
    fitted = fit_temperature(logits, labels)
    optimum = minimize_scalar(
        lambda t: F.cross_entropy(logits / t, labels).item(),
        bounds=(0.01, 50),
        method="bounded",
        options={"xatol": 1e-10},
    ).x
    assert fitted == pytest.approx(optimum, rel=1e-4)
    assert F.cross_entropy(logits / fitted, labels) <= F.cross_entropy(logits, labels)


def test_fit_temperature_binary_matches_the_optimum():
    logits, labels = _overconfident(2, 3.0, seed=1)
    # binary logit of class 1 from the two-class logits: z1 - z0
    binary_logits = logits[:, 1] - logits[:, 0]
    fitted = fit_temperature(binary_logits, labels)
    optimum = minimize_scalar(
        lambda t: F.binary_cross_entropy_with_logits(binary_logits / t, labels.double()).item(),
        bounds=(0.01, 50),
        method="bounded",
        options={"xatol": 1e-10},
    ).x
    assert fitted == pytest.approx(optimum, rel=1e-4)
    # the same problem as two-class softmax has the same temperature
    assert fit_temperature(logits, labels) == pytest.approx(fitted, rel=1e-4)


def test_fit_temperature_reference_settings_move_from_the_start_but_stop_early():
    logits, labels = _overconfident(4, 3.0)
    reference = fit_temperature(logits, labels, lr=0.01, max_iter=50, line_search=False)
    converged = fit_temperature(logits, labels)
    assert 1.5 < reference < converged  # gpleiss issues #28 / #34: the reference settings stop short


def test_fit_temperature_divergence_raises():
    # one mistake among 20 confident right cases: the optimum is T = 3.34, but a huge step without line search
    # overshoots below 0 (perfectly separable data have no finite optimum at all: tests/reliability/test_budgets.py)
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]] * 10 + [[5.0, -5.0]])
    labels = torch.tensor([0, 1] * 10 + [1])
    assert fit_temperature(logits, labels) == pytest.approx(3.338, abs=1e-3)
    with pytest.raises(RuntimeError, match="diverged"):
        fit_temperature(logits, labels, lr=100.0, line_search=False)


def test_cumulative_ece_equals_one_pass_over_the_dataset():
    logits, labels = _overconfident(3, 2.0)
    metric = ExpectedCalibrationErrorMetric(from_logits=True)
    for start in range(0, 400, 150):
        metric(y_pred=logits[start : start + 150], y=labels[start : start + 150])
    expected = expected_calibration_error(logits, labels, from_logits=True)
    assert torch.isclose(metric.aggregate(), expected)
    assert metric.reliability().count.sum() == 400
    # not the mean of per-batch values
    per_batch = torch.stack(
        [
            expected_calibration_error(logits[s : s + 150], labels[s : s + 150], from_logits=True)
            for s in range(0, 400, 150)
        ]
    )
    assert not torch.isclose(per_batch.mean(), expected)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="sum to 1.*from_logits"):
        expected_calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"binary probabilities.*\[0, 1\]"):
        expected_calibration_error(torch.tensor([1.5]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        expected_calibration_error(HAND_PROBS, HAND_LABELS + 1)
    with pytest.raises(ValueError, match="one class index per sample"):
        expected_calibration_error(HAND_PROBS, HAND_LABELS[:3])
    with pytest.raises(ValueError, match="one-hot"):
        expected_calibration_error(HAND_PROBS, torch.ones(5, 2))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=0)
    with pytest.raises(TypeError, match="floating"):
        expected_calibration_error(HAND_LABELS, HAND_LABELS)
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="init_temperature"):
        fit_temperature(HAND_PROBS, HAND_LABELS, init_temperature=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_stays_on_the_gpu_and_matches_the_cpu():
    logits, labels = _overconfident(3, 2.0)
    ece = expected_calibration_error(logits.cuda(), labels.cuda(), from_logits=True)
    assert ece.is_cuda
    assert torch.isclose(ece.cpu(), expected_calibration_error(logits, labels, from_logits=True))
    assert fit_temperature(logits.cuda(), labels.cuda()) == pytest.approx(fit_temperature(logits, labels), rel=1e-6)
