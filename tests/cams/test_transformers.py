"""CAMs of transformers: token layouts (class and register tokens), channel-last Swin blocks, 2D and 3D, every
method, classification and segmentation targets, sliding windows; pytorch-grad-cam (with its reshape_transform) as the
oracle."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR, SwinUNETR
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from monai_xai.cams import CAMExplainer, get_method, method_names
from monai_xai.cams.layouts import feature_grid
from tests.helpers.oracles import ORACLES, assert_parity, oracle_raw_cam
from tests.helpers.transformers import OnePatchTransformer3d, one_patch_image, tiny_swin, tiny_vit, vit_tokens

VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"  # the last block's first LayerNorm: its patch tokens reach the class


@pytest.mark.parametrize("method", list(ORACLES))
def test_vit_parity_with_pytorch_grad_cam(method):
    model = tiny_vit().eval()
    images = torch.randn(2, 3, 32, 32)
    ours = CAMExplainer(model, VIT_LAYER, method)(images, class_idx=[0, 2], raw=True)[method]
    assert ours.shape == (2, 1, 4, 4)
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(2)]
    layer = model.get_submodule(VIT_LAYER)
    assert_parity(ours, oracle_raw_cam(ORACLES[method], model, images, layer, targets, vit_tokens(4)), method)


@pytest.mark.parametrize("method", list(ORACLES))
def test_swin_parity_with_pytorch_grad_cam(method):
    # float64: the Swin block's small raw maps (~1e-4) differ by float32 rounding between the two summation orders
    model = tiny_swin().double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ours = CAMExplainer(model, "features.3", method)(images, class_idx=[1, 2], raw=True)[method]
    assert ours.shape == (2, 1, 4, 4)  # channel-last (B, 4, 4, 32) found from the Swin blocks
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(2)]
    oracle = oracle_raw_cam(ORACLES[method], model, images, model.features[3], targets, lambda x: x.permute(0, 3, 1, 2))
    assert_parity(ours, oracle, method)


@pytest.mark.parametrize("method", [name for name in method_names() if get_method(name).needs_layer])
@pytest.mark.parametrize("patch", [0, 21, 63])
def test_every_method_finds_the_one_decisive_patch_in_3d(method, patch):
    """A class token and two register tokens precede the 64 patch tokens; only patch ``patch`` decides."""
    model = OnePatchTransformer3d(patch, extra=3).eval()
    images = one_patch_image(patch)
    raw = CAMExplainer(model, "block", method, batch_size=16)(images, class_idx=1, raw=True)[method]
    assert raw.shape == (1, 1, 4, 4, 4)
    assert int(raw.flatten(1).argmax()) == patch, raw.flatten()


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "eigencam", "scorecam", "ablationcam"])
def test_batches_are_explained_sample_by_sample(method):
    model = OnePatchTransformer3d(21, extra=1).eval()
    images = torch.rand(3, 1, 16, 16, 16)
    explainer = CAMExplainer(model, "block", method, batch_size=8)
    together = explainer(images, class_idx=1, raw=True)[method]
    for index in range(3):
        alone = explainer(images[index : index + 1], class_idx=1, raw=True)[method]
        torch.testing.assert_close(together[index : index + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("extra", [0, 1, 5])
def test_class_and_register_tokens_are_dropped(extra):
    """The same patch features with 0, 1 or 5 leading tokens give the same grid; AblationCAM puts the ablated features
    back into the patch tokens, leaving the extra tokens as they were."""
    model = OnePatchTransformer3d(10, extra=extra).eval()
    images = one_patch_image(10)
    assert feature_grid(model, "block", images) == (4, 4, 4)
    maps = CAMExplainer(model, "block", ["gradcam", "ablationcam"])(images, class_idx=1)
    assert all(int(value.flatten(1).argmax()) // 256 == 10 // 16 for value in maps.values())  # the patch's depth slab


def test_unetr_and_swinunetr_with_segmentation_pixel_sets():
    torch.manual_seed(0)
    unetr = UNETR(in_channels=1, out_channels=2, img_size=32, feature_size=8, hidden_size=32, mlp_dim=64, num_heads=2)
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3)
    ground_truth = torch.zeros(1, 1, 32, 32, 32)
    ground_truth[:, :, 8:20, 10:22, 6:18] = 1
    for model, layer, size in (
        (unetr, "vit.blocks.11", 32),  # tokens, no class token
        (swin, "swinViT.layers2.0.blocks.1", 64),  # channel-last Swin block
        (swin, "swinViT.layers2.0", 64),  # a SwinUNETR stage: channel-first
    ):
        model.eval()
        images = torch.randn(1, 1, size, size, size)
        pixel_set = torch.nn.functional.interpolate(ground_truth, size=(size,) * 3)
        for chosen in ("pred", pixel_set):
            maps = CAMExplainer(model, layer, ["gradcam", "hirescam"])(images, class_idx=1, pixel_set=chosen)
            for value in maps.values():
                assert value.shape == (1, 1, size, size, size) and torch.isfinite(value).all()
                assert 0 <= float(value.min()) and float(value.max()) <= 1


def test_sliding_window_over_a_volume_larger_than_the_transformers_input():
    """UNETR takes exactly 32^3: a 48^3 volume is explained window by window, like its sliding-window inference; the
    same for a SwinUNETR Swin block over two 64^3 windows."""
    torch.manual_seed(0)
    unetr = UNETR(in_channels=1, out_channels=2, img_size=32, feature_size=8, hidden_size=32, mlp_dim=64, num_heads=2)
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3)
    for model, layer, roi, shape in (
        (unetr, "vit.blocks.11", 32, (48, 48, 48)),
        (swin, "swinViT.layers2.0.blocks.1", 64, (96, 64, 64)),
    ):
        images = torch.randn(1, 1, *shape)
        windowed = CAMExplainer(model.eval(), layer, ["gradcam", "hirescam"], roi_size=roi, overlap=0.25)
        maps = windowed(images, class_idx=1, pixel_set="image")
        assert maps["hirescam"].shape == (1, 1, *shape) and float(maps["hirescam"].max()) == pytest.approx(1.0)


class Permute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class Odd(nn.Module):
    """Conv features (B, 8, 8, 8) permuted to channel-last (no Swin block to tell), then a Linear mixing the 64
    positions into (B, 8, 10): not a patch grid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.permuted = nn.Conv2d(3, 8, 4, stride=4), Permute()
        self.squeeze = nn.Linear(64, 10)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.permuted(self.conv(x))  # (B, 8, 8, 8): channel-last, but the shapes cannot tell
        mixed = self.squeeze(features.reshape(x.shape[0], 64, 8).transpose(1, 2))  # (B, 8, 10)
        return self.head(mixed.mean(dim=2))


def test_layouts_the_shapes_cannot_tell_are_errors_that_say_what_to_pass():
    model = Odd().eval()
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"could be channel-first .* or channel-last .* pass reshape='channel_first'"):
        CAMExplainer(model, "permuted", "gradcam")(images, class_idx=1)
    maps = CAMExplainer(model, "permuted", "gradcam", reshape="channel_last")(images, class_idx=1, raw=True)
    assert maps["gradcam"].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"8 tokens of 10 features .*patch size \(4, 4\).* pass reshape=<function"):
        CAMExplainer(model, "squeeze", "gradcam")(images, class_idx=1)
    # an explicit function works for the gradient methods; AblationCAM needs a layout it can invert
    as_grid = lambda x: x.reshape(x.shape[0], 8, 2, 5)  # noqa: E731
    maps = CAMExplainer(model, "squeeze", "gradcam", reshape=as_grid)(images, class_idx=1, raw=True)
    assert maps["gradcam"].shape == (2, 1, 2, 5)
    with pytest.raises(ValueError, match="a custom reshape has no inverse"):
        CAMExplainer(model, "squeeze", "ablationcam", reshape=as_grid)(images, class_idx=1)
    with pytest.raises(ValueError, match="reshape must be one of"):
        CAMExplainer(model, "permuted", "gradcam", reshape="nhwc")(images, class_idx=1)


class Logits(nn.Module):
    """MONAI's ViT returns (logits, hidden states): explain the logits (docs/transformers.md)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


@pytest.mark.slow
def test_the_documented_layers_of_the_real_architectures():
    """docs/transformers.md's layers on the real torchvision and MONAI networks (random weights), at their sizes."""
    from monai.networks.nets import ViT
    from torchvision.models import VisionTransformer, swin_t, vit_b_16

    torch.manual_seed(0)
    flat = torch.randn(1, 3, 224, 224)
    vit_s = VisionTransformer(224, 16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536)
    long = VisionTransformer(224, 16, num_layers=24, num_heads=2, hidden_dim=16, mlp_dim=16)  # ViT-L's 24 blocks
    cases = [
        (vit_b_16(), "encoder.layers.encoder_layer_11.ln_1", flat, (14, 14)),
        (vit_s, "encoder.layers.encoder_layer_11.ln_1", flat, (14, 14)),
        (long, "encoder.layers.encoder_layer_23.ln_1", flat, (14, 14)),
        (swin_t(), "features.5", flat, (14, 14)),
        (swin_t(), "features.7", flat, (7, 7)),
        (Logits(ViT(1, 96, 16, spatial_dims=3, classification=True, num_classes=2)), "model.blocks.11.norm1",
         torch.randn(1, 1, 96, 96, 96), (6, 6, 6)),
    ]  # fmt: skip
    for model, layer, images, grid in cases:
        if hasattr(model, "heads"):  # torchvision's ViT initialises its head to zeros: every gradient would be zero
            nn.init.normal_(model.heads.head.weight, std=0.1)
        maps = CAMExplainer(model.eval(), layer, ["gradcam", "hirescam"])(images, class_idx=1, raw=True)
        assert maps["gradcam"].shape == (1, 1, *grid), layer
        assert float(maps["hirescam"].abs().max()) > 0, layer
    segmenters = [
        (UNETR(1, 2, img_size=64), ["vit.blocks.11", "decoder2"]),
        (SwinUNETR(in_channels=1, out_channels=2), ["swinViT.layers3.0.blocks.1", "swinViT.layers4.0", "decoder2"]),
    ]
    volume = torch.randn(1, 1, 64, 64, 64)
    for model, layers in segmenters:
        for layer in layers:
            maps = CAMExplainer(model.eval(), layer, "hirescam")(volume, class_idx=1, pixel_set="image")
            assert maps["hirescam"].shape == volume.shape and float(maps["hirescam"].max()) == pytest.approx(1.0)
