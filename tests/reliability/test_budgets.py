"""Absurd sizes are refused before any work, with their estimate, the cap and how to raise it
(:mod:`monai_xai.budgets`); metric arguments that cannot mean anything (NaN noise, a blur of sigma <= 0, a temperature
no data can fit) are refused naming the argument, what it got and what to do."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from monai_xai import budgets
from monai_xai.budgets import BudgetExceeded
from monai_xai.cams.attributions import AttributionBudgetExceeded, AttributionSettings
from monai_xai.explanation import ExplainRequest, SlidingWindow
from monai_xai.metrics import (
    NoisyLinearImputer,
    ROADMetric,
    deletion_insertion,
    fit_temperature,
    noisy_linear_impute,
    road,
)
from monai_xai.metrics.calibration import TemperatureNotIdentifiable
from monai_xai.metrics.catalogue import METRICS
from tests.helpers.region_nets import RegionLinearClassifier
from tests.helpers.segmenters import intensity_segmenter


class CountingNetwork(nn.Module):
    """Counts its forward passes: a refusal "before any work" leaves the count at zero."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.network(images)


def _classifier(size: int = 4) -> CountingNetwork:
    return CountingNetwork(RegionLinearClassifier(torch.ones(1, size, size)))


# --- the budgets themselves


def test_a_cap_is_raised_by_its_environment_variable_and_a_bad_value_is_named(monkeypatch):
    assert budgets.CURVE_STEPS.cap() == budgets.CURVE_STEPS.default == 1000
    monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", "5000")
    assert budgets.CURVE_STEPS.cap() == 5000
    budgets.check_curve_steps(5000)
    monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", "inf")
    budgets.check_curve_steps(10**9)
    for bad in ("many", "0", "-3", "nan"):
        monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", bad)
        with pytest.raises(ValueError, match=rf"MONAI_XAI_MAX_CURVE_STEPS='{bad}' must be a number > 0"):
            budgets.check_curve_steps(10)


def test_the_attribution_budget_is_one_of_the_family():
    assert issubclass(AttributionBudgetExceeded, BudgetExceeded) and issubclass(BudgetExceeded, ValueError)


# --- deletion / insertion steps


def test_deletion_steps_above_the_voxels_of_an_image_are_refused_before_any_pass():
    model = _classifier(4)  # 16 voxels
    with pytest.raises(ValueError, match=r"steps=17 is more than the 16 voxels of an image.*use steps <= 16"):
        deletion_insertion(model, torch.ones(2, 1, 4, 4), torch.rand(2, 1, 4, 4), class_idx=1, steps=17)
    assert model.calls == 0
    curve = deletion_insertion(model, torch.ones(2, 1, 4, 4), torch.rand(2, 1, 4, 4), class_idx=1, steps=16)
    assert curve.scores.shape == (2, 17)


def test_deletion_steps_above_the_cap_are_refused_where_the_metric_is_built(monkeypatch):
    with pytest.raises(BudgetExceeded) as refused:
        METRICS["deletion"].create(_classifier(), config_id="xai_metric_args", steps=10**6)
    message = str(refused.value)
    assert message.startswith("xai_metric_args.deletion.steps asks for 1000000 deletion/insertion steps")
    assert "1000001 forward passes per image" in message and "above the cap of 1000" in message
    assert "MONAI_XAI_MAX_CURVE_STEPS=1000000" in message
    # a study names its own config key
    with pytest.raises(BudgetExceeded, match=r"^metric_args\.insertion\.steps asks for"):
        METRICS["insertion"].create(_classifier(), steps=5000)
    monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", "5000")
    METRICS["insertion"].create(_classifier(), steps=5000)


def test_a_deletion_call_above_the_voxel_pass_budget_is_refused_with_its_estimate(monkeypatch):
    monkeypatch.setenv("MONAI_XAI_MAX_METRIC_VOXEL_PASSES", "800")
    model = _classifier(4)
    with pytest.raises(BudgetExceeded) as refused:
        deletion_insertion(model, torch.ones(3, 1, 4, 4), torch.rand(3, 1, 4, 4), class_idx=1, steps=16)
    # 3 images x 17 passes x 16 voxels
    assert "asks for 816 voxel-passes" in str(refused.value)
    assert "17 forward passes x 3 image(s) x 16 voxels" in str(refused.value)
    assert "MONAI_XAI_MAX_METRIC_VOXEL_PASSES=816" in str(refused.value)
    assert model.calls == 0


# --- ROAD percentiles


def test_road_with_a_thousand_percentiles_is_refused_where_the_metric_is_built():
    percentiles = [k / 10 for k in range(1, 1001)]
    with pytest.raises(BudgetExceeded, match=r"^percentiles asks for 1000 ROAD percentiles .* cap of 100"):
        ROADMetric(nn.Identity(), percentiles=percentiles)
    with pytest.raises(BudgetExceeded, match=r"^xai_metric_args\.road_morf\.percentiles asks for 1000 ROAD"):
        METRICS["road_morf"].create(nn.Identity(), config_id="xai_metric_args", percentiles=percentiles)
    model = CountingNetwork(intensity_segmenter(2))
    with pytest.raises(BudgetExceeded, match="MONAI_XAI_MAX_PERCENTILES=1000"):
        road(model, torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), 1, percentiles)
    assert model.calls == 0


@pytest.mark.parametrize(
    ("percentiles", "message"),
    [
        ([10, 50, 50, 90], r"percentiles lists \[50\] more than once"),
        ([0, 50], r"percentiles are shares of pixels kept, each in \(0, 100\]"),
        ([50, 101], r"percentiles are shares of pixels kept, each in \(0, 100\]"),
        ([float("nan")], r"percentiles are shares of pixels kept"),
        ([], r"percentiles are shares of pixels kept"),
    ],
)
def test_road_percentiles_are_unique_and_in_range_and_the_config_id_is_named(percentiles, message):
    with pytest.raises(ValueError, match=message):
        ROADMetric(nn.Identity(), percentiles=percentiles)
    with pytest.raises(ValueError, match=rf"^xai_metric_args\.road_combined\.{message}"):
        METRICS["road_combined"].create(nn.Identity(), config_id="xai_metric_args", percentiles=percentiles)


def test_a_road_call_above_the_voxel_pass_budget_is_refused_before_any_pass(monkeypatch):
    monkeypatch.setenv("MONAI_XAI_MAX_METRIC_VOXEL_PASSES", "500")
    model = CountingNetwork(intensity_segmenter(2))
    metric = ROADMetric(model, percentiles=[25, 50, 75], order="combined")
    with pytest.raises(BudgetExceeded) as refused:
        metric(y_pred=torch.rand(2, 1, 8, 8), y=torch.rand(2, 1, 8, 8), class_idx=1)
    # 2 images x (1 + 2 orders x 3 percentiles) passes x 64 voxels
    assert "asks for 896 voxel-passes" in str(refused.value)
    assert "2 image(s) x (1 + 2 order(s) x 3 percentiles) forward passes x 64 voxels" in str(refused.value)
    assert model.calls == 0


# --- methods


def test_a_method_named_twice_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"methods \(xai_methods\) lists \['gradcam'\] more than once"):
        ExplainRequest(methods=["gradcam", "eigencam", "gradcam"])
    # ten thousand copies: named once, refused at once
    with pytest.raises(ValueError, match=r"lists \['gradcam'\] more than once; give each method once\.$"):
        ExplainRequest(methods=["gradcam"] * 10**4)


def test_more_methods_than_the_cap_are_refused(monkeypatch):
    methods = ["gradcam", "gradcampp", "layercam"]
    monkeypatch.setenv("MONAI_XAI_MAX_METHODS", "2")
    with pytest.raises(BudgetExceeded, match=r"^methods \(xai_methods\) asks for 3 methods .* cap of 2"):
        ExplainRequest(methods=methods)
    monkeypatch.setenv("MONAI_XAI_MAX_METHODS", "3")
    assert ExplainRequest(methods=methods).methods == tuple(methods)


# --- phantom data sets


@pytest.fixture
def no_phantom_work(monkeypatch):
    """Generating a phantom fails the test: a refused data set must be refused before its first case."""

    def generate(*args, **kwargs):
        raise AssertionError("a phantom case was generated")

    monkeypatch.setattr("monai_xai.data.phantom.generate_phantom", generate)


def test_a_phantom_data_set_of_ten_million_cases_is_refused_before_any_case(tmp_path, no_phantom_work):
    from monai_xai.data import ensure_phantom_dataset, write_phantom_dataset

    with pytest.raises(BudgetExceeded, match=r"^n_cases asks for 10000000 phantom cases .* cap of 10000:"):
        write_phantom_dataset(tmp_path / "out", n_cases=10**7)
    with pytest.raises(BudgetExceeded, match="MONAI_XAI_MAX_PHANTOM_CASES=10000000"):
        ensure_phantom_dataset(tmp_path / "out", n_cases=10**7)
    assert not (tmp_path / "out").exists()


def test_a_phantom_data_set_of_too_many_voxels_is_refused(tmp_path, no_phantom_work):
    from monai_xai.data import write_phantom_dataset

    with pytest.raises(BudgetExceeded, match=r"asks for 8e\+09 phantom voxels \(1 cases x 8000000000 voxels"):
        write_phantom_dataset(tmp_path / "out", n_cases=1, shape=(2000, 2000, 2000))
    assert not (tmp_path / "out").exists()


def test_a_study_with_an_absurd_phantom_or_repeated_methods_is_refused_naming_the_key(tmp_path, no_phantom_work):
    from monai_xai.study import study_from_dict

    study = {
        "name": "too-big",
        "methods": ["gradcam"],
        "metrics": ["heat_diff"],
        "data": {"phantom": {"n_cases": 10**7}},
        "bundles": [{"path": "missing"}],
    }
    with pytest.raises(BudgetExceeded, match=r"study <dict>: data\.phantom\.n_cases asks for 10000000 phantom cases"):
        study_from_dict(study, tmp_path)
    with pytest.raises(BudgetExceeded, match=r"data\.phantom\.n_cases asks for 1e\+10 phantom voxels"):
        study_from_dict({**study, "data": {"phantom": {"n_cases": 1000, "shape": [200, 200, 250]}}}, tmp_path)
    with pytest.raises(ValueError, match=r"'methods' lists \['gradcam'\] more than once"):
        study_from_dict({**study, "methods": ["gradcam", "gradcam"]}, tmp_path)


# --- sliding windows


def test_a_huge_window_is_refused_where_it_is_set():
    with pytest.raises(BudgetExceeded) as refused:
        SlidingWindow(roi_size=(10**5, 10**5, 10**5))
    message = str(refused.value)
    assert message.startswith("the window's roi_size asks for 1e+15 voxels per sliding window")
    assert "a window of 100000 x 100000 x 100000 voxels" in message and "MONAI_XAI_MAX_WINDOW_VOXELS" in message
    SlidingWindow(roi_size=(96, 96, -1))  # -1 takes the image's size: not counted


def test_a_window_of_one_size_per_dim_is_checked_again_on_a_volume(monkeypatch):
    monkeypatch.setenv("MONAI_XAI_MAX_WINDOW_VOXELS", "1000")
    window = SlidingWindow(roi_size=16)  # 16^2 = 256 voxels as a 2D window
    network = CountingNetwork(intensity_segmenter(3))
    with pytest.raises(BudgetExceeded, match=r"asks for 4096 voxels per sliding window \(a window of 16 x 16 x 16"):
        window.network(network)(torch.rand(1, 1, 8, 8, 8))
    assert network.calls == 0


# --- metric arguments: ROAD noise, blur sigma


@pytest.mark.parametrize("noise", [float("nan"), float("inf"), -0.01])
def test_road_imputer_noise_must_be_finite_and_non_negative(noise):
    with pytest.raises(ValueError, match=rf"noise .* must be a finite number >= 0, got {noise}"):
        NoisyLinearImputer(noise=noise)
    images, remove = torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    remove[..., 0, 0] = True
    with pytest.raises(ValueError, match=r"finite number >= 0"):
        noisy_linear_impute(images, remove, noise=noise)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_a_blur_sigma_must_be_finite_and_positive(sigma):
    with pytest.raises(ValueError, match=r"^xai_metric_args\.insertion\.blur_sigma must be a finite number > 0"):
        METRICS["insertion"].create(_classifier(), config_id="xai_metric_args", blur_sigma=sigma)
    model = _classifier(4)
    with pytest.raises(ValueError, match=rf"blur_sigma must be a finite number > 0 .*, got {sigma}"):
        deletion_insertion(model, torch.ones(1, 1, 4, 4), torch.rand(1, 1, 4, 4), 1, "insertion", 4, blur_sigma=sigma)
    assert model.calls == 0
    with pytest.raises(ValueError, match=rf"xai_attribution 'blur_sigma' must be a finite number > 0, got {sigma}"):
        AttributionSettings(blur_sigma=sigma)


# --- temperature scaling: data no temperature can fit


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        (torch.zeros(10, 3), torch.arange(10) % 3),  # every class equally likely, whatever T
        (torch.ones(10, 3) * torch.arange(10.0)[:, None], torch.arange(10) % 3),  # constant rows
        (torch.zeros(10), torch.arange(10) % 2),  # binary logits of 0
    ],
)
def test_logits_that_do_not_depend_on_the_temperature_are_refused(logits, labels):
    with pytest.raises(TemperatureNotIdentifiable, match=r"the NLL is the same for every temperature"):
        fit_temperature(logits, labels)


def test_logits_that_rank_every_label_first_have_no_finite_temperature():
    separable = torch.tensor([[5.0, -5.0], [-5.0, 5.0]] * 10)
    first = r"the logits rank every label first \(all 20 validation cases are predicted right\): the NLL keeps falling"
    with pytest.raises(TemperatureNotIdentifiable, match=first + " as T goes to 0"):
        fit_temperature(separable, torch.tensor([0, 1] * 10))
    with pytest.raises(TemperatureNotIdentifiable, match=r"rank every label first.*all 10 labels are class 0"):
        fit_temperature(torch.tensor([[3.0, 0.0, 0.0]] * 10), torch.zeros(10, dtype=torch.long))
    binary = torch.tensor([2.0, -1.0, 3.0, -4.0])
    with pytest.raises(TemperatureNotIdentifiable, match="rank every label first"):
        fit_temperature(binary, torch.tensor([1, 0, 1, 0]))


def test_logits_that_score_the_labels_below_average_want_an_infinite_temperature():
    with pytest.raises(TemperatureNotIdentifiable, match=r"below the mean of the classes' logits.*as T grows"):
        fit_temperature(torch.tensor([[5.0, -5.0]] * 10), torch.ones(10, dtype=torch.long))


def test_a_fit_that_never_leaves_its_initial_value_is_an_error():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([0, 1, 1])
    with pytest.raises(RuntimeError, match=r"stayed at its initial value 1.5 .* raise max_iter"):
        fit_temperature(logits, labels, max_iter=0)
    # the same data have a finite optimum, which the default fit reaches: dNLL/dT = 0 there
    fitted = fit_temperature(logits, labels)
    temperature = torch.tensor(fitted, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(logits.double() / temperature, labels)
    (gradient,) = torch.autograd.grad(loss, temperature)
    assert math.isfinite(fitted) and fitted > 0 and abs(float(gradient)) < 1e-4


def test_a_classifier_evaluation_whose_validation_cannot_calibrate_keeps_t_1_and_says_why(tmp_path):
    from monai_xai.apps.classification import evaluate_classifier

    # the network ranks every validation label first: no finite temperature
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        network[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
        network[1].bias.zero_()
    images = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    loader = [{"image": images, "label": torch.tensor([0, 1])}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_classifier(network, loader, loader, ["a", "b"], tmp_path / "out", tmp_path)
    assert report["temperature"] == 1.0 and "rank every label first" in report["temperature_note"]
    assert any("left at 1 (uncalibrated)" in str(warning.message) for warning in caught)
