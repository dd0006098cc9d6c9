"""3D segmenters by name: each builds, maps a patch to class logits of the same grid, and has its CAM layer."""

from __future__ import annotations

import pytest
import torch

from monai_xai.networks import SEGMENTERS, patch_divisor, segmentation_cam_layer, segmentation_network

# small versions of each network and a patch they can down-sample: (options, patch, CAM layer's output shape)
SMALL = {
    "unet": ({"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}, (16, 16, 8), (4, 8, 8, 4)),
    "segresnet": ({"init_filters": 8}, (16, 16, 8), (8, 16, 16, 8)),
    "swinunetr": ({"feature_size": 12, "depths": [1, 1, 1, 1]}, (64, 64, 32), (12, 64, 64, 32)),
}


@pytest.mark.parametrize("name", SEGMENTERS)
def test_each_network_maps_a_patch_to_class_logits_and_names_its_cam_layer(name: str) -> None:
    options, patch, layer_shape = SMALL[name]
    network = segmentation_network(name, in_channels=1, out_channels=4, patch_size=patch, options=options).eval()
    layer = segmentation_cam_layer(network)
    shapes = {}
    network.get_submodule(layer).register_forward_hook(
        lambda _module, _args, output: shapes.update(layer=tuple(output.shape[1:]))
    )
    with torch.no_grad():
        logits = network(torch.rand(1, 1, *patch))
    assert logits.shape == (1, 4, *patch)
    assert shapes["layer"] == layer_shape


def test_patch_divisor_follows_the_down_sampling() -> None:
    assert patch_divisor("unet") == 16 and patch_divisor("unet", {"strides": [2, 2]}) == 4
    assert patch_divisor("segresnet") == 8 and patch_divisor("swinunetr") == 32


def test_a_patch_the_network_cannot_down_sample_is_refused_with_a_size_that_fits() -> None:
    with pytest.raises(
        ValueError, match=r"swinunetr needs .* multiples of 32, got \[160, 160, 80\]; .*\[160, 160, 96\]"
    ):
        segmentation_network("swinunetr", patch_size=(160, 160, 80))
    with pytest.raises(
        ValueError, match=r"unknown network_name 'vnet'; available: \['unet', 'segresnet', 'swinunetr'\]"
    ):
        segmentation_network("vnet")
    with pytest.raises(ValueError, match="no CAM layer known for Linear"):
        segmentation_cam_layer(torch.nn.Linear(2, 2))
