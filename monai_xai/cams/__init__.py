"""Class-activation maps for MONAI networks: N-D (2D and 3D), batched, classification and segmentation targets.

Every method is registered once with its family and needs (:mod:`monai_xai.cams.registry`); the formulas are in
:mod:`~monai_xai.cams.methods` (gradient family) and :mod:`~monai_xai.cams.perturbation`; input attributions
(Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP, ... through Captum) in :mod:`~monai_xai.cams.attributions`.
"""

from monai_xai.cams.attributions import AttributionExplainer, AttributionSettings, attribution_map, channel_shares
from monai_xai.cams.controls import CONTROL_METHODS
from monai_xai.cams.explainer import CAMExplainer
from monai_xai.cams.hooks import ActivationRecorder
from monai_xai.cams.layer_choice import LayerChoice, choose_target_layer
from monai_xai.cams.layers import LayerSpec, group_methods_by_layer, resolve_layers
from monai_xai.cams.methods import GRADIENT_METHODS
from monai_xai.cams.model_mode import pinned_modes, resolve_model_mode
from monai_xai.cams.outputs import OutputHandling, ScoredNetwork, scored_network
from monai_xai.cams.perturbation import PERTURBATION_METHODS, ablationcam, scorecam
from monai_xai.cams.registry import CAMMethod, get_method, get_methods, method_names, register_method
from monai_xai.cams.sliding_window import sliding_window_cam
from monai_xai.cams.targets import (
    ClassSet,
    ClassTarget,
    SegmentationTarget,
    as_class_choice,
    as_pixel_set_choice,
    build_target,
    resolve_pixel_set,
)
from monai_xai.utils import preserved_model_state

__all__ = [
    "CONTROL_METHODS",
    "AttributionExplainer",
    "AttributionSettings",
    "attribution_map",
    "channel_shares",
    "CAMExplainer",
    "CAMMethod",
    "register_method",
    "get_method",
    "get_methods",
    "method_names",
    "GRADIENT_METHODS",
    "PERTURBATION_METHODS",
    "scorecam",
    "ablationcam",
    "sliding_window_cam",
    "ActivationRecorder",
    "preserved_model_state",
    "resolve_layers",
    "group_methods_by_layer",
    "LayerSpec",
    "LayerChoice",
    "choose_target_layer",
    "ClassSet",
    "ClassTarget",
    "SegmentationTarget",
    "build_target",
    "resolve_pixel_set",
    "as_class_choice",
    "as_pixel_set_choice",
    "pinned_modes",
    "resolve_model_mode",
    "OutputHandling",
    "ScoredNetwork",
    "scored_network",
]
