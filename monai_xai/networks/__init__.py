"""Networks of the published studies: 2D backbones and 3D segmenters by name, the layers they are explained at, their
calibration."""

from monai_xai.networks.backbones import (
    BACKBONE_CAM_LAYERS,
    BACKBONES,
    classification_backbone,
    imagenet_weights_file,
)
from monai_xai.networks.calibration import TEMPERATURE_FILE, is_calibrated, load_temperature, scale_logits
from monai_xai.networks.gaze import DENSENET201_BLOCKS, GAZE_CAM_LAYER, GazeSaliencyNet, gaze_map
from monai_xai.networks.gaze_losses import GazeKLLoss, TripletLoss, gaze_kl_loss, triplet_loss
from monai_xai.networks.pooling import GlobalLPPool, with_global_lp_pool
from monai_xai.networks.segmenters import SEGMENTERS, patch_divisor, segmentation_cam_layer, segmentation_network

__all__ = [
    "BACKBONES",
    "BACKBONE_CAM_LAYERS",
    "classification_backbone",
    "imagenet_weights_file",
    "TEMPERATURE_FILE",
    "is_calibrated",
    "load_temperature",
    "scale_logits",
    "GlobalLPPool",
    "with_global_lp_pool",
    "SEGMENTERS",
    "patch_divisor",
    "segmentation_cam_layer",
    "segmentation_network",
    "DENSENET201_BLOCKS",
    "GAZE_CAM_LAYER",
    "GazeKLLoss",
    "GazeSaliencyNet",
    "TripletLoss",
    "gaze_kl_loss",
    "gaze_map",
    "triplet_loss",
]
