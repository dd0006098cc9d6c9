"""The method registry: one record per method, what the explainer dispatches on, and how a new method is added."""

import pytest
import torch

from monai_xai.cams import GRADIENT_METHODS, PERTURBATION_METHODS, CAMExplainer, get_method, method_names, registry
from monai_xai.cams.methods import weighted_channel_sum
from monai_xai.cams.registry import register_method
from monai_xai.enums import MethodFamily
from tests.helpers.nets import TinyResNet


def test_every_method_has_one_record_with_its_family_and_needs():
    attributions = method_names(MethodFamily.ATTRIBUTION)
    assert method_names() == [*GRADIENT_METHODS, *PERTURBATION_METHODS, *attributions]  # CAMs first
    assert method_names(MethodFamily.GRADIENT)[:2] == ["gradcam", "gradcampp"]
    assert method_names("perturbation") == ["scorecam", "ablationcam"]
    assert {"integrated_gradients", "smoothgrad", "occlusion", "kernel_shap"} <= set(attributions)
    without_gradients = [name for name in method_names() if not get_method(name).needs_gradients]
    assert without_gradients == ["eigencam", "scorecam", "ablationcam", *attributions]
    assert [name for name in method_names() if not get_method(name).needs_layer] == attributions
    for name, function in GRADIENT_METHODS.items():
        record = get_method(name)
        assert record.name == name and record.family == MethodFamily.GRADIENT and record.function is function
        assert record.supports_raw
        assert "Example: ``CAMExplainer(" in function.__doc__  # formula and example live with the function
    adapter = get_method("grad-cam:GradCAM")
    assert adapter.family == MethodFamily.GRAD_CAM and not adapter.supports_raw and not adapter.needs_gradients


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown CAM method 'gradcamm' \(did you mean \['gradcam'"):
        get_method("gradcamm")
    with pytest.raises(TypeError, match="method names must be strings"):
        get_method(3)
    # a pytorch-grad-cam class that does not exist fails when the explainer is built, not on the first batch
    with pytest.raises(ValueError, match="unknown pytorch-grad-cam method 'GradKAM'.*did you mean"):
        CAMExplainer(TinyResNet(), "layer4", "grad-cam:GradKAM")
    with pytest.raises(ValueError, match="cannot register CAM method 'gradcam'"):
        register_method("gradcam", MethodFamily.GRADIENT)(lambda activations, grads: activations)
    with pytest.raises(ValueError, match="lower case"):
        register_method("MyCAM", MethodFamily.GRADIENT)(lambda activations, grads: activations)


def test_a_registered_method_runs_in_the_shared_pass(monkeypatch):
    """docs/architecture.md's recipe: one function with the decorator is a method the explainer runs, in the same
    forward and backward pass as the others. Oracle: the hand formula on activations and gradients from autograd."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the registration ends with the test

    @register_method("gradcam_abs", MethodFamily.GRADIENT)
    def gradcam_abs(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """L = sum_k w_k A_k, w_k = mean_s |g_k(s)|."""
        return weighted_channel_sum(grads.abs().flatten(2).mean(dim=2), activations)

    model = TinyResNet(spatial_dims=3, num_classes=3).eval()
    images = torch.randn(2, 1, 16, 16, 16)
    forwards = []
    model.register_forward_hook(lambda module, inputs, output: forwards.append(1))
    maps = CAMExplainer(model, "layer4", ["gradcam_abs", "gradcam"])(images, class_idx=[0, 2], raw=True)
    assert len(forwards) == 1

    recorded = []
    handle = model.layer4.register_forward_hook(lambda module, inputs, output: recorded.append(output))
    logits = model(images)
    handle.remove()
    grads = torch.autograd.grad(logits[[0, 1], [0, 2]].sum(), recorded[0])[0]
    expected = (grads.abs().mean(dim=(2, 3, 4))[:, :, None, None, None] * recorded[0]).sum(dim=1, keepdim=True)
    torch.testing.assert_close(maps["gradcam_abs"], expected.detach(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(maps["gradcam_abs"], maps["gradcam"])
