"""pytorch-grad-cam methods by name: same maps as pytorch-grad-cam called directly, model left exactly as found."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import FinerCAM, GradCAM, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

from monai_xai.cams import CAMExplainer
from monai_xai.cams.adapter import _SampleTarget, available_grad_cam_methods, grad_cam_method
from monai_xai.cams.targets import ClassTarget, SegmentationTarget
from tests.helpers.nets import TinyResNet, tiny_unet3d


def _direct(cam_class, model, layers, images, targets, **call_kwargs) -> np.ndarray:
    cam = cam_class(model=model, target_layers=layers)
    try:
        return cam(images, targets, **call_kwargs)
    finally:
        cam.__exit__(None, None, None)  # releases its hooks


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradcam_through_adapter_equals_pytorch_grad_cam(spatial_dims):
    model = TinyResNet(spatial_dims=spatial_dims, num_classes=3, width=2).eval()
    images = torch.randn(2, 1, *([16] * spatial_dims))
    classes = [2, 0]
    ours = grad_cam_method("grad-cam:GradCAM", model, images, [model.layer3], ClassTarget(torch.tensor(classes)))
    direct = _direct(GradCAM, model, [model.layer3], images, [ClassifierOutputTarget(c) for c in classes])
    assert ours.shape == (2, 1, *images.shape[2:]) and ours.dtype == torch.float32
    assert np.abs(ours[:, 0].numpy() - direct).max() <= 1e-6
    assert ours.amax().item() == pytest.approx(1.0, abs=1e-6)


def test_segmentation_target_through_adapter_equals_pytorch_grad_cam():
    model = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        pixel_set = (model(images).argmax(dim=1, keepdim=True) == 1).float()
    layer = model.model[1].submodule
    ours = grad_cam_method("HiResCAM", model, images, [layer], SegmentationTarget(torch.tensor([1, 1]), pixel_set))
    direct = _direct(
        HiResCAM, model, [layer], images, [SemanticSegmentationTarget(1, pixel_set[b, 0].numpy()) for b in range(2)]
    )
    assert np.abs(ours[:, 0].numpy() - direct).max() <= 1e-6


def test_finer_cam_uses_each_samples_class():
    model = TinyResNet(spatial_dims=2, num_classes=5, width=2).eval()
    images = torch.randn(3, 1, 16, 16)
    classes = torch.tensor([4, 1, 4])
    ours = grad_cam_method("grad-cam:FinerCAM", model, images, [model.layer3], ClassTarget(classes))
    for b in range(3):
        direct = _direct(FinerCAM, model, [model.layer3], images[b : b + 1], None, target_idx=int(classes[b]))
        assert np.abs(ours[b, 0].numpy() - direct[0]).max() <= 1e-5
    with pytest.raises(ValueError, match="not defined for segmentation targets"):
        grad_cam_method("grad-cam:FinerCAM", model, images, [model.layer3], SegmentationTarget(classes, images))


def test_sample_target_scores_rows_and_batches_alike():
    outputs = torch.randn(4, 3)
    wrapped = _SampleTarget(ClassTarget(torch.tensor([0, 2])), sample_id=1, row_ndim=1)
    assert wrapped(outputs[3]).item() == outputs[3, 2].item()
    assert torch.equal(wrapped(outputs), outputs[:, 2])


def _model_state(model):
    return (
        [module.training for module in model.modules()],
        [param.requires_grad for param in model.parameters()],
        [None if param.grad is None else param.grad.clone() for param in model.parameters()],
        sum(len(module._forward_hooks) + len(module._backward_hooks) for module in model.modules()),
    )


def _same_state(before, after) -> bool:
    grads_equal = all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(before[2], after[2])
    )
    return before[0] == after[0] and before[1] == after[1] and grads_equal and before[3] == after[3] == 0


def test_model_restored_after_success_and_error():
    model = TinyResNet(spatial_dims=2, num_classes=3, width=2).train()
    model.stem.requires_grad_(False)  # frozen part
    model.fc.weight.grad = torch.ones_like(model.fc.weight)  # gradients a training loop accumulated
    images = torch.randn(2, 1, 16, 16)
    before = _model_state(model)
    grad_cam_method("grad-cam:KPCA_CAM", model, images, [model.layer4], ClassTarget(torch.tensor([0, 1])))
    assert _same_state(before, _model_state(model))

    def failing_target(outputs, sample_ids=None):
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        grad_cam_method("grad-cam:GradCAM", model, images, [model.layer4], failing_target)
    assert _same_state(before, _model_state(model))


def test_explainer_adapter_with_frozen_model_inside_no_grad():
    model = TinyResNet(spatial_dims=2, num_classes=3, width=2).eval().requires_grad_(False)
    images = torch.randn(2, 1, 16, 16)
    explainer = CAMExplainer(model, "layer4", methods=("gradcam", "grad-cam:GradCAM"))
    with torch.no_grad():
        maps = explainer(images, class_idx=[1, 2])
    assert maps["grad-cam:GradCAM"].shape == (2, 1, 16, 16)
    assert not any(param.requires_grad for param in model.parameters())
    # same formula, different resizing (cv2 vs torch bilinear): close, not equal
    assert torch.corrcoef(torch.stack([maps["gradcam"].flatten(), maps["grad-cam:GradCAM"].flatten()]))[0, 1] > 0.9


def test_unknown_name_lists_available_methods():
    model = TinyResNet(spatial_dims=2, width=2)
    images = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"did you mean \['GradCAM'.*grad-cam:KPCA_CAM"):
        grad_cam_method("grad-cam:GradCam", model, images, [model.layer4], ClassTarget(torch.tensor([0])))
    assert {"FinerCAM", "KPCA_CAM", "ShapleyCAM", "GradCAM"} <= set(available_grad_cam_methods())
    assert "ActivationsAndGradients" not in available_grad_cam_methods()
