"""Tests of monai_xai.sanity: random-map baselines against closed forms, Spearman against scipy, and the model
randomisation test on networks built so the answer is known (parameter-free: nothing can change; a hand-set
"trained" network on white noise: a random re-initialisation decorrelates its maps)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from scipy import stats
from torch import nn

from monai_xai.cams import CAMExplainer
from monai_xai.data import write_phantom_dataset
from monai_xai.explanation import ExplainRequest
from monai_xai.metrics import ehr_auc
from monai_xai.sanity import (
    MAX_RANDOMISATION_SPEARMAN,
    bundle_sanity_checks,
    cascading_randomisation,
    model_randomisation_check,
    random_map_baseline,
    random_saliency_maps,
    randomize_weights,
    sanity_markdown,
    spearman_correlation,
)
from monai_xai.sanity.bundle import _method_subset
from monai_xai.sanity.cases import case_batches

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
REPO = Path(__file__).resolve().parent.parent


def _delta_classifier(spatial_dims: int) -> nn.Sequential:
    """'Trained' classifier whose class-1 logit is the mean of ReLU(image): layer "0" copies the image into channel 0
    (centred delta kernel), so its CAM for class 1 is ReLU(image). A re-initialised 9^d kernel is nearly orthogonal
    to the delta, so on white noise the randomised CAM is almost uncorrelated with the trained one."""
    net = nn.Sequential(
        CONV[spatial_dims](1, 4, 9, padding=4), nn.ReLU(), POOL[spatial_dims](1), nn.Flatten(), nn.Linear(4, 2)
    )
    with torch.no_grad():
        for param in net.parameters():
            param.zero_()
        net[0].weight[(0, 0) + (4,) * spatial_dims] = 1.0
        net[4].weight[1, 0] = 1.0
    return net


class FixedFeatures(nn.Module):
    """Convolution with a fixed kernel held in a buffer: no parameters, nothing to re-initialise."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        kernel = torch.randn((3, 1) + (3,) * spatial_dims, generator=torch.Generator().manual_seed(7))
        self.register_buffer("kernel", kernel)
        self.conv = F.conv2d if spatial_dims == 2 else F.conv3d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images, self.kernel, padding=1)


class FixedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0]]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(2).mean(dim=2) @ self.weight.T


def _parameter_free_classifier(spatial_dims: int) -> nn.Sequential:
    return nn.Sequential(FixedFeatures(spatial_dims), nn.ReLU(), FixedHead())


def _delta_segmenter(spatial_dims: int) -> nn.Sequential:
    """'Trained' 2-class segmenter: class 1 wherever the image exceeds 0.5 (logit image - 0.5 against 0)."""
    net = nn.Sequential(CONV[spatial_dims](1, 4, 3, padding=1), nn.ReLU(), CONV[spatial_dims](4, 2, 1))
    with torch.no_grad():
        for param in net.parameters():
            param.zero_()
        net[0].weight[(0, 0) + (1,) * spatial_dims] = 1.0
        net[2].weight[1, 0] = 1.0
        net[2].bias[1] = -0.5
    return net


# ---------------------------------------------------------------- random maps and baselines


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 1, 8, 8, 8)])
def test_uniform_baseline_equals_mask_fraction(shape):
    # Every voxel of an i.i.d. map is equally likely to be above any threshold, and min-max normalisation keeps the
    # peak at 1, so each ratio of the EHR curve has expectation |mask| / N exactly: EHR-AUC's expectation too.
    masks = torch.zeros(shape, dtype=torch.bool)
    masks[0, 0, : shape[2] // 8] = True  # 1/8 of the image
    masks[1, 0, : shape[2] // 2] = True  # 1/2 of the image
    generator = torch.Generator().manual_seed(0)
    baseline = random_map_baseline(ehr_auc, masks, n_draws=200, generator=generator)
    assert baseline.shape == (2,)
    # per-draw standard deviation is below 0.04 (the 1.0 threshold keeps one voxel), so 200 draws: ~0.003
    torch.testing.assert_close(baseline, torch.tensor([1 / 8, 1 / 2]), atol=0.012, rtol=0)


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_smooth_baseline_of_half_mask_is_one_half(spatial):
    # The upsampled field is mirror-symmetric in distribution, and with a half-image mask the ratios inside and
    # outside add up to 1 at every threshold: the expectation is exactly 1/2 whatever the smoothness.
    masks = torch.zeros((1, 1, *spatial), dtype=torch.bool)
    masks[..., : spatial[-1] // 2] = True
    generator = torch.Generator().manual_seed(1)
    baseline = random_map_baseline(ehr_auc, masks, n_draws=300, kind="smooth", grid_size=2, generator=generator)
    torch.testing.assert_close(baseline, torch.tensor([0.5]), atol=0.03, rtol=0)


@pytest.mark.parametrize("shape, grid", [((2, 1, 12, 10), (1, 5)), ((2, 1, 6, 8, 10), (1, 4, 1))])
def test_smooth_maps_vary_only_along_refined_axes(shape, grid):
    maps = random_saliency_maps(shape, kind="smooth", grid_size=grid, generator=torch.Generator().manual_seed(0))
    assert maps.shape == shape and maps.dtype == torch.float32
    for axis, size in enumerate(grid, start=2):
        spread = maps.amax(dim=axis) - maps.amin(dim=axis)
        if size == 1:
            assert spread.max() < 1e-6  # one grid cell along this axis: constant up to float rounding
        else:
            assert spread.min() > 1e-3
    flat = maps.flatten(1)
    torch.testing.assert_close(flat.amin(dim=1), torch.zeros(2))
    torch.testing.assert_close(flat.amax(dim=1), torch.ones(2))


def test_smooth_maps_on_full_grid_are_the_uniform_maps():
    uniform = random_saliency_maps((3, 1, 5, 7), generator=torch.Generator().manual_seed(3))
    smooth = random_saliency_maps((3, 1, 5, 7), "smooth", (5, 7), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(smooth, uniform)
    assert (uniform.flatten(1).amax(dim=1) == 1).all() and (uniform.flatten(1).amin(dim=1) == 0).all()


def test_baseline_bad_inputs():
    masks = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="metric_fn must be callable"):
        random_map_baseline("ehr_auc", masks)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, 1, H, W\)"):
        random_map_baseline(ehr_auc, masks[:, 0])
    with pytest.raises(TypeError, match="masks must be a torch.Tensor"):
        random_map_baseline(ehr_auc, np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="n_draws must be a positive int"):
        random_map_baseline(ehr_auc, masks, n_draws=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        random_map_baseline(ehr_auc, masks, kind="gaussian")
    with pytest.raises(ValueError, match="grid_size must be a positive int or 2 positive ints"):
        random_map_baseline(ehr_auc, masks, kind="smooth", grid_size=(2, 2, 2))
    with pytest.raises(ValueError, match=r"one score per sample, shape \(2,\)"):
        random_map_baseline(lambda saliency, mask: saliency.mean(), masks)


# ---------------------------------------------------------------- Spearman


@pytest.mark.parametrize("shape", [(3, 1, 5, 6), (2, 1, 4, 3, 5)])
def test_spearman_matches_scipy_with_ties(shape):
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, 4, shape, generator=generator).float()  # many ties
    second = first + torch.randint(0, 3, shape, generator=generator).float()
    expected = [stats.spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(first.numpy(), second.numpy())]
    torch.testing.assert_close(spearman_correlation(first, second), torch.tensor(expected, dtype=torch.float32))


def test_spearman_constant_map_is_nan_and_bad_inputs():
    maps = torch.rand(2, 1, 4, 4)
    constant = maps.clone()
    constant[1] = 0.0
    correlation = spearman_correlation(maps, constant)
    assert correlation[0] == 1 and correlation[1].isnan()
    with pytest.raises(ValueError, match="must share one shape"):
        spearman_correlation(maps, maps[:, :, :3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        spearman_correlation(maps, torch.full_like(maps, float("nan")))
    with pytest.raises(TypeError, match="must be torch.Tensors"):
        spearman_correlation(maps, maps.numpy())


# ---------------------------------------------------------------- weight re-initialisation


def test_randomize_weights_leaves_model_and_global_rng_untouched():
    model = _delta_classifier(2).train()
    model[4].eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    randomised = randomize_weights(model, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert [module.training for module in model.modules()] == [True, True, True, True, True, False]
    assert not torch.equal(randomised[0].weight, model[0].weight)
    assert not torch.equal(randomised[4].weight, model[4].weight)
    again = randomize_weights(model, seed=3)
    for name, value in randomised.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_randomize_weights_warns_about_what_it_cannot_reset():
    with pytest.warns(UserWarning, match="no module of the model has reset_parameters"):
        randomize_weights(_parameter_free_classifier(2))
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    model.scale = nn.Parameter(torch.ones(1))
    with pytest.warns(UserWarning, match=r"keep their trained values: \['scale'\]"):
        randomised = randomize_weights(model)
    assert torch.equal(randomised.scale, model.scale)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        randomize_weights(lambda images: images)


# ---------------------------------------------------------------- model randomisation test


@pytest.mark.parametrize("spatial", [(24, 24), (12, 12, 12)])
def test_randomisation_without_parameters_keeps_maps(spatial):
    model = _parameter_free_classifier(len(spatial))
    images = torch.randn(3, 1, *spatial)
    with pytest.warns(UserWarning, match="no module of the model has reset_parameters"):
        request = ExplainRequest(("gradcam", "hirescam"), "0", class_idx=(0, 1, 0))
        result = model_randomisation_check(model, images, request)
    for method in ("gradcam", "hirescam"):
        torch.testing.assert_close(result.randomised_maps[method], result.trained_maps[method])
        torch.testing.assert_close(result.correlation[method], torch.ones(3))


@pytest.mark.parametrize("spatial", [(24, 24), (12, 12, 12)])
def test_randomisation_decorrelates_weight_dependent_maps(spatial):
    model = _delta_classifier(len(spatial))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.randn(4, 1, *spatial)
    methods = ("gradcam", "hirescam", "layercam")
    result = model_randomisation_check(model, images, ExplainRequest(methods, "0", class_idx=1), seed=0)
    # the trained CAM is ReLU(image) (the known answer), so the check compares the right maps
    expected = F.relu(images) / F.relu(images).flatten(1).amax(dim=1).reshape(-1, *[1] * (images.ndim - 1))
    torch.testing.assert_close(result.trained_maps["gradcam"], expected)
    for method in methods:
        correlation = result.correlation[method]
        assert correlation.shape == (4,)
        assert correlation.abs().max() < 0.3 < MAX_RANDOMISATION_SPEARMAN, (method, correlation)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_randomisation_explains_the_trained_models_predicted_class():
    model = _delta_classifier(2)
    images = torch.randn(6, 1, 24, 24)
    images[:3] -= 3  # ReLU(image) ~ 0: trained logits tie at 0, argmax picks class 0 for these
    trained_class = model(images).argmax(dim=1)
    randomised = randomize_weights(model, seed=0)
    assert (randomised(images).argmax(dim=1) != trained_class).any()  # otherwise this test proves nothing
    result = model_randomisation_check(model, images, ExplainRequest("gradcam", "0"), seed=0)
    expected = CAMExplainer(randomised, "0", "gradcam")(images, class_idx=trained_class)
    torch.testing.assert_close(result.randomised_maps["gradcam"], expected["gradcam"])


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_randomisation_of_segmenter_keeps_trained_pixel_set(spatial):
    model = _delta_segmenter(len(spatial))
    images = torch.rand(2, 1, *spatial)
    trained_region = (model(images).argmax(dim=1, keepdim=True) == 1).float()
    randomised = randomize_weights(model, seed=0)
    own_region = (randomised(images).argmax(dim=1, keepdim=True) == 1).float()
    assert not torch.equal(own_region, trained_region)  # otherwise this test proves nothing
    request = ExplainRequest("gradcam", "0", class_idx=1, pixel_set="pred")
    result = model_randomisation_check(model, images, request, seed=0)
    explainer = CAMExplainer(randomised, "0", "gradcam")
    expected = explainer(images, class_idx=1, pixel_set=trained_region)["gradcam"]
    torch.testing.assert_close(result.randomised_maps["gradcam"], expected)
    assert not torch.allclose(
        result.randomised_maps["gradcam"], explainer(images, class_idx=1, pixel_set="pred")["gradcam"]
    )


def test_randomisation_check_bad_inputs():
    model = _delta_classifier(2)
    images = torch.randn(2, 1, 24, 24)
    with pytest.raises(ValueError, match="no layer named 'layer4'"):
        model_randomisation_check(model, images, ExplainRequest("gradcam", "layer4"))
    with pytest.raises(ValueError, match="unknown CAM method"):
        model_randomisation_check(model, images, ExplainRequest("gradcamm", "0"))
    with pytest.raises(ValueError, match="class_idx has 3 entries but the batch has 2"):
        model_randomisation_check(model, images, ExplainRequest("gradcam", "0", class_idx=(0, 1, 1)))


# ---------------------------------------------------------------- cascading randomisation


class HeadFirst(nn.Module):
    """Defines its head before its body, but calls the body first; ``unused`` is never called."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)
        self.body = nn.Sequential(
            CONV[spatial_dims](1, 4, 3, padding=1), nn.ReLU(), CONV[spatial_dims](4, 4, 3, padding=1)
        )
        self.pool = POOL[spatial_dims](1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(F.relu(self.body(images))).flatten(1))


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_cascade_randomises_from_the_output_down(spatial):
    torch.manual_seed(0)
    model = HeadFirst(len(spatial)).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.randn(3, 1, *spatial)
    methods = ("gradcam", "eigencam")
    cascade = cascading_randomisation(model, images, ExplainRequest(methods, "body.2", class_idx=1), seed=5)
    # reverse order of the forward pass, not of definition; parameter-free (ReLU, pool) and uncalled modules left out
    assert cascade.layers == ["head", "body.2", "body.0"]
    assert {method: tuple(rho.shape) for method, rho in cascade.correlation.items()} == {m: (3, 3) for m in methods}
    # known answer: EigenCAM reads only the CAM layer's activations, so randomising the head above it changes nothing
    torch.testing.assert_close(cascade.correlation["eigencam"][0], torch.ones(3))
    assert (cascade.correlation["eigencam"][1] < 0.99).all()
    assert (cascade.correlation["gradcam"][0] < 0.99).all()  # GradCAM's channel weights come from the head
    # hand computation of the last step: re-initialise each module with seed 5 + its step, explain, correlate
    trained = CAMExplainer(model, "body.2", methods)(images, class_idx=1)
    by_hand = copy.deepcopy(model)
    for step, name in enumerate(cascade.layers):
        torch.manual_seed(5 + step)
        by_hand.get_submodule(name).reset_parameters()
    maps = CAMExplainer(by_hand, "body.2", methods)(images, class_idx=1)
    for method in methods:
        torch.testing.assert_close(cascade.correlation[method][-1], spearman_correlation(trained[method], maps[method]))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_cascade_with_named_blocks_and_bad_inputs():
    torch.manual_seed(0)
    model = HeadFirst(2).eval()
    images = torch.randn(2, 1, 12, 12)
    request = ExplainRequest("gradcam", "body.2", class_idx=0)
    blocks = cascading_randomisation(model, images, request, layers=["head", "body"])
    assert blocks.layers == ["head", "body"] and blocks.correlation["gradcam"].shape == (2, 2)
    alone = cascading_randomisation(model, images, request, layers=["head"])
    # step k's weights depend only on seed + k, not on the steps after it
    torch.testing.assert_close(alone.correlation["gradcam"][0], blocks.correlation["gradcam"][0])
    with pytest.raises(ValueError, match=r"unknown \['neck'\]"):
        cascading_randomisation(model, images, ExplainRequest("gradcam", "body.2"), layers=["head", "neck"])
    with pytest.raises(ValueError, match="nothing to randomise"):
        request = ExplainRequest("gradcam", "0", class_idx=0)
        cascading_randomisation(_parameter_free_classifier(2), images[:, :1], request)


# ---------------------------------------------------------------- bundle check


def _untrained_bundle(tmp_path: Path, name: str = "lesion_classification_3d", explain: bool = True) -> Path:
    """A copy of a demo bundle's inference (and explain) config with freshly initialised weights (seeded)."""
    source = REPO / "bundles" / name / "configs"
    bundle = tmp_path / name
    (bundle / "configs").mkdir(parents=True)
    for config in ("inference.json", "explain.json") if explain else ("inference.json",):
        shutil.copy(source / config, bundle / "configs" / config)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def _phantom_datalist(folder: Path, n_cases: int = 2, seed: int = 4242) -> Path:
    """The held-out phantoms ``bundle_sanity_checks`` checks by default, as a datalist on disk."""
    return write_phantom_dataset(folder, n_cases, seed=seed, positive_fraction=1.0, split=(0, 0, 1))


def test_bundle_sanity_checks_on_untrained_bundle(tmp_path):
    bundle = _untrained_bundle(tmp_path)
    weights = bundle / "models" / "model.pt"
    weights.rename(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="model.pt is missing"):
        bundle_sanity_checks(bundle, n_cases=1, methods=["gradcam"])
    (tmp_path / "model.pt").rename(weights)

    summary = bundle_sanity_checks(bundle, n_cases=2, methods=["gradcam", "eigencam"], n_draws=32, batch_size=2)
    assert [row.method for row in summary] == ["gradcam", "eigencam"]
    assert [row.uses_gradients for row in summary] == [True, False]
    # closed form of the uniform baseline: the mean share of lesion voxels of the same two phantoms (the bundle's
    # preprocessing leaves phantoms unchanged); the 1.0 threshold dominates the sampling error (~0.0004 here)
    datalist = _phantom_datalist(tmp_path / "phantoms")
    cases = json.loads(datalist.read_text())["test"]
    shares = [nib.load(datalist.parent / item["mask"]).get_fdata().mean() for item in cases]
    assert summary[0].random_uniform == pytest.approx(np.mean(shares), abs=0.0015)
    for row in summary:
        assert 0 <= row.ehr_auc <= 1 and 0 <= row.randomised_ehr_auc <= 1 and -1 <= row.spearman <= 1
        assert row.localisation_ratio == row.ehr_auc / max(row.random_uniform, row.random_smooth)
    # oracle for both networks' EHR-AUC: the same NIfTI files loaded with nibabel (the classifier's preprocessing
    # leaves 48^3 phantoms unchanged up to its [0, 1] intensity clip) and explained directly
    images = torch.stack(
        [torch.from_numpy(nib.load(datalist.parent / item["image"]).get_fdata()).float()[None] for item in cases]
    ).clamp(0, 1)
    masks = torch.stack(
        [torch.from_numpy(nib.load(datalist.parent / item["mask"]).get_fdata() > 0.5)[None] for item in cases]
    )
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    model = parser.get_parsed_content("network_def")
    model.load_state_dict(torch.load(weights, weights_only=True))
    direct = model_randomisation_check(model.eval(), images, ExplainRequest(["gradcam"], "class_layers.relu", 1), 0)
    assert summary[0].ehr_auc == pytest.approx(ehr_auc(direct.trained_maps["gradcam"], masks).mean().item(), abs=1e-5)
    assert summary[0].randomised_ehr_auc == pytest.approx(
        ehr_auc(direct.randomised_maps["gradcam"], masks).mean().item(), abs=1e-5
    )
    assert summary[0].spearman == pytest.approx(direct.correlation["gradcam"].mean().item(), abs=1e-5)
    assert summary[0].randomised_ehr_auc != pytest.approx(summary[0].ehr_auc)
    table = sanity_markdown(summary)
    assert table.count("\n") == 3 and "| gradcam |" in table and "(not required)" in table

    # a layer per method: each row equals that method checked alone at its layer
    per_method = {"gradcam": "features.denseblock1.denselayer2", "eigencam": "class_layers.relu"}
    figure = tmp_path / "grid.png"
    cascade_figure = tmp_path / "cascade.png"
    split = bundle_sanity_checks(
        bundle,
        n_cases=2,
        methods=list(per_method),
        target_layer=per_method,
        figure=figure,
        cascade_figure=cascade_figure,
        cascade_methods=["eigencam"],
    )
    assert figure.stat().st_size > 0 and cascade_figure.stat().st_size > 0
    checked = ("gradcam", "eigencam", "hirescam")
    assert _method_subset(checked, ["hirescam"], "cascade_methods") == ("hirescam",)
    assert _method_subset(checked, "gradcam", "cascade_methods") == ("gradcam",)
    with pytest.raises(ValueError, match=r"cascade_methods must name some of the checked methods.*\['scorecam'\] not"):
        bundle_sanity_checks(bundle, n_cases=1, methods=["gradcam"], cascade_methods=["scorecam"])
    with pytest.raises(ValueError, match="cascade_methods must name some"):
        _method_subset(checked, [], "cascade_methods")
    for row in split:
        alone = bundle_sanity_checks(bundle, n_cases=2, methods=[row.method], target_layer=per_method[row.method])[0]
        assert row.ehr_auc == pytest.approx(alone.ehr_auc) and row.spearman == pytest.approx(alone.spearman)
    gradcam_last = summary[0]
    assert split[0].ehr_auc != pytest.approx(gradcam_last.ehr_auc)  # the block's middle differs from its end
    with pytest.raises(ValueError, match=r"missing \['eigencam'\]"):
        bundle_sanity_checks(
            bundle, n_cases=1, methods=["gradcam", "eigencam"], target_layer={"gradcam": per_method["gradcam"]}
        )


def test_sanity_checks_an_input_attribution_next_to_a_cam(tmp_path):
    """An attribution needs no layer (a per-method layer mapping names the CAMs only); its row is its own check run
    directly, its smooth random baseline is drawn at the input's grid (so it is a uniform one), the figure draws it;
    the cascade explains it without a layer."""
    bundle = _untrained_bundle(tmp_path)
    figure = tmp_path / "grid.png"
    summary = bundle_sanity_checks(
        bundle,
        n_cases=2,
        methods=["gradcam", "saliency"],
        target_layer={"gradcam": "class_layers.relu"},
        n_draws=32,
        figure=figure,
    )
    assert figure.stat().st_size > 0
    row = summary[1]
    assert row.method == "saliency" and row.random_smooth == pytest.approx(row.random_uniform, abs=0.0015)
    cases = json.loads(_phantom_datalist(tmp_path / "phantoms").read_text())["test"]
    images = torch.stack(
        [torch.from_numpy(nib.load(tmp_path / "phantoms" / item["image"]).get_fdata()).float()[None] for item in cases]
    ).clamp(0, 1)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    model = parser.get_parsed_content("network_def")
    model.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    direct = model_randomisation_check(model.eval(), images, ExplainRequest(["saliency"], class_idx=1), 0)
    assert direct.layers == {"saliency": None}
    assert row.spearman == pytest.approx(direct.correlation["saliency"].mean().item(), abs=1e-5)
    cascade = cascading_randomisation(model, images[:1], ExplainRequest(["saliency"], class_idx=1), 0, ["class_layers"])
    assert cascade.correlation["saliency"].shape == (1, 1)


@pytest.mark.parametrize("name", ["lesion_classification_3d", "lesion_segmentation_3d"])
def test_sanity_on_a_datalist_equals_the_phantom_run(tmp_path, name):
    """The same phantoms given as the user's own datalist give the same figures; the segmenter's transforms load
    the datalist's "mask" under their own key "label" (its explain.json `xai_region_key`)."""
    bundle = _untrained_bundle(tmp_path, name)
    phantoms = bundle_sanity_checks(bundle, n_cases=3, methods=["gradcam", "hirescam"], batch_size=2, progress=False)
    datalist = _phantom_datalist(tmp_path / "own", n_cases=3)
    own = bundle_sanity_checks(
        bundle, datalist=datalist, region_key="mask", methods=["gradcam", "hirescam"], batch_size=2, progress=False
    )
    assert own == phantoms
    assert all(row.has_ground_truth for row in own)


def test_segmenter_sanity_explains_the_bundles_pixel_set_and_score(tmp_path):
    """The demo segmenter's explain.json sets the pixel set "image" and the score "probability"; the checks use them
    (oracle: the same NIfTI phantoms explained directly), and --mask / --score override them."""
    bundle = _untrained_bundle(tmp_path, "lesion_segmentation_3d")
    datalist = _phantom_datalist(tmp_path / "own", n_cases=2)
    cases = json.loads(datalist.read_text())["test"]
    images = torch.stack(
        [torch.from_numpy(nib.load(datalist.parent / item["image"]).get_fdata()).float()[None] for item in cases]
    ).clamp(0, 1)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    model = parser.get_parsed_content("network_def")
    model.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    spearman = {}
    for mask, score in ((None, None), ("pred", "logit")):  # None: the bundle's "image" and "probability"
        row = bundle_sanity_checks(
            bundle, n_cases=2, methods=["hirescam"], pixel_set=mask, score=score, progress=False
        )[0]
        request = ExplainRequest(["hirescam"], "model.1.submodule", 1, mask or "image", score=score or "probability")
        direct = model_randomisation_check(model.eval(), images, request, 0)
        assert row.spearman == pytest.approx(direct.correlation["hirescam"].mean().item(), abs=1e-5)
        spearman[mask] = row.spearman
    assert spearman[None] != pytest.approx(spearman["pred"], abs=1e-3)


def test_sanity_on_a_datalist_with_unlabelled_and_negative_cases(tmp_path):
    """Localisation is averaged over the cases with a non-empty ground truth only; every case counts in the
    randomisation test."""
    bundle = _untrained_bundle(tmp_path)
    folder = tmp_path / "data"
    positives = json.loads(_phantom_datalist(folder / "pos", n_cases=2).read_text())["test"]
    negative = json.loads(
        write_phantom_dataset(folder / "neg", 1, seed=7, positive_fraction=0.0, split=(0, 0, 1)).read_text()
    )["test"][0]
    unlabelled = {"image": negative["image"]}
    cases = {
        "labelled": [{key: f"pos/{item[key]}" for key in ("image", "mask")} for item in positives],
        "rest": [
            {"image": f"neg/{negative['image']}", "mask": f"neg/{negative['mask']}"},
            {"image": f"neg/{unlabelled['image']}"},
        ],
    }
    cases["mixed"] = [cases["labelled"][0], *cases["rest"], cases["labelled"][1]]
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps(cases))

    def check(key):
        return bundle_sanity_checks(bundle, datalist=datalist, data_list_key=key, methods=["gradcam"], progress=False)[
            0
        ]

    labelled, rest, mixed = check("labelled"), check("rest"), check("mixed")
    assert mixed.ehr_auc == pytest.approx(labelled.ehr_auc)
    assert mixed.randomised_ehr_auc == pytest.approx(labelled.randomised_ehr_auc)
    assert mixed.spearman == pytest.approx((2 * labelled.spearman + 2 * rest.spearman) / 4, abs=1e-6)
    assert not rest.has_ground_truth and np.isnan(rest.localisation_ratio) and not rest.localisation_passed
    row = sanity_markdown([rest]).splitlines()[-1]
    assert row.startswith("| gradcam | n/a | n/a / n/a | n/a |") and "n/a (no ground truth)" in row
    assert (
        bundle_sanity_checks(bundle, datalist=datalist, data_list_key="mixed", n_cases=1, methods=["gradcam"])[0]
        == (
            bundle_sanity_checks(bundle, datalist=datalist, data_list_key="labelled", n_cases=1, methods=["gradcam"])[0]
        )
    )


def test_an_unreadable_case_costs_only_itself_in_the_sanity_checks(tmp_path):
    """A truncated image among a datalist's cases: a warning names its file and the real error, the checks of the
    other cases equal those of a datalist without it; a datalist of only unreadable cases fails naming one."""
    bundle = _untrained_bundle(tmp_path, "lesion_classification_3d")
    datalist = _phantom_datalist(tmp_path / "own", n_cases=3)
    entries = json.loads(Path(datalist).read_text())
    key = "test"  # the list the sanity checks read by default
    broken = Path(datalist).parent / entries[key][1]["image"]  # the lists sit beside the datalist: same paths
    good, bad = Path(datalist).with_name("good.json"), Path(datalist).with_name("bad.json")
    good.write_text(json.dumps({key: [entries[key][0], entries[key][2]]}))
    bad.write_text(json.dumps({key: [entries[key][1]]}))
    expected = bundle_sanity_checks(bundle, datalist=str(good), region_key="mask", methods=["gradcam"], progress=False)
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.warns(UserWarning, match=rf"skipping case {broken}.*LoadImaged: "):
        rows = bundle_sanity_checks(bundle, datalist=datalist, region_key="mask", methods=["gradcam"], progress=False)
    assert rows == expected
    with pytest.raises(ValueError, match=r"none of the 1 case\(s\) could be loaded, e.g. "), pytest.warns(UserWarning):
        bundle_sanity_checks(bundle, datalist=str(bad), region_key="mask", progress=False)


def test_case_batches_split_where_the_image_size_changes():
    sizes = [4, 4, 4, 6, 6, 4]
    cases = [{"image": str(size)} for size in sizes]

    def preprocessing(case):
        return {"image": torch.zeros(1, int(case["image"]), 5)}

    batches = list(case_batches(cases, preprocessing, "label", batch_size=2))
    assert [tuple(batch.images.shape) for batch in batches] == [(2, 1, 4, 5), (1, 1, 4, 5), (2, 1, 6, 5), (1, 1, 4, 5)]
    assert all(not batch.regions.any() and batch.regions.shape[1] == 1 for batch in batches)
    assert [batch.sources for batch in batches] == [["4", "4"], ["4"], ["6", "6"], ["4"]]


def test_sanity_of_a_bundle_without_explain_config_and_bad_datalists(tmp_path):
    bundle = _untrained_bundle(tmp_path, explain=False)
    with pytest.raises(ValueError, match=r"does not set xai_methods \(--methods\)"):
        bundle_sanity_checks(bundle, n_cases=1)
    datalist = _phantom_datalist(tmp_path / "data", n_cases=1)
    row = bundle_sanity_checks(bundle, datalist=datalist, methods="gradcam", target_layer="features", class_idx=1)[0]
    assert row.method == "gradcam" and row.has_ground_truth  # the datalist's "mask" is the default region key
    # no layer anywhere: the one choose_target_layer names (the DenseNet's features) is checked, with the same figures
    chosen = bundle_sanity_checks(bundle, datalist=datalist, methods="gradcam", class_idx=1)[0]
    assert chosen == row

    def fails(match, **kwargs):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            bundle_sanity_checks(bundle, methods=["gradcam"], target_layer="features", progress=False, **kwargs)

    fails("does not exist", datalist=tmp_path / "nowhere.json")
    fails(
        r"no list of cases under 'valid'; its lists are \['test', 'training', 'validation'\]",
        datalist=datalist,
        data_list_key="valid",
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"test": [')
    fails("not valid JSON", datalist=broken)
    broken.write_text(json.dumps({"test": [{"label": "x.nii.gz"}]}))
    fails("case 0 of 'test' .* has no 'image' path", datalist=broken)
    broken.write_text(json.dumps({"test": []}))
    fails("lists no cases under 'test'", datalist=broken)
    fails("n_cases must be a positive int", n_cases=0)
    # an unwritable picture path fails before any case is explained (the parent is a file)
    fails(r"--figure .* cannot be written", datalist=datalist, figure=datalist / "sanity.png")
    fails(r"--cascade_figure .* cannot be written", datalist=datalist, cascade_figure=datalist / "cascade.png")
    fails(
        "no case of 'test' .* has the region key 'lesion'; check --region_key", datalist=datalist, region_key="lesion"
    )
    # the classifier's inference preprocessing loads "mask" only: a "label" region would stay a file name
    relabelled = json.loads(datalist.read_text())
    relabelled["test"] = [{"image": item["image"], "label": item["mask"]} for item in relabelled["test"]]
    (tmp_path / "data" / "relabelled.json").write_text(json.dumps(relabelled))
    fails(
        "does not load the ground-truth key 'label'", datalist=tmp_path / "data" / "relabelled.json", region_key="label"
    )
    (bundle / "configs" / "inference.json").rename(tmp_path / "inference.json")
    fails("model-zoo layout", n_cases=1)
