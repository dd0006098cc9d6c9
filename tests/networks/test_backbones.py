"""The study backbones: built by name with the head size asked for, explained at the documented layer, and
ImageNet weights loaded from a local file only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_xai.cams import CAMExplainer, resolve_layers
from monai_xai.networks import BACKBONE_CAM_LAYERS, BACKBONES, classification_backbone, imagenet_weights_file


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_has_its_head_and_cam_layer(backbone: str) -> None:
    with torch.device("meta"):  # shapes only: ViT-L has 300M parameters
        network = classification_backbone(backbone, num_classes=7)
        logits = network(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, 7)
    resolve_layers(network, BACKBONE_CAM_LAYERS[backbone])


@pytest.mark.parametrize(("backbone", "size"), [("vgg16", 64), ("densenet121", 128), ("vit_s_16", 224)])
def test_documented_layer_gives_a_map_that_depends_on_the_image(backbone: str, size: int) -> None:
    """At the documented layer the explained score has a gradient (for a ViT: the patch tokens before the last
    attention, not after it), so Grad-CAM is neither empty nor flat."""
    network = classification_backbone(backbone, num_classes=3).eval()
    if backbone == "vit_s_16":  # torchvision zero-initialises the head: give it weights so the score has a gradient
        torch.nn.init.normal_(network.heads.head.weight)
    explainer = CAMExplainer(network, BACKBONE_CAM_LAYERS[backbone], ["gradcam"])
    maps = explainer(torch.randn(2, 3, size, size), class_idx=torch.tensor([0, 2]))["gradcam"]
    assert maps.shape == (2, 1, size, size)
    # a random network may give one class an all-negative (so empty) map; a layer without gradient gives only those
    assert torch.isfinite(maps).all() and (maps.flatten(1).std(dim=1) > 0).any()


def _imagenet_file(path: Path, backbone: str = "resnet18") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(classification_backbone(backbone, num_classes=1000).state_dict(), path)
    return path


def test_pretrained_weights_come_from_a_local_file_and_keep_a_new_head(tmp_path: Path) -> None:
    source = _imagenet_file(tmp_path / "resnet18.pth")
    expected = torch.load(source, weights_only=True)
    network = classification_backbone("resnet18", num_classes=4, pretrained=source)
    assert torch.equal(network.conv1.weight, expected["conv1.weight"])
    assert torch.equal(network.layer4[1].bn2.running_var, expected["layer4.1.bn2.running_var"])
    assert network.fc.weight.shape == (4, 512)  # the 1000-class head is not forced onto a 4-class network
    with pytest.raises(ValueError, match=r"does not hold vgg16 weights"):
        classification_backbone("vgg16", num_classes=4, pretrained=source)


def test_pretrained_from_the_hub_cache_or_from_scratch_with_one_warning(tmp_path: Path) -> None:
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        cached = imagenet_weights_file("resnet18")
        assert cached == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        with pytest.warns(UserWarning, match=r"training from scratch \(put the weights file at .*resnet18-f37072fd"):
            classification_backbone("resnet18", num_classes=2, pretrained=True)
        expected = torch.load(_imagenet_file(cached), weights_only=True)["conv1.weight"]
        assert torch.equal(classification_backbone("resnet18", num_classes=2, pretrained=True).conv1.weight, expected)
    finally:
        torch.hub.set_dir(previous)


def test_bad_names_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet49'.*resnet50"):
        classification_backbone("resnet49", num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        classification_backbone("resnet18", num_classes=0)
