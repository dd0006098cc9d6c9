"""Tests of the controls (monai_xai.cams.controls) and of the further randomisation checks (monai_xai.sanity.trust):
hand-computed statistics on tiny inputs, the controls failing every check on networks built so the answer is known
(2D and 3D, classifier and segmenter) and on the demo classifier, EigenCAM's top-down failure there, and parity with
Quantus 0.6 in 2D where it is installed."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from monai_xai.cams import CONTROL_METHODS, get_method
from monai_xai.enums import MethodFamily, SanityCheck
from monai_xai.explanation import ExplainRequest, ExplainStep, ExplainTarget
from monai_xai.sanity import (
    MAX_RANDOMISATION_SPEARMAN,
    CheckVerdict,
    MethodSanity,
    bootstrap_ci,
    bundle_sanity_checks,
    complexity_rise,
    discrete_entropy,
    model_randomisation_check,
    non_discriminating,
    random_other_class,
    sanity_markdown,
    smoothed_maps,
    spearman_correlation,
    trust_markdown,
)
from monai_xai.sanity.trust import batch_trust_statistics, check_verdict, random_logit_not_applicable, rank_agreement
from tests.test_sanity import _delta_classifier, _delta_segmenter

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- controls


@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (2, 1, 6, 8, 10)])
@pytest.mark.parametrize("control", CONTROL_METHODS)
def test_controls_are_maps_like_every_method_and_ignore_the_content(control, shape):
    record = get_method(control)
    assert record.family == MethodFamily.CONTROL and not record.needs_layer
    images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    maps = record.function(images)
    assert maps.shape == (shape[0], 1, *shape[2:]) and maps.dtype == torch.float32
    assert maps.flatten(1).amin(dim=1).eq(0).all() and maps.flatten(1).amax(dim=1).eq(1).all()
    if control != "control_sobel":  # the Gaussian and the noise depend on the shape alone
        torch.testing.assert_close(record.function(torch.randn(shape)), maps)


def test_centre_gaussian_peaks_at_the_centre():
    maps = get_method("control_centre_gaussian").function(torch.zeros(1, 1, 5, 7, 9))
    assert maps[0, 0, 2, 3, 4] == 1 and maps[0, 0].flatten().argmax() == 2 * 63 + 3 * 9 + 4
    torch.testing.assert_close(maps, maps.flip(2).flip(3).flip(4))  # symmetric about the centre


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sobel_control_marks_a_step_edge(spatial_dims):
    # a step along the last axis: the Sobel derivative there is (1 + 2 + 1)^(d-1) on the two columns beside the step
    # and 0 elsewhere (replicate padding: no edge at the border), so the normalised magnitude is 1 there, 0 elsewhere
    images = torch.zeros((1, 1, *(6,) * spatial_dims))
    images[..., 3:] = 1.0
    maps = get_method("control_sobel").function(images)
    expected = torch.zeros_like(maps)
    expected[..., 2:4] = 1.0
    torch.testing.assert_close(maps, expected)


def test_controls_through_the_explanation_step_next_to_a_cam():
    model = _delta_classifier(2)
    images = torch.randn(2, 1, 16, 16)
    explanation = ExplainStep(ExplainRequest(("gradcam", *CONTROL_METHODS), "0", class_idx=1))(model, images)
    assert explanation.layers == {"gradcam": "0", **{control: None for control in CONTROL_METHODS}}
    assert explanation.attributions == {}
    torch.testing.assert_close(explanation.maps["control_sobel"], get_method("control_sobel").function(images))


# ---------------------------------------------------------------- the formulas, by hand


def test_discrete_entropy_and_complexity_rise_by_hand():
    maps = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]).reshape(3, 1, 2, 2)
    quarter = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(discrete_entropy(maps, n_bins=2), torch.tensor([math.log(2), quarter, 0.0]).double())
    # four bins: the values 0 and 1 still fill only the outer two
    torch.testing.assert_close(discrete_entropy(maps[:1], n_bins=4), torch.tensor([math.log(2)]).double())
    # against numpy + scipy (Quantus' discrete_entropy) on a random map
    values = torch.rand(1, 1, 9, 7, generator=torch.Generator().manual_seed(0))
    expected = stats.entropy(np.histogram(values.numpy(), bins=5)[0])
    assert discrete_entropy(values, 5).item() == pytest.approx(expected, abs=1e-9)
    # eMPRT: (H(randomised) - H(trained)) / H(trained); a constant trained map is undefined
    rise = complexity_rise(maps[[1, 2]], maps[[0, 0]], n_bins=2)
    assert rise[0].item() == pytest.approx((math.log(2) - quarter) / quarter) and rise[1].isnan()


def test_smoothed_maps_by_hand():
    # explain = the image itself: the mean of n - 1 noisy copies and the clean image is image + scale * sum(noise) / n,
    # scale = noise_magnitude * (max - min) per case
    images = torch.tensor([[[[0.0, 2.0]]], [[[1.0, 1.5]]]])
    noise = torch.tensor([[[[[1.0, -1.0]]], [[[2.0, 0.0]]]], [[[[3.0, 1.0]]], [[[-2.0, 4.0]]]]])  # (2, B, C, 1, 2)
    smooth = smoothed_maps(lambda x: {"identity": x}, images, n_samples=3, noise_magnitude=0.5, noise=noise)
    scale = torch.tensor([1.0, 0.25]).reshape(2, 1, 1, 1)
    torch.testing.assert_close(smooth["identity"], images + scale * (noise[0] + noise[1]) / 3)
    assert smoothed_maps(lambda x: {"identity": x}, images, n_samples=1)["identity"].equal(images)
    # the clean sample's maps, when known, are taken as they are: explain runs on the noisy copies only
    seen = []
    known = {"identity": images * 10}
    reused = smoothed_maps(lambda x: seen.append(x) or {"identity": x}, images, 3, 0.5, noise=noise, clean=known)
    assert len(seen) == 2 and not any(torch.equal(x, images) for x in seen)
    torch.testing.assert_close(reused["identity"], (images * 10 + 2 * images + scale * (noise[0] + noise[1])) / 3)
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        smoothed_maps(lambda x: {"identity": x}, images, n_samples=0)


def test_rank_agreement_bootstrap_and_other_class():
    maps = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    other = torch.stack([1 - maps[0], torch.zeros_like(maps[1]), maps[2]])
    reference = maps.clone()
    reference[2] = 0.5
    # inverted: |rho| = 1; the map gone: 0; a constant reference: undefined
    agreement = rank_agreement(reference, other)
    assert agreement[0].item() == pytest.approx(1.0) and agreement[1] == 0 and agreement[2].isnan()
    assert bootstrap_ci(torch.tensor([0.3, 0.3, float("nan")])) == pytest.approx((0.3, 0.3))
    low, high = bootstrap_ci(torch.arange(20.0))
    assert low < 9.5 < high and high - low < 8
    assert all(math.isnan(bound) for bound in bootstrap_ci(torch.tensor([float("nan")])))
    classes = torch.tensor([0, 1, 2, 2] * 50)
    others = random_other_class(classes, 3, torch.Generator().manual_seed(0))
    assert (others != classes).all() and set(others.tolist()) == {0, 1, 2}
    verdict = check_verdict(SanityCheck.EMPRT, torch.tensor([0.2, float("nan"), 0.4]))
    assert verdict.statistic == pytest.approx(0.3) and verdict.undefined == 1 and verdict.passed
    assert not check_verdict(SanityCheck.TOP_DOWN, torch.tensor([0.6, 0.7])).passed


# ---------------------------------------------------------------- networks built so the answer is known


def _statistics(model, images, methods, checks=tuple(SanityCheck), **request):
    step = ExplainStep(ExplainRequest(methods, "0", **request))
    result = model_randomisation_check(model, images, step, seed=0)
    generator = torch.Generator().manual_seed(0)
    # the re-initialised network stands in for a permuted-label one: a control's maps are the same for any network
    statistics = batch_trust_statistics(
        model, images, step, result.trained, result.randomised_maps, result.randomised_network, checks,
        n_samples=3, generator=generator, permuted_network=result.randomised_network,
    )  # fmt: skip
    return {
        check: {method: check_verdict(check, values) for method, values in by.items()}
        for check, by in statistics.items()
    }


@pytest.mark.parametrize("spatial", [(24, 24), (10, 10, 10)])
def test_controls_fail_every_check_on_a_known_classifier(spatial):
    """A check that passed a blank or model-independent map would fail this test; gradcam, whose trained map is
    ReLU(image) (the known answer), passes the top-down, bottom-up and sMPRT checks."""
    model = _delta_classifier(len(spatial))
    images = torch.randn(4, 1, *spatial, generator=torch.Generator().manual_seed(0))
    verdicts = _statistics(model, images, ("gradcam", *CONTROL_METHODS), class_idx=1)
    for check, by_method in verdicts.items():
        for control in CONTROL_METHODS:
            assert not by_method[control].passed, (check, control, by_method[control])
    for check in (SanityCheck.TOP_DOWN, SanityCheck.BOTTOM_UP, SanityCheck.SMPRT):
        assert verdicts[check]["gradcam"].passed, (check, verdicts[check]["gradcam"])
    assert non_discriminating({method: {c: v[method] for c, v in verdicts.items()} for method in CONTROL_METHODS}) == {}


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_controls_fail_every_check_on_a_known_segmenter(spatial):
    """The segmenter's random-logit map is the other class's over the trained pixel set (checked against a direct
    explanation)."""
    model = _delta_segmenter(len(spatial))
    images = torch.rand(2, 1, *spatial, generator=torch.Generator().manual_seed(0))
    verdicts = _statistics(model, images, ("gradcam", *CONTROL_METHODS), class_idx=1, pixel_set="pred")
    for check, by_method in verdicts.items():
        for control in CONTROL_METHODS:
            assert not by_method[control].passed, (check, control)
    step = ExplainStep(ExplainRequest("gradcam", "0", class_idx=1, pixel_set="pred"))
    trained = step(model, images)
    other = step(model, images, target=ExplainTarget(torch.zeros(2, dtype=torch.long), trained.pixel_set))
    expected = rank_agreement(trained.maps["gradcam"], other.maps["gradcam"])
    statistics = batch_trust_statistics(
        model, images, step, trained, trained.maps, model, [SanityCheck.RANDOM_LOGIT]
    )  # two classes: the other class is always 0
    torch.testing.assert_close(statistics[SanityCheck.RANDOM_LOGIT]["gradcam"], expected)


def test_random_logit_is_left_out_where_it_cannot_tell_anything():
    """Two classes scored by probability: the other class's probability is one minus the explained one's, so the check
    is left out with a warning (the other checks stay); scored by logit it runs; a class set has no other class."""
    model = _delta_segmenter(2)
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    checks = [SanityCheck.RANDOM_LOGIT, SanityCheck.EMPRT]
    for score, applies in (("probability", False), ("logit", True)):
        step = ExplainStep(ExplainRequest("gradcam", "0", class_idx=1, pixel_set="image", score=score))
        trained = step(model, images)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            statistics = batch_trust_statistics(model, images, step, trained, trained.maps, model, checks)
        assert (SanityCheck.RANDOM_LOGIT in statistics) is applies and SanityCheck.EMPRT in statistics
        left_out = [str(item.message) for item in caught if "random-logit check is left out" in str(item.message)]
        assert bool(left_out) is not applies
    assert "two classes and the probability score" in left_out_message(2, torch.ones(2, dtype=torch.long))
    assert "a class set" in left_out_message(3, torch.ones(2, 2, dtype=torch.long))
    assert "a class set, or a single output" in left_out_message(1, torch.zeros(2, dtype=torch.long))
    assert random_logit_not_applicable(3, torch.ones(2, dtype=torch.long), "probability") is None


def left_out_message(num_classes: int, class_idx: torch.Tensor) -> str:
    return random_logit_not_applicable(num_classes, class_idx, "probability") or ""


def test_a_check_a_control_passes_is_marked_not_discriminating():
    def row(method, passed):
        verdict = CheckVerdict(SanityCheck.SMPRT, 0.2 if passed else 0.9, 0.1, 0.3, 0, passed)
        return MethodSanity(method, *[math.nan] * 4, 0.1, 0, False, checks={SanityCheck.SMPRT: verdict})

    summary = [row("control_random", True), row("gradcam", True), row("control_sobel", False)]
    assert non_discriminating({item.method: item.checks for item in summary}) == {SanityCheck.SMPRT: ["control_random"]}
    table = trust_markdown(summary)
    assert "**not discriminating for this bundle** (passed by control_random)" in table
    lines = table.splitlines()
    assert lines[2].startswith("| gradcam | 0.200 [0.100, 0.300] pass (not discriminating)")
    assert lines[3].startswith("| control_random (control: must fail) |")  # controls after the methods
    assert sanity_markdown(summary).endswith(table)


# ---------------------------------------------------------------- the demo classifier


@pytest.mark.skipif(
    not (REPO / "bundles/lesion_classification_3d/models/model.pt").is_file(), reason="demo weights not trained"
)
def test_demo_classifier_eigencam_fails_top_down_and_the_controls_fail_everything():
    rows = bundle_sanity_checks(
        REPO / "bundles/lesion_classification_3d",
        n_cases=3,
        methods=["gradcam", "eigencam"],
        checks="all",
        n_draws=2,
        n_noise=2,
        progress=False,
    )
    assert [row.method for row in rows] == ["gradcam", "eigencam", *CONTROL_METHODS]
    by_method = {row.method: row for row in rows}
    eigencam = by_method["eigencam"].checks
    # EigenCAM reads the activations, not the weights above them: its top-down failure on the demo classifier
    assert not eigencam[SanityCheck.TOP_DOWN].passed
    assert eigencam[SanityCheck.TOP_DOWN].statistic > MAX_RANDOMISATION_SPEARMAN
    assert eigencam[SanityCheck.TOP_DOWN].statistic == pytest.approx(abs(by_method["eigencam"].spearman), abs=1e-4)
    assert by_method["gradcam"].checks[SanityCheck.TOP_DOWN].passed
    for control in CONTROL_METHODS:
        assert by_method[control].is_control
        for check, verdict in by_method[control].checks.items():
            assert not verdict.passed, (control, check, verdict)
    assert non_discriminating({row.method: row.checks for row in rows}) == {}
    table = sanity_markdown(rows)
    assert "| control_sobel (control: must fail) |" in table and "not discriminating" not in table
    # "all" without permuted-label weights: every check but the data randomisation
    assert all(set(row.checks) == set(SanityCheck) - {SanityCheck.DATA} for row in rows)


@pytest.mark.skipif(
    not (REPO / "bundles/lesion_segmentation_3d/models/model.pt").is_file(), reason="demo weights not trained"
)
def test_demo_segmenter_leaves_the_random_logit_check_out():
    """The demo segmenter explains the lesion's expected volume (two classes, probability score): no random-logit
    verdict, column or failure, the other checks as asked."""
    with pytest.warns(UserWarning, match="random-logit check is left out: with two classes"):
        rows = bundle_sanity_checks(
            REPO / "bundles/lesion_segmentation_3d",
            n_cases=1,
            methods=["gradcam"],
            checks=["random_logit", "emprt"],
            controls=False,
            n_draws=1,
            progress=False,
        )
    assert list(rows[0].checks) == [SanityCheck.EMPRT]
    assert "random logit" not in trust_markdown(rows)


def test_checks_argument_is_checked(tmp_path):
    from tests.test_sanity import _untrained_bundle

    bundle = _untrained_bundle(tmp_path)
    with pytest.raises(ValueError, match="checks must be one of"):
        bundle_sanity_checks(bundle, n_cases=1, methods=["gradcam"], checks=["top-down"], progress=False)
    rows = bundle_sanity_checks(
        bundle, n_cases=1, methods=["gradcam"], checks="emprt", controls=False, n_draws=1, progress=False
    )
    assert [row.method for row in rows] == ["gradcam"] and list(rows[0].checks) == [SanityCheck.EMPRT]


# ---------------------------------------------------------------- parity with Quantus 0.6 (2D)


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(images)))


def _quantus_randomised(model: nn.Module, seed: int) -> nn.Module:
    """The fully randomised model of Quantus' layer generator: each module with reset_parameters, re-initialised
    after ``torch.manual_seed(seed + 1)``."""
    randomised = copy.deepcopy(model)
    for _, module in randomised.named_modules():
        if hasattr(module, "reset_parameters"):
            torch.manual_seed(seed + 1)
            module.reset_parameters()
    return randomised


@pytest.fixture
def parity_case():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = _TinyNet().eval()
    images = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    labels = model(images).argmax(dim=1)
    step = ExplainStep(ExplainRequest("gradcam", "conv"))

    def explain_func(model, inputs, targets, **kwargs):
        batch = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        target = ExplainTarget(torch.as_tensor(np.asarray(targets)).long(), None)
        return step(model, batch, target=target).maps["gradcam"].detach().numpy()

    return quantus, model, images, labels, step, explain_func


def test_random_logit_matches_quantus(parity_case):
    quantus, model, images, labels, step, explain_func = parity_case
    metric = quantus.RandomLogit(
        num_classes=3, seed=42, similarity_func=quantus.similarity_func.correlation_spearman, disable_warnings=True
    )
    theirs = metric(
        model, images.numpy(), labels.numpy(), a_batch=None, explain_func=explain_func, device="cpu", channel_first=True
    )
    # Quantus' random class: the seed-42 draw among the classes other than the label
    np.random.seed(42)  # noqa: NPY002 (Quantus draws from the global numpy state)
    offsets = np.random.randint(0, 2, images.shape[0])  # noqa: NPY002 (Quantus draws from the global numpy state)
    other = torch.tensor([[c for c in range(3) if c != label][offset] for label, offset in zip(labels, offsets)])
    trained = step(model, images, target=ExplainTarget(labels, None)).maps["gradcam"]
    mine = spearman_correlation(trained, step(model, images, target=ExplainTarget(other, None)).maps["gradcam"])
    np.testing.assert_allclose(mine.numpy(), np.asarray(theirs, dtype=np.float64), atol=1e-3)


def test_emprt_matches_quantus(parity_case):
    quantus, model, images, labels, step, explain_func = parity_case
    metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 10}, seed=42, disable_warnings=True)
    theirs = metric(
        model, images.numpy(), labels.numpy(), a_batch=None, explain_func=explain_func, device="cpu", channel_first=True
    )
    target = ExplainTarget(labels, None)
    trained = step(model, images, target=target).maps["gradcam"]
    randomised = step(_quantus_randomised(model, 42), images, target=target).maps["gradcam"]
    mine = complexity_rise(trained, randomised, n_bins=10)
    np.testing.assert_allclose(mine.numpy(), np.asarray(theirs, dtype=np.float64), atol=1e-3)


def test_smprt_matches_quantus(parity_case):
    """Quantus' sMPRT explains with its own ``quantus.explain`` (here Captum's Saliency: |gradient| of the label's
    logit), so the parity is of the smoothing and the statistic on that explanation: the same noise draws (numpy's,
    seeded), the same fully randomised model."""
    quantus, model, images, labels, _, _ = parity_case
    n_samples = 4

    def saliency(network):
        def explain(noisy):
            noisy = noisy.clone().requires_grad_(True)
            logits = network(noisy)
            (gradient,) = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), noisy)
            return {"saliency": gradient.abs()}

        return explain

    np.random.seed(7)  # noqa: NPY002 (Quantus draws from the global numpy state)
    draws = torch.tensor(np.random.randn(2 * (n_samples - 1), *images.shape))  # noqa: NPY002 (Quantus draws from the global numpy state)
    trained = smoothed_maps(saliency(model), images, n_samples, 0.1, noise=draws[: n_samples - 1])["saliency"]
    np.random.seed(7)  # noqa: NPY002 (Quantus draws from the global numpy state)
    metric = quantus.SmoothMPRT(
        layer_order="bottom_up", seed=42, nr_samples=n_samples, noise_magnitude=0.1, skip_layers=True,
        return_last_correlation=True, disable_warnings=True,
    )  # fmt: skip
    theirs = metric(
        model, images.numpy(), labels.numpy(), a_batch=trained.numpy(), explain_func=quantus.explain,
        explain_func_kwargs={"method": "Saliency"}, device="cpu", channel_first=True,
    )  # fmt: skip
    # with a_batch given, Quantus draws the trained model's noise once more (compared with a_batch), then the
    # randomised model's
    randomised_model = _quantus_randomised(model, 42)
    randomised = smoothed_maps(saliency(randomised_model), images, n_samples, 0.1, noise=draws[n_samples - 1 :])
    mine = spearman_correlation(trained, randomised["saliency"])
    np.testing.assert_allclose(mine.numpy(), np.asarray(theirs, dtype=np.float64), atol=1e-3)
