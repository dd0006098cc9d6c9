"""2D classification backbones of the published studies, by name, with the layer each study explains.

``classification_backbone("resnet50", num_classes=4)`` builds a torchvision network whose classifier head has
``num_classes`` outputs; bundles take the name as a config id (``"backbone": "resnet50"``), so one bundle trains and
explains every architecture of a comparison. :data:`BACKBONE_CAM_LAYERS` names the layer the studies explain:

=============================  ===========================================  ==========================================
backbone                       CAM layer                                    why
=============================  ===========================================  ==========================================
``resnet18/34/50/101``         ``layer4``                                   the last bottleneck (basic) block's output
``vgg16`` / ``vgg19``          ``features.28`` / ``features.34``            the last convolution
``densenet121``                ``features``                                 the last dense block after its batch norm
``vit_s_16/vit_b_16``          ``encoder.layers.encoder_layer_11.ln_1``     the last block before the class token
``vit_l_16``                   ``encoder.layers.encoder_layer_23.ln_1``     (its patch tokens feed the class token)
=============================  ===========================================  ==========================================

ViT-S/16 is the study's "small" ViT: torchvision's ``VisionTransformer`` with 12 layers, 6 heads, width 384 (torchvision
ships no such preset). Vision transformers take 224 x 224 inputs only.

``pretrained=True`` loads torchvision's ImageNet weights from the torch hub cache (``torch.hub.get_dir()/checkpoints``)
when they are there, or from a given file; nothing is downloaded. Offline without them the network starts from scratch
and one warning says so and where to put the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision import models

__all__ = ["BACKBONES", "BACKBONE_CAM_LAYERS", "classification_backbone", "imagenet_weights_file"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "vgg16": models.vgg16,
    "vgg19": models.vgg19,
    "densenet121": models.densenet121,
    "vit_s_16": partial(
        models.VisionTransformer, image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
        mlp_dim=1536,
    ),
    "vit_b_16": models.vit_b_16,
    "vit_l_16": models.vit_l_16,
}  # fmt: skip

BACKBONES = tuple(_BUILDERS)
BACKBONE_CAM_LAYERS = {
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "resnet101": "layer4",
    "vgg16": "features.28",
    "vgg19": "features.34",
    "densenet121": "features",
    "vit_s_16": "encoder.layers.encoder_layer_11.ln_1",
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "vit_l_16": "encoder.layers.encoder_layer_23.ln_1",
}


def _check_name(backbone: str) -> None:
    if backbone not in _BUILDERS:
        raise ValueError(f"unknown backbone {backbone!r}; available: {list(BACKBONES)}.")


def imagenet_weights_file(backbone: str) -> Path | None:
    """Where torchvision keeps the ImageNet weights of ``backbone`` in the torch hub cache (None: it has none)."""
    _check_name(backbone)
    if backbone == "vit_s_16":
        return None
    url = models.get_model_weights(backbone).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _head(network: nn.Module) -> tuple[nn.Module, str]:
    """The last linear layer of a torchvision classifier and its attribute path."""
    for path in ("fc", "classifier.6", "classifier", "heads.head"):
        module = network.get_submodule(path) if _has(network, path) else None
        if isinstance(module, nn.Linear):
            return module, path
    raise ValueError(f"no classifier head found in {type(network).__name__}.")


def _has(network: nn.Module, path: str) -> bool:
    try:
        network.get_submodule(path)
    except AttributeError:
        return False
    return True


def _load_imagenet(network: nn.Module, backbone: str, pretrained: bool | str | Path) -> None:
    """Load ImageNet weights into ``network`` (its own head size), keeping its head random when the sizes differ."""
    path = imagenet_weights_file(backbone) if pretrained is True else Path(pretrained)
    if path is None or not path.is_file():
        where = f"put the weights file at {path}" if path is not None else "pass a weights file as `pretrained`"
        warnings.warn(
            f"{backbone}: no ImageNet weights here and nothing is downloaded; training from scratch ({where} to "
            "start from ImageNet).",
            stacklevel=3,
        )
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    _, head = _head(network)
    own = network.state_dict()
    keep = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    missing = [k for k in own if k not in keep and not k.startswith(head + ".")]
    if missing:
        raise ValueError(f"{path} does not hold {backbone} weights: {missing[:5]} ... are missing or mis-shaped.")
    network.load_state_dict(keep, strict=False)


def classification_backbone(
    backbone: str, num_classes: int, pretrained: bool | str | Path = False, dropout: float | None = None
) -> nn.Module:
    """A torchvision classifier of 3-channel images with ``num_classes`` outputs.

    Args:
        backbone: one of :data:`BACKBONES`.
        num_classes: outputs of the head (logits).
        pretrained: False (random weights), True (torchvision's ImageNet weights from the torch hub cache when
            present) or a weights file; the head keeps its random weights when its size differs from ImageNet's.
        dropout: dropout before the head of VGG and ViT (their builders' own default when None).

    Returns:
        the network: (B, 3, H, W) -> (B, num_classes); vision transformers need H = W = 224.

    Raises:
        ValueError: an unknown backbone, or a weights file of another architecture.
    """
    _check_name(backbone)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    kwargs = {} if dropout is None or backbone.startswith(("resnet", "densenet")) else {"dropout": dropout}
    network = _BUILDERS[backbone](num_classes=num_classes, **kwargs)
    if pretrained:
        _load_imagenet(network, backbone, pretrained)
    return network
