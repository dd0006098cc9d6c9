"""Networks of the published studies (backbones by name, with the layers they are explained at)."""

from monai_xai.networks.backbones import (
    BACKBONE_CAM_LAYERS,
    BACKBONES,
    classification_backbone,
    imagenet_weights_file,
)

__all__ = ["BACKBONES", "BACKBONE_CAM_LAYERS", "classification_backbone", "imagenet_weights_file"]
