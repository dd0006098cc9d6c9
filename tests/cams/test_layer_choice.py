"""choose_target_layer: the documented layer on torchvision classifiers and ViTs and on MONAI segmenters, a clear
error where no rule applies, and XAIInferer explaining the chosen layer when none is given."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
import torchvision
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import UNETR, SegResNet, SwinUNETR, UNet
from torch import nn

from monai_xai.cams import CAMExplainer, LayerChoice, choose_target_layer
from monai_xai.inferers import XAIInferer
from monai_xai.networks import BACKBONE_CAM_LAYERS, segmentation_cam_layer
from tests.helpers.engines import case_dataset, collect_outputs, make_evaluator


def small_vit() -> nn.Module:
    """torchvision's VisionTransformer with 2 blocks on 32 x 32 images (4 x 4 patches of 8)."""
    network = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    # torchvision starts the head at zero, which would leave every gradient (and every Grad-CAM) at zero
    nn.init.normal_(network.heads.head.weight)
    return network


def small_unet() -> nn.Module:
    return UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def small_segresnet() -> nn.Module:
    return SegResNet(
        3,
        init_filters=8,
        in_channels=1,
        out_channels=2,
        blocks_down=(1, 1, 1),
        blocks_up=(1, 1),
        norm=("group", {"num_groups": 4}),
    )


def small_swinunetr() -> nn.Module:
    # batch norm: instance norm refuses the 1 x 1 x 1 bottleneck of a 32^3 input
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3, norm_name="batch")


def small_unetr() -> nn.Module:
    return UNETR(1, 2, img_size=32, feature_size=4, hidden_size=24, mlp_dim=48, num_heads=2)


CLASSIFIERS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet18": (torchvision.models.resnet18, BACKBONE_CAM_LAYERS["resnet18"]),
    "densenet121": (torchvision.models.densenet121, BACKBONE_CAM_LAYERS["densenet121"]),
    # the last convolution, not `features`, whose output is the last max-pool's at half the grid
    "vgg16": (torchvision.models.vgg16, BACKBONE_CAM_LAYERS["vgg16"]),
}
SEGMENTERS = {"unet": small_unet, "segresnet": small_segresnet, "swinunetr": small_swinunetr}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifiers_explain_the_last_layer_before_global_pooling(name):
    build, expected = CLASSIFIERS[name]
    network = build().train()
    choice = choose_target_layer(network, torch.randn(1, 3, 64, 64))
    assert choice == LayerChoice(expected, "classifier: the last layer with spatial extent before global pooling")
    assert all(module.training for module in network.modules())  # the mode is restored


def test_vit_explains_the_first_norm_of_the_last_block():
    assert BACKBONE_CAM_LAYERS["vit_b_16"] == "encoder.layers.encoder_layer_11.ln_1"  # the same rule at 12 blocks
    choice = choose_target_layer(small_vit(), torch.randn(1, 3, 32, 32))
    assert choice.name == "encoder.layers.encoder_layer_1.ln_1"
    assert choice.reason.startswith("transformer classifier: the first LayerNorm of the last block")


@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_segmenters_explain_their_documented_decoder_layer(name):
    network = SEGMENTERS[name]()
    choice = choose_target_layer(network, torch.randn(1, 1, 32, 32, 32))
    assert choice.name == segmentation_cam_layer(network)
    assert choice.reason == "segmenter: the last decoder stage before the output head, at its finest grid"


def test_unetr_explains_its_last_decoder_stage():
    # decoder2: feature_size maps at the input grid, the input of the output block `out`
    assert choose_target_layer(small_unetr(), torch.randn(1, 1, 32, 32, 32)).name == "decoder2"


@pytest.mark.parametrize(
    "build, images, class_idx",
    [
        (torchvision.models.resnet18, torch.randn(2, 3, 64, 64), None),
        (small_vit, torch.randn(2, 3, 32, 32), None),
        (small_unet, torch.randn(1, 1, 32, 32, 32), 1),
        (small_segresnet, torch.randn(1, 1, 32, 32, 32), 1),
    ],
    ids=["resnet18", "vit", "unet", "segresnet"],
)
def test_the_chosen_layer_gives_a_non_flat_gradcam(build, images, class_idx):
    torch.manual_seed(0)
    network = build().eval()
    layer = choose_target_layer(network, images[:1]).name
    # segmenters: the class summed over the whole image, so the target does not hang on a random net's prediction
    pixel_set = None if class_idx is None else "image"
    maps = CAMExplainer(network, layer, ["gradcam"])(images, class_idx=class_idx, pixel_set=pixel_set)["gradcam"]
    assert maps.shape == (images.shape[0], 1, *images.shape[2:])
    assert all(float(case.std()) > 1e-3 for case in maps)


def test_no_rule_says_to_set_the_layer():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(
        ValueError, match=r"no layer to explain could be chosen.*set xai_target_layer.*\['0', '1', '2'\]"
    ):
        choose_target_layer(mlp, torch.randn(2, 8))


def test_inferer_without_a_layer_explains_the_chosen_one(caplog):
    network = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    inferer = XAIInferer(SimpleInferer(), None, ["gradcam"])
    with caplog.at_level(logging.INFO, logger="monai_xai.explanation.step"):
        outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer]))
    assert inferer.chosen_layer is not None and inferer.chosen_layer.name == "layer4"
    assert (
        "xai: explaining layer 'layer4' (classifier: the last layer with spatial extent before global pooling)"
        in caplog.messages
    )
    expected = CAMExplainer(network, "layer4", ["gradcam"])(images)["gradcam"]
    for index, case in enumerate(outputs):
        torch.testing.assert_close(case["saliency_gradcam"].as_tensor(), expected[index], atol=1e-5, rtol=1e-4)


def test_sliding_window_inferer_chooses_on_one_window():
    network = small_unet().eval()
    inferer = XAIInferer(SlidingWindowInferer(roi_size=(32, 32, 32)), "", ["gradcam"], class_idx=1)
    shapes = []
    network.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    maps = inferer.explain(torch.randn(2, 1, 48, 40, 24), network, torch.randn(2, 2, 48, 40, 24))
    assert inferer.chosen_layer.name == "model.1.submodule"
    assert shapes[0] == (1, 1, 32, 32, 32)  # one case, cropped (and padded) to the window
    assert maps["saliency_gradcam"].shape == (2, 1, 48, 40, 24)
