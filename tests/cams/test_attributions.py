"""Input attributions against Captum called directly with a hand-written summing target (2D classifier, 3D
segmenter, every pixel set), completeness of Integrated Gradients, the budget's pass counts against the passes Captum
really runs, and the step running them without a layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from scipy import ndimage
from torch import nn

from monai_xai.cams import AttributionExplainer, ClassSet, attribution_map, channel_shares, method_names
from monai_xai.cams.attributions import AttributionSettings, estimate_cost, feature_groups, windows_per_image
from monai_xai.cams.attributions.blur_ig import blur
from monai_xai.explanation import ExplainRequest, ExplainStep, explain
from tests.helpers.attribution_nets import conv_classifier
from tests.helpers.nets import TinyResNet, tiny_unet3d

# Captum called directly warns where it has to make the images require gradients, and when DeepLift hooks modules
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients"),
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks and attributes"),
]

SETTINGS = AttributionSettings(
    steps=8, samples=4, occlusion_window=4, occlusion_stride=3, feature_grid=2, shap_samples=24, blur_sigma=2.0
)
CAPTUM_METHODS = [name for name in method_names("attribution") if name != "blur_ig"]


def _grid_mask(channels: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """(1, C, *spatial) feature groups by hand: 2 blocks per dim (voxel i of n in block floor(2 i / n)), numbered in C
    order, channel c after channel c - 1."""
    halves = [(torch.arange(size) * 2 // size).long() for size in spatial]
    blocks = torch.zeros(spatial, dtype=torch.long)
    for dim, half in enumerate(halves):
        blocks = blocks * 2 + half.reshape(*([1] * dim), -1, *([1] * (len(spatial) - dim - 1)))
    per_channel = 2 ** len(spatial)
    return torch.stack([blocks + c * per_channel for c in range(channels)])[None]


class _Summing(nn.Module):
    """The summing forward function a Captum user writes for one image: the class scores summed over its pixel set
    (a classifier: the class logit)."""

    def __init__(self, model: nn.Module, class_idx: int, pixel_set: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.class_idx, self.pixel_set = model, class_idx, pixel_set

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.model(images)[:, self.class_idx]
        return scores if self.pixel_set is None else (scores * self.pixel_set).flatten(1).sum(dim=1)


def _captum(method: str, forward: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Captum's method on one (1, C, *S) image, with the settings of ``SETTINGS`` spelled out."""
    std = SETTINGS.noise * float(image.max() - image.min())
    window = (1, *[SETTINGS.occlusion_window] * (image.ndim - 2))
    stride = (1, *[SETTINGS.occlusion_stride] * (image.ndim - 2))
    grid = _grid_mask(image.shape[1], tuple(image.shape[2:]))
    calls = {
        "saliency": lambda: Saliency(forward).attribute(image, abs=False),
        "input_x_gradient": lambda: InputXGradient(forward).attribute(image),
        "integrated_gradients": lambda: IntegratedGradients(forward).attribute(image, baselines=0.0, n_steps=8),
        "smoothgrad": lambda: NoiseTunnel(Saliency(forward)).attribute(
            image, nt_type="smoothgrad", nt_samples=4, stdevs=std, abs=False
        ),
        "vargrad": lambda: NoiseTunnel(Saliency(forward)).attribute(
            image, nt_type="vargrad", nt_samples=4, stdevs=std, abs=False
        ),
        "gradient_shap": lambda: GradientShap(forward).attribute(
            image, baselines=torch.zeros_like(image), n_samples=4, stdevs=std
        ),
        "deeplift": lambda: DeepLift(forward).attribute(image, baselines=0.0),
        "occlusion": lambda: Occlusion(forward).attribute(
            image, sliding_window_shapes=window, strides=stride, baselines=0.0
        ),
        "feature_ablation": lambda: FeatureAblation(forward).attribute(image, baselines=0.0, feature_mask=grid),
        "kernel_shap": lambda: KernelShap(forward).attribute(image, baselines=0.0, feature_mask=grid, n_samples=24),
    }
    return calls[method]().detach()


def _assert_parity(method, model, images, classes, pixel_sets, **explain_args):
    """Ours on the batch == Captum image by image (same seed: the noise methods draw image by image in both)."""
    torch.manual_seed(7)
    ours = AttributionExplainer(model, method, batch_size=64, settings=SETTINGS)(images, **explain_args)[method]
    torch.manual_seed(7)
    if method == "gradient_shap":  # ours seeds Captum's numpy draws from torch's generator, once per call
        np.random.seed(int(torch.randint(2**31 - 1, (1,))))  # noqa: NPY002 (the generator Captum draws from)
    oracle = torch.cat(
        [
            _captum(
                method, _Summing(model, classes[i], None if pixel_sets is None else pixel_sets[i]), images[i : i + 1]
            )
            for i in range(images.shape[0])
        ]
    )
    assert ours.shape == images.shape
    difference, scale = float((ours - oracle).abs().max()), float(oracle.abs().max())
    assert scale > 0 and difference <= 1e-5 and difference <= 1e-6 * scale, (method, difference, scale)


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_classifier_parity_2d_per_sample_classes(method):
    torch.manual_seed(0)
    model = conv_classifier(2, in_channels=2).double().eval()
    images = torch.randn(2, 2, 12, 10, dtype=torch.float64)
    _assert_parity(method, model, images, [0, 2], None, class_idx=[0, 2])


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_segmenter_parity_3d_mask_pixel_set(method):
    torch.manual_seed(1)
    model = tiny_unet3d(in_channels=2, out_channels=3).double().eval()
    images = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64)
    masks = torch.zeros(2, 1, 8, 8, 8, dtype=torch.float64)
    masks[0, 0, 1:4, 2:6, 3:7] = 1.0
    masks[1, 0, 4:8, 0:3, 2:5] = 0.5  # soft weights too
    _assert_parity(method, model, images, [1, 1], masks[:, 0], class_idx=1, pixel_set=masks)


def _pixel_set_cases(outputs: torch.Tensor) -> dict[str, tuple[object, torch.Tensor]]:
    """Each pixel set of a (B, 3, 8, 8, 8) segmenter output as the request gives it, and as a hand-made class-1 mask."""
    predicted = (outputs.argmax(dim=1) == 1).double()
    largest = torch.stack(
        [torch.as_tensor(ndimage.label(p.numpy(), structure=torch.ones(3, 3, 3).numpy())[0]) for p in predicted]
    )
    sizes = [torch.bincount(labels.flatten())[1:] for labels in largest]
    largest = torch.stack([(labels == 1 + int(size.argmax())).double() for labels, size in zip(largest, sizes)])
    box = torch.zeros_like(predicted)
    box[:, 2:5, 1:7, 3:4] = 1.0
    voxel = torch.zeros_like(predicted)
    voxel[:, 4, 3, 5] = 1.0
    return {
        "pred": ("pred", predicted),
        "largest_component": ("largest_component", largest),
        "image": ("image", torch.ones_like(predicted)),
        "voxel": ((4, 3, 5), voxel),
        "box": ((slice(2, 5), slice(1, 7), slice(3, 4)), box),
        "empty": ("empty", torch.zeros_like(predicted)),
    }


@pytest.mark.filterwarnings("ignore:pixel_set='empty' was asked for")
@pytest.mark.parametrize("pixel_set", ["pred", "largest_component", "image", "voxel", "box", "empty"])
def test_every_pixel_set_is_the_hand_written_target(pixel_set):
    torch.manual_seed(2)
    model = tiny_unet3d(in_channels=1, out_channels=3).double().eval()
    images = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    given, mask = _pixel_set_cases(model(images).detach())[pixel_set]
    torch.manual_seed(7)
    ours = AttributionExplainer(model, "integrated_gradients", settings=SETTINGS)(images, class_idx=1, pixel_set=given)[
        "integrated_gradients"
    ]
    oracle = torch.cat(
        [_captum("integrated_gradients", _Summing(model, 1, mask[i]), images[i : i + 1]) for i in range(2)]
    )
    assert (ours - oracle).abs().max() <= 1e-5
    assert (ours.abs().sum() == 0) == (pixel_set == "empty")


def test_class_set_sums_each_class_over_its_own_predicted_region():
    torch.manual_seed(3)
    model = tiny_unet3d(in_channels=1, out_channels=3).double().eval()
    images = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    ours = AttributionExplainer(model, "saliency")(images, class_idx=ClassSet((1, 2)))["saliency"]

    def forward(x: torch.Tensor) -> torch.Tensor:
        outputs = model(x)
        labels = outputs.detach().argmax(dim=1)
        return sum((outputs[:, k] * (labels == k)).flatten(1).sum(dim=1) for k in (1, 2))

    oracle = Saliency(forward).attribute(images, abs=False)
    assert (ours - oracle).abs().max() <= 1e-8


def test_blur_ig_is_its_formula_on_scipy_blurs():
    """Blur IG against its sum written out: path points blurred by scipy (replicated borders, truncated at 4 sigma),
    gradients from torch.autograd, one image at a time."""
    torch.manual_seed(4)
    model = conv_classifier(3, in_channels=2).double().eval()
    images = torch.randn(2, 2, 8, 9, 7, dtype=torch.float64)
    settings = AttributionSettings(steps=5, blur_sigma=2.0)
    ours = AttributionExplainer(model, "blur_ig", batch_size=4, settings=settings)(images, class_idx=[1, 0])["blur_ig"]
    for index, class_idx in enumerate([1, 0]):
        image = images[index].numpy()
        sigmas = [2.0 * k / 5 for k in range(6)]
        points = [
            torch.from_numpy(
                ndimage.gaussian_filter(image, (0, s, s, s), mode="nearest", truncate=4.0) if s else image
            )[None]
            for s in sigmas
        ]
        expected = torch.zeros_like(points[0])
        for k in range(5):
            midpoint = ((points[k] + points[k + 1]) / 2).requires_grad_(True)
            (grad,) = torch.autograd.grad(model(midpoint)[0, class_idx], midpoint)
            expected += grad * (points[k] - points[k + 1])
        assert (ours[index : index + 1] - expected).abs().max() <= 1e-6
    assert torch.allclose(blur(images, 0.0), images)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("method", ["integrated_gradients", "blur_ig"])
def test_path_methods_are_complete(spatial_dims, method):
    """Sum of the attributions = f(x) - f(path start) within 1 %, on smooth
    (Softplus) networks: a classifier with one class per image, a segmenter's class summed over its predicted region."""
    torch.manual_seed(5)
    if spatial_dims == 2:
        model = conv_classifier(2, in_channels=2, activation=nn.Softplus).double().eval()
        images = torch.randn(3, 2, 16, 16, dtype=torch.float64)
        args = {"class_idx": [0, 1, 2]}

        def score(x: torch.Tensor) -> torch.Tensor:
            return model(x).gather(1, torch.tensor([[0], [1], [2]]))[:, 0]
    else:
        model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.Softplus(), nn.Conv3d(4, 2, 3, padding=1))
        model = model.double().eval()
        images = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64)
        mask = (model(images).argmax(dim=1) == 1).double()
        args = {"class_idx": 1, "pixel_set": "pred"}

        def score(x: torch.Tensor) -> torch.Tensor:
            return (model(x)[:, 1] * mask).flatten(1).sum(dim=1)

    settings = AttributionSettings(steps=64, blur_sigma=4.0)
    attributions = AttributionExplainer(model, method, settings=settings)(images, **args)[method]
    start = torch.zeros_like(images) if method == "integrated_gradients" else blur(images, 4.0)
    with torch.no_grad():
        difference = score(images) - score(start)
    total = attributions.flatten(1).sum(dim=1)
    tolerance = 0.01
    assert ((total - difference).abs() <= tolerance * difference.abs()).all(), (total, difference)


class _CountingModel(nn.Module):
    """Counts the images (rows) of every forward pass of the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.rows += images.shape[0]
        return self.model(images)


@pytest.mark.parametrize("method", method_names("attribution"))
def test_the_cost_estimate_counts_the_forward_passes_captum_runs(method):
    """The budget's forward passes per image are the images Captum really runs (one more: the target's forward)."""
    torch.manual_seed(6)
    model = _CountingModel(conv_classifier(2, in_channels=2)).eval()
    images = torch.randn(2, 2, 11, 9)
    if method == "deeplift":  # DeepLift hooks the wrapped model's modules; it runs input and baseline in one pass
        model.model = conv_classifier(2, in_channels=2).eval()
    AttributionExplainer(model, method, batch_size=8, settings=SETTINGS)(images, class_idx=1)
    outputs = torch.zeros(2, 3)
    cost = estimate_cost([method], SETTINGS, 2, (11, 9), 2, 4)
    counted_forward = cost.passes[method].forward + 1  # + the forward pass that builds the target
    assert model.rows == 2 * counted_forward, (method, model.rows, cost.passes[method])
    assert feature_groups(SETTINGS, images, outputs).max() + 1 == 2 * 4


def test_a_request_over_the_budget_is_refused_with_its_estimate_before_it_runs():
    model = _CountingModel(conv_classifier(3, in_channels=1)).eval()
    images = torch.randn(1, 1, 16, 16, 16)
    settings = AttributionSettings(occlusion_window=2, occlusion_stride=1, max_voxel_passes=1e7)
    with pytest.raises(
        ValueError, match=r"(?s)occlusion: 3376 forward \+ 0 backward passes per image.*total: 1\.38e\+07"
    ):
        AttributionExplainer(model, ["occlusion"], settings=settings)(images, class_idx=0)
    assert model.rows == 1  # only the forward pass that built the target and timed the estimate
    positions = 15**3  # windows of 2 at stride 1 along 16 voxels: 15 per dim, one channel
    assert 1 + positions == 3376 and (1 + positions) * 16**3 == pytest.approx(1.38e7, rel=1e-2)
    AttributionExplainer(model, ["saliency"], settings=settings)(images, class_idx=0)  # 2 x 4096 passes: runs


def test_the_sliding_window_budget_counts_every_window():
    """MONAI runs 8 windows of 16^3 over 24^3 at overlap 0.5 (2 per dim); the budget charges all 8 before the first."""
    model = _CountingModel(tiny_unet3d()).eval()
    images = torch.randn(1, 1, 24, 24, 24)
    window = {"roi_size": 16, "overlap": 0.5, "sw_batch_size": 8}
    AttributionExplainer(model, "saliency", **window)(images, class_idx=1, pixel_set="image")
    assert model.rows == 2 * 8 == 2 * windows_per_image((24, 24, 24), 16, 0.5)  # target's forward + saliency's
    settings = AttributionSettings(steps=32, max_voxel_passes=2 * 32 * 16**3 * 7.5)
    model.rows = 0
    with pytest.raises(ValueError, match=r"over 8 image\(s\) of 4096 voxels"):
        AttributionExplainer(model, "integrated_gradients", settings=settings, **window)(
            images, class_idx=1, pixel_set="image"
        )
    assert model.rows == 8  # the first batch of windows built its target, nothing ran after it


@pytest.mark.parametrize(
    ("pixel_set", "window_forwards"),
    [("image", 1), ((slice(0, 24), slice(0, 24), slice(4, 20)), 1), ("pred", 8)],
    ids=["image", "box", "pred"],
)
def test_a_sliding_window_runs_a_window_forward_only_where_the_target_needs_its_prediction(pixel_set, window_forwards):
    """8 windows of 16^3 over 24^3, one per batch: Saliency runs one forward per window; a given pixel set (every
    voxel, a box touching every window) needs one more forward in all (the first window's: budget and outputs' shape),
    the predicted region one per window (each window's own prediction)."""
    model = _CountingModel(tiny_unet3d()).eval()
    images = torch.randn(1, 1, 24, 24, 24)
    AttributionExplainer(model, "saliency", roi_size=16, overlap=0.5, sw_batch_size=1)(
        images, class_idx=1, pixel_set=pixel_set
    )
    assert model.rows == 8 + window_forwards


def test_a_window_target_without_its_forward_pass_is_the_same_target():
    """A voxelwise segmenter predicts the same voxels in a window as in the whole volume, so each window's "pred" (its
    own forward pass) and the whole volume's prediction given as a mask (no forward pass after the first window) are
    the same targets: the blended maps agree, for a method of one pass and one of many."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv3d(1, 4, 1), nn.Tanh(), nn.Conv3d(4, 3, 1)).double().eval()
    images = torch.randn(2, 1, 13, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        predicted = (model(images).argmax(dim=1, keepdim=True) == 2).double()
    explainer = AttributionExplainer(
        model, ("saliency", "integrated_gradients"), settings=SETTINGS, roi_size=(6, 6, 6), sw_batch_size=2
    )
    by_prediction = explainer(images, class_idx=2, pixel_set="pred")
    by_mask = explainer(images, class_idx=2, pixel_set=predicted)
    for method, value in by_prediction.items():
        assert value.abs().max() > 0
        assert (value - by_mask[method]).abs().max() <= 1e-10, method


def test_sliding_window_equals_the_whole_image_for_a_voxelwise_network():
    """A 1x1x1 segmenter: a voxel's attribution to any window's sum over its pixel set is the same in every window,
    so the blended map equals the whole-volume map (both blending modes)."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv3d(2, 4, 1), nn.Tanh(), nn.Conv3d(4, 3, 1)).double().eval()
    images = torch.randn(2, 2, 13, 11, 9, dtype=torch.float64)
    mask = (torch.rand(2, 1, 13, 11, 9) > 0.5).double()
    for method in ("saliency", "integrated_gradients", "input_x_gradient"):
        whole = AttributionExplainer(model, method, settings=SETTINGS)(images, class_idx=2, pixel_set=mask)[method]
        for mode in ("gaussian", "constant"):
            windows = AttributionExplainer(
                model, method, settings=SETTINGS, roi_size=(6, 6, 6), sw_batch_size=3, sw_mode=mode
            )(images, class_idx=2, pixel_set=mask)[method]
            assert (windows - whole).abs().max() <= 1e-8, (method, mode)


def test_reduction_and_channel_shares_by_hand():
    attributions = torch.tensor([[[[1.0, -3.0]], [[-1.0, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])  # (2, 2, 1, 2)
    maps = attribution_map(attributions)
    assert torch.equal(maps, torch.tensor([[[[2 / 3, 1.0]]], [[[0.0, 0.0]]]]))
    shares = channel_shares(attributions)
    assert torch.allclose(shares[0], torch.tensor([0.8, 0.2], dtype=torch.float64))
    assert torch.isnan(shares[1]).all()
    inside = channel_shares(attributions, torch.tensor([[[[1.0, 0.0]]]]))
    assert torch.allclose(inside[0], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_feature_groups_prediction_are_the_networks_structures():
    settings = AttributionSettings(features="prediction")
    images = torch.zeros(1, 2, 2, 2)
    outputs = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [5.0, 1.0]]]])
    groups = feature_groups(settings, images, outputs)
    assert groups.tolist() == [[[[0, 1], [2, 2]], [[3, 4], [5, 5]]]]
    assert feature_groups(settings, images, torch.zeros(1, 4)).unique().tolist() == [0, 1]  # a classifier: one each


def test_deeplift_refuses_a_network_that_reuses_a_relu_module():
    with pytest.raises(ValueError, match="deeplift cannot explain TinyResNet.*integrated_gradients"):
        AttributionExplainer(TinyResNet(2, 1, 3).eval(), "deeplift")(torch.randn(1, 1, 16, 16), class_idx=0)


def test_the_step_explains_attributions_without_a_layer_and_next_to_cams():
    torch.manual_seed(9)
    model = conv_classifier(2, in_channels=2).eval()
    images = torch.randn(2, 2, 16, 16)
    step = ExplainStep(ExplainRequest(methods=("saliency", "occlusion"), attribution={"occlusion_window": 4}))
    explanation = step(model, images)
    assert step.chosen_layer is None and explanation.layers == {"saliency": None, "occlusion": None}
    for method in ("saliency", "occlusion"):
        signed = explanation.attributions[method]
        assert signed.shape == (2, 2, 16, 16)
        assert torch.equal(explanation.maps[method], attribution_map(signed))
        assert explanation.engine_output()[f"xai_attribution_{method}"] is signed
    mixed = explain(model, images, methods=["gradcam", "integrated_gradients"], target_layers={"gradcam": "2"})
    assert mixed.layers == {"gradcam": "2", "integrated_gradients": None}
    assert list(mixed.attributions) == ["integrated_gradients"] and math.isclose(
        float(mixed.maps["gradcam"].max()), 1.0
    )
