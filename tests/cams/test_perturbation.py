"""Score-CAM and Ablation-CAM: parity with pytorch-grad-cam in 2D, 3D via a lifted net and a known-region net,
batching across samples, and the model left untouched (modes, hooks) also when a forward pass raises."""

import pytest
import torch
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget
from torch import nn

from monai_xai.cams import CAMExplainer
from monai_xai.cams.perturbation import PERTURBATION_METHODS, ablationcam, scorecam
from monai_xai.cams.targets import ClassTarget, SegmentationTarget
from tests.helpers.nets import KnownRegionNet, TinyResNet

ORACLES = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}


def _record(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The layer's output on ``images`` (model in eval mode)."""
    recorded = []
    handle = layer.register_forward_hook(lambda module, inputs, output: recorded.append(output.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return recorded[0]


def _oracle_raw_map(method: str, model: nn.Module, layer: nn.Module, images, activations, targets) -> torch.Tensor:
    """pytorch-grad-cam's own sum_k w_k A_k (before ReLU, at feature resolution), hooks released afterwards."""
    cam = ORACLES[method](model=model, target_layers=[layer])
    cam.batch_size = 4
    try:
        raw = cam.get_cam_image(images, layer, targets, activations.numpy(), None)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(raw)


def _assert_parity(ours: torch.Tensor, oracle: torch.Tensor) -> None:
    """Max abs diff <= 1e-4, and <= 0.1 % of the map's scale so that small maps are compared meaningfully too."""
    scale = oracle.abs().max()
    assert scale > 1e-6, "degenerate oracle map: the comparison would prove nothing"
    assert (ours - oracle).abs().max() <= min(1e-4, 1e-3 * scale)


def _sensitive_classifier(spatial_dims: int) -> TinyResNet:
    """TinyResNet with a steep head, so that Score-CAM's softmax weights depend strongly on each channel's score."""
    model = TinyResNet(spatial_dims=spatial_dims, num_classes=3, width=2).eval()
    with torch.no_grad():
        model.fc.weight.mul_(30)
    return model


def _lift_to_3d(model_2d: TinyResNet) -> TinyResNet:
    """A 3D TinyResNet that computes exactly what ``model_2d`` does on volumes of depth 1.

    A 3x3x3 convolution with padding 1 sees a depth-1 volume only through its middle depth slice, so copying the 2D
    kernels there (other slices zero) reproduces the 2D network slice for slice.
    """
    model_3d = TinyResNet(spatial_dims=3, num_classes=3, width=2)
    lifted = {}
    for name, value in model_2d.state_dict().items():
        if value.ndim == 4:
            kernel = torch.zeros(*value.shape[:2], value.shape[2], *value.shape[2:])
            kernel[:, :, value.shape[2] // 2] = value
            value = kernel
        lifted[name] = value
    model_3d.load_state_dict(lifted)
    return model_3d.eval()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_parity_with_pytorch_grad_cam_2d_classifier(method):
    model = _sensitive_classifier(spatial_dims=2)
    images = torch.randn(3, 1, 16, 16)
    activations = _record(model, model.layer4, images)
    assert (activations.flatten(1).amin(dim=1) == 0).all()  # post-ReLU: pytorch-grad-cam's AblationLayer zeroes too
    classes = torch.tensor([0, 2, 1])
    # batch_size 5 over 3 x 16 (sample, channel) pairs: most forward passes mix copies of two samples
    ours = PERTURBATION_METHODS[method](model, images, model.layer4, activations, ClassTarget(classes), 5)
    oracle = _oracle_raw_map(
        method, model, model.layer4, images, activations, [ClassifierOutputTarget(int(c)) for c in classes]
    )
    assert ours.shape == (3, 1, 4, 4)
    _assert_parity(ours[:, 0], oracle)


def test_scorecam_parity_segmentation_target_2d():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(6, 2, 3, padding=1),
    ).eval()
    layer = model[3]
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        pixel_set = (model(images).argmax(dim=1, keepdim=True) == 1).float()
    activations = _record(model, layer, images)
    ours = scorecam(model, images, layer, activations, SegmentationTarget(torch.tensor([1, 1]), pixel_set), 7)
    oracle_targets = [SemanticSegmentationTarget(1, pixel_set[b, 0].numpy()) for b in range(2)]
    oracle = _oracle_raw_map("scorecam", model, layer, images, activations, oracle_targets)
    _assert_parity(ours[:, 0], oracle)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_3d_equals_2d_oracle_on_lifted_network(method):
    """3D path (trilinear upsampling, 5-D copies and ablation) checked against pytorch-grad-cam's 2D result."""
    model_2d = _sensitive_classifier(spatial_dims=2)
    model_3d = _lift_to_3d(model_2d)
    images = torch.randn(2, 1, 16, 16)
    volumes = images[:, :, None]  # (B, 1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model_3d(volumes), model_2d(images), atol=1e-5)
    classes = torch.tensor([1, 2])
    activations = _record(model_3d, model_3d.layer4, volumes)
    ours = PERTURBATION_METHODS[method](model_3d, volumes, model_3d.layer4, activations, ClassTarget(classes), 16)
    oracle = _oracle_raw_map(
        method,
        model_2d,
        model_2d.layer4,
        images,
        _record(model_2d, model_2d.layer4, images),
        [ClassifierOutputTarget(int(c)) for c in classes],
    )
    assert ours.shape == (2, 1, 1, 4, 4)
    _assert_parity(ours[:, 0, 0], oracle)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_3d_map_lies_in_the_region_the_decision_depends_on(method):
    region = (slice(2, 6), slice(5, 10), slice(1, 4))
    model = KnownRegionNet((10, 10, 10), region).eval()
    images = torch.rand(2, 1, 10, 10, 10)
    activations = _record(model, model.region, images)
    cam = PERTURBATION_METHODS[method](model, images, model.region, activations, ClassTarget(torch.tensor([0, 1])), 4)
    inside = torch.zeros_like(cam, dtype=torch.bool)
    inside[(slice(None), slice(None), *region)] = True
    assert (cam[~inside] == 0).all()
    assert (cam.clamp_min(0).flatten(1).amax(dim=1) > 0).all()
    assert (cam[inside].reshape(2, -1) > 0).float().mean() > 0.9


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batch_size_does_not_change_the_map(method):
    model = TinyResNet(spatial_dims=3, num_classes=3, width=2).eval()
    images = torch.randn(2, 1, 8, 8, 8)
    activations = _record(model, model.layer4, images)
    target = ClassTarget(torch.tensor([2, 0]))
    one_at_a_time = PERTURBATION_METHODS[method](model, images, model.layer4, activations, target, 1)
    for batch_size in (7, 64):
        batched = PERTURBATION_METHODS[method](model, images, model.layer4, activations, target, batch_size)
        assert torch.allclose(batched, one_at_a_time, atol=1e-5)


class _FailingTarget:
    """Scores like ``ClassTarget`` until the ``fail_at``-th call, then raises."""

    def __init__(self, fail_at: int) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.target = ClassTarget(torch.tensor([0, 1]))

    def __call__(self, outputs, sample_ids=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("scoring failed")
        return self.target(outputs, sample_ids)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_model_modes_and_hooks_restored_also_on_error(method):
    model = TinyResNet(spatial_dims=2, num_classes=3, width=2).eval()
    images = torch.randn(2, 1, 16, 16)
    activations = _record(model, model.layer4, images)
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    expected_modes = [module.training for module in model.modules()]

    def hooks() -> int:
        return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules())

    PERTURBATION_METHODS[method](model, images, model.layer4, activations, _FailingTarget(fail_at=0), 8)  # no failure
    assert [module.training for module in model.modules()] == expected_modes and hooks() == 0
    with pytest.raises(RuntimeError, match="scoring failed"):
        PERTURBATION_METHODS[method](model, images, model.layer4, activations, _FailingTarget(fail_at=2), 8)
    assert [module.training for module in model.modules()] == expected_modes and hooks() == 0


def test_bad_inputs_give_clear_errors():
    model = TinyResNet(spatial_dims=2, num_classes=3, width=2).eval()
    images = torch.randn(2, 1, 16, 16)
    activations = _record(model, model.layer4, images)
    target = ClassTarget(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        scorecam(model, images, model.layer4, activations, target, 0)
    with pytest.raises(ValueError, match="activations must be"):
        ablationcam(model, images, model.layer4, activations[:1], target, 4)
    with pytest.raises(ValueError, match="did not run"):
        ablationcam(model, images, nn.Conv2d(1, 1, 1), activations, target, 4)
    with pytest.raises(ValueError, match="returned"):  # wrong layer for these activations: shapes differ
        ablationcam(model, images, model.layer2, activations, target, 4)
    assert sum(len(module._forward_hooks) for module in model.modules()) == 0


def test_explainer_runs_perturbation_methods_on_3d_segmentation(unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=("scorecam", "ablationcam"), batch_size=8)
    maps = explainer(images, class_idx=1, pixel_set="pred")
    for saliency in maps.values():
        assert saliency.shape == (2, 1, 16, 16, 16) and saliency.dtype == torch.float32
        assert torch.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() <= 1
        assert (saliency.flatten(1).amax(dim=1) == 1).all()
