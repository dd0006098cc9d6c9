"""CAMExplainer end to end: output contract, batch independence, known-region networks, segmentation targets,
model state restoration, and error messages."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms.utils import get_largest_connected_component_mask

from monai_xai.cams import GRADIENT_METHODS, CAMExplainer
from monai_xai.utils import normalize_per_sample
from tests.helpers.nets import KnownRegionNet, TinyResNet, box_mask

ALL_METHODS = list(GRADIENT_METHODS)


def _upsampled(raw: torch.Tensor, size) -> torch.Tensor:
    mode = "bilinear" if raw.ndim == 4 else "trilinear"
    return normalize_per_sample(F.interpolate(raw.clamp_min(0), size=size, mode=mode, align_corners=False))


def test_output_contract_every_method(classifier, images):
    maps = CAMExplainer(classifier, "layer4", methods=ALL_METHODS)(images)
    assert list(maps) == ALL_METHODS
    for method, value in maps.items():
        assert value.shape == (2, 1, *images.shape[2:]), method
        assert value.dtype == torch.float32 and value.device == images.device, method
        assert torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1, method
        assert torch.allclose(value.flatten(1).amax(1), torch.ones(2)), method  # every sample normalised on its own


def test_maps_are_relu_upsampled_normalised_raw_maps(classifier, images):
    explainer = CAMExplainer(classifier, "layer4", methods=("gradcam", "eigencam"))
    raw, maps = explainer(images, raw=True), explainer(images)
    for method in maps:
        assert torch.allclose(maps[method], _upsampled(raw[method], images.shape[2:]), atol=1e-6)
    assert (raw["gradcam"] < 0).any()  # raw maps are pre-ReLU


def _mixed_batch(classifier: TinyResNet, spatial_size) -> torch.Tensor:
    """Two images the classifier assigns to different classes (the fc bias is centred so predictions vary)."""
    candidates = torch.randn(8, 1, *spatial_size)
    with torch.no_grad():
        classifier.eval()
        classifier.fc.bias -= classifier(candidates).mean(dim=0)
        predicted = classifier(candidates).argmax(dim=1)
    other = int((predicted != predicted[0]).nonzero()[0, 0])
    return candidates[[0, other]]


def test_batch_independence_mixed_predicted_classes(classifier, images):
    """MONAI's GradCAM mixes samples with different predicted classes (MONAI #7334); ours must not."""
    batch = _mixed_batch(classifier, images.shape[2:])
    explainer = CAMExplainer(classifier, "layer4", methods=ALL_METHODS)
    together = explainer(batch)
    for b in range(2):
        alone = explainer(batch[b : b + 1])
        for method in ALL_METHODS:
            assert torch.allclose(together[method][b : b + 1], alone[method], atol=1e-5), (method, b)


def test_batch_independence_segmentation_per_sample_classes(unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    box = (slice(4, 12), slice(4, 12), slice(4, 12))
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=("gradcam", "hirescam"))
    together = explainer(images, class_idx=[0, 1], pixel_set=box)
    for b, c in enumerate([0, 1]):
        alone = explainer(images[b : b + 1], class_idx=c, pixel_set=box)
        for method in together:
            assert torch.allclose(together[method][b : b + 1], alone[method], atol=1e-5), method


KNOWN_REGIONS = {
    2: ((16, 16), (slice(2, 7), slice(9, 14))),
    3: ((12, 12, 12), (slice(1, 5), slice(6, 11), slice(2, 6))),
}


@pytest.mark.parametrize("dims", [2, 3])
def test_known_region_every_method_peaks_inside(dims):
    size, region = KNOWN_REGIONS[dims]
    net = KnownRegionNet(size, region)
    images = torch.rand(3, 1, *size)
    inside = box_mask(size, region).bool().expand(3, 1, *size)
    maps = CAMExplainer(net, "region", methods=ALL_METHODS)(images, class_idx=[0, 1, 0])
    for method, value in maps.items():
        peaks = value.flatten(1).argmax(dim=1, keepdim=True)
        assert inside.flatten(1).gather(1, peaks).all(), method
        assert value[~inside].max() == 0, method


@pytest.mark.parametrize("dims", [2, 3])
def test_known_region_elementwise_methods_ignore_strong_features_outside(dims):
    """On the unmasked features, a bright blob outside the region gives strong activations but no gradient: methods
    that weight activations element-wise by gradients must leave it at zero."""
    size, region = KNOWN_REGIONS[dims]
    net = KnownRegionNet(size, region)
    images = torch.rand(2, 1, *size)
    images[(slice(None), slice(None), *[slice(s - 3, s) for s in size])] = 20.0  # far corner, outside the box
    inside = box_mask(size, region).bool().expand(2, 1, *size)
    maps = CAMExplainer(net, "features", methods=("hirescam", "layercam", "gradcam_elementwise"))(images)
    for method, value in maps.items():
        assert value[~inside].max() == 0 and value[inside].max() == 1, method


SEG_MASKS = {
    "voxel": (8, 7, 9),
    "box": (slice(3, 9), slice(5, 12), slice(2, 8)),
}


def test_segmentation_masks_on_3d_unet(unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=("gradcam", "hirescam"))
    with torch.no_grad():
        predicted = unet3d.eval()(images).argmax(dim=1, keepdim=True) == 1
    assert predicted.flatten(1).any(1).all()  # class 1 present in both samples

    def same(mask_a, mask_b):
        maps_a, maps_b = (
            explainer(images, class_idx=1, pixel_set=mask_a),
            explainer(images, class_idx=1, pixel_set=mask_b),
        )
        for method in maps_a:
            assert maps_a[method].shape == (2, 1, 16, 16, 16) and maps_a[method].max() == 1
            assert torch.allclose(maps_a[method], maps_b[method], atol=1e-6), method
        return maps_a

    same("pred", predicted.float())
    same(None, predicted)
    voxel = torch.zeros(2, 1, 16, 16, 16)
    voxel[:, :, 8, 7, 9] = 1
    same(SEG_MASKS["voxel"], voxel)
    box = torch.zeros(1, 1, 16, 16, 16)
    box[(0, 0, *SEG_MASKS["box"])] = 1
    same(SEG_MASKS["box"], box)
    largest = torch.stack(
        [get_largest_connected_component_mask(predicted[b], connectivity=3) for b in range(2)]
    ).float()
    same("largest_component", largest)
    pred_maps = explainer(images, class_idx=1, pixel_set="pred")["hirescam"]
    voxel_maps = explainer(images, class_idx=1, pixel_set=SEG_MASKS["voxel"])["hirescam"]
    assert not torch.allclose(pred_maps, voxel_maps)  # the pixel set matters


def test_empty_pixel_set_gives_zero_maps_and_a_warning(unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    mask = torch.zeros(2, 1, 16, 16, 16)
    mask[0, :, 4:8, 4:8, 4:8] = 1
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=ALL_METHODS)
    with pytest.warns(UserWarning, match=r"empty for sample\(s\) \[1\]"):
        maps = explainer(images, class_idx=1, pixel_set=mask)
    for method, value in maps.items():
        assert torch.isfinite(value).all(), method
        assert value[1].abs().max() == 0 and value[0].max() == 1, method  # eigencam ignores the target: zeroed too
    with pytest.warns(UserWarning, match="empty"):
        raw = explainer(images, class_idx=1, pixel_set=mask, raw=True)
    assert all(value[1].abs().max() == 0 for value in raw.values())


def test_multiple_layers_follow_pytorch_grad_cam_rule(classifier, images):
    explainer = CAMExplainer(classifier, ["layer2", "layer4"], methods="gradcam")
    combined = explainer(images)["gradcam"]
    per_layer = [CAMExplainer(classifier, name, methods="gradcam")(images)["gradcam"] for name in ("layer2", "layer4")]
    assert torch.allclose(combined, normalize_per_sample(torch.stack(per_layer).mean(0)), atol=1e-6)
    with pytest.raises(ValueError, match="different feature shapes"):
        explainer(images, raw=True)
    same_shape = CAMExplainer(classifier, ["layer3", "layer4"], methods="hirescam")(images, raw=True)["hirescam"]
    separate = [
        CAMExplainer(classifier, name, methods="hirescam")(images, raw=True)["hirescam"]
        for name in ("layer3", "layer4")
    ]
    assert torch.allclose(same_shape, (separate[0] + separate[1]) / 2, atol=1e-6)


def test_metatensor_keeps_meta():
    affine = torch.diag(torch.tensor([0.5, 2.0, 3.0, 1.0], dtype=torch.float64))
    images = MetaTensor(torch.randn(2, 1, 16, 16, 16), affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    maps = CAMExplainer(TinyResNet(spatial_dims=3), "layer4", methods=("gradcam", "eigencam"))(images)
    for value in maps.values():
        assert isinstance(value, MetaTensor)
        assert torch.equal(value.affine, images.affine) and value.meta["filename_or_obj"] == "ct.nii.gz"


class RaisesAfterLayer4(TinyResNet):
    """Raises in forward after ``layer4`` ran, when ``fail`` is set (an error midway through an explanation)."""

    fail = False

    def forward(self, x):
        features = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        if self.fail:
            raise RuntimeError("boom")
        return self.fc(self.dropout(self.pool(features).flatten(1)))


def _state(model: torch.nn.Module):
    return (
        [module.training for module in model.modules()],
        [param.requires_grad for param in model.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [param.grad for param in model.parameters()],
    )


def test_model_state_restored_after_success_and_after_errors():
    model = RaisesAfterLayer4(spatial_dims=2)
    model.train()
    model.layer2.eval()  # e.g. a frozen block kept in eval mode inside a training model
    model.stem.requires_grad_(False)
    before = _state(model)
    explainer = CAMExplainer(model, ["layer3", "layer4"], methods=ALL_METHODS)
    images = torch.randn(2, 1, 32, 32)
    explainer(images)
    assert _state(model) == before
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        explainer(images)
    assert _state(model) == before
    model.fail = False
    with pytest.raises(ValueError, match="pixel_set is only used for segmentation"):
        explainer(images, pixel_set="pred")  # raised after the forward pass, with hooks attached
    assert _state(model) == before
    assert not all(before[0]) and any(before[0]) and not all(before[1])  # the test really had mixed flags


def test_eval_mode_is_used_and_results_do_not_depend_on_train_mode(classifier, images):
    explainer = CAMExplainer(classifier, "layer4", methods="gradcam")
    classifier.eval()
    in_eval = explainer(images)["gradcam"]
    classifier.train()  # dropout and batch statistics would change the maps if the explainer ran in train mode
    assert torch.allclose(explainer(images)["gradcam"], in_eval, atol=1e-6)
    assert classifier.training


def test_works_inside_no_grad_inference_mode_and_with_frozen_parameters(classifier, images):
    explainer = CAMExplainer(classifier, "layer4", methods=("gradcam", "hirescam"))
    reference = explainer(images)
    with torch.no_grad():
        no_grad = explainer(images)
    with torch.inference_mode():
        inference = explainer(images * 1)  # an inference tensor
    classifier.requires_grad_(False)
    frozen = explainer(images)
    assert not any(param.requires_grad for param in classifier.parameters())
    for method in reference:
        for other in (no_grad, inference, frozen):
            assert torch.allclose(other[method], reference[method], atol=1e-6), method


def test_in_place_operation_after_the_target_layer_does_not_alter_recorded_activations():
    def net(inplace: bool) -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(inplace=inplace),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 2),
        )

    images = torch.randn(2, 1, 8, 8)
    methods = ("gradcam", "hirescam", "eigencam")
    in_place = CAMExplainer(net(True), "0", methods=methods)(images, raw=True)
    reference = CAMExplainer(net(False), "0", methods=methods)(images, raw=True)
    for method in methods:
        assert (reference[method] < 0).any(), method  # the ReLU would have changed these activations
        assert torch.allclose(in_place[method], reference[method], atol=1e-6), method


class Unused(TinyResNet):
    def __init__(self):
        super().__init__(spatial_dims=2)
        self.unused = torch.nn.Conv2d(1, 1, 1)


class ReturnsDict(TinyResNet):
    def forward(self, x):
        return {"logits": super().forward(x)}


def test_errors_say_what_to_do():
    classifier, images = TinyResNet(spatial_dims=2), torch.randn(2, 1, 32, 32)
    explainer = CAMExplainer(classifier, "layer4")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(B, C, D, H, W\).*image\[None\]"):
        explainer(images[0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        explainer(torch.where(images > 2, float("nan"), images))
    with pytest.raises(TypeError, match="floating point"):
        explainer(images.long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        explainer(images.numpy())
    with pytest.raises(ValueError, match=r"no layer named 'layer44' \(close matches: \['layer4'"):
        CAMExplainer(classifier, "layer44")
    with pytest.raises(ValueError, match=r"unknown CAM method 'gradcam\+\+'.*available: \['gradcam', 'gradcampp'"):
        CAMExplainer(classifier, "layer4", methods="gradcam++")
    with pytest.raises(ValueError, match=r"class_idx \[3, 3\] out of range: the model has 3 output classes"):
        explainer(images, class_idx=3)
    with pytest.raises(ValueError, match="score must be one of"):
        CAMExplainer(classifier, "layer4", score="softmax")
    with pytest.raises(ValueError, match=r"did not run in the forward pass.*print\(model\)"):
        CAMExplainer(unused := Unused(), "unused")(torch.randn(1, 1, 32, 32))
    assert not unused.unused._forward_hooks
    with pytest.raises(ValueError, match=r"'fc' outputs shape \(2, 3\).*choose a convolutional layer"):
        CAMExplainer(classifier, "fc")(images)
    with pytest.raises(TypeError, match="returned dict.*wrap the model"):
        CAMExplainer(ReturnsDict(spatial_dims=2), "layer4")(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="raw=True averages"):
        CAMExplainer(classifier, ["layer1", "layer4"])(images, raw=True)


def test_sliding_window_and_adapter_argument_errors(unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    windowed = CAMExplainer(unet3d, "model.1.submodule", roi_size=(8, 8, 8))
    with pytest.raises(ValueError, match="class_idx must be one class for the whole batch"):
        windowed(images, class_idx=[0, 1])
    with pytest.raises(ValueError, match="class_idx must be one class"):
        windowed(images)
    with pytest.raises(ValueError, match="largest_component' is a property of the whole volume"):
        windowed(images, class_idx=1, pixel_set="largest_component")
    with pytest.raises(ValueError, match="raw=True is not available with a sliding window"):
        windowed(images, class_idx=1, raw=True)
    with pytest.raises(ValueError, match=r"raw=True is not available for \['grad-cam:GradCAM'\]"):
        CAMExplainer(unet3d, "model.1.submodule", methods="grad-cam:GradCAM")(images, class_idx=1, raw=True)


def test_segmentation_errors(unet3d):
    explainer = CAMExplainer(unet3d, "model.1.submodule")
    images = torch.randn(2, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="class_idx is required for segmentation"):
        explainer(images)
    with pytest.raises(ValueError, match="out of range"):
        explainer(images, class_idx=2)
    with pytest.raises(ValueError, match=r"pixel_set must have shape \(B or 1, 1, \*spatial\)"):
        explainer(images, class_idx=1, pixel_set=torch.ones(2, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="pixel_set spatial shape"):
        explainer(images, class_idx=1, pixel_set=torch.ones(2, 1, 8, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid call does not warn
        explainer(images, class_idx=1, pixel_set=(slice(0, 8),) * 3)
