"""Input attributions as first-class methods of the method registry (family ``ATTRIBUTION``), through Captum.

Saliency, Input x Gradient, Integrated Gradients, Blur IG, SmoothGrad, VarGrad, GradientSHAP, DeepLift, Occlusion,
FeatureAblation and KernelSHAP take the same targets as the CAMs (a class, a class set, any pixel set), 2D and 3D,
batched, with the sliding window; they need no target layer and give a signed (B, C, *spatial) attribution per input
channel, reduced to the CAMs' (B, 1, *spatial) [0, 1] maps by :func:`attribution_map`. Modules: ``settings``
(:class:`AttributionSettings`, config ``xai_attribution``), ``score`` (the summing target as a network), ``methods``
and ``blur_ig`` (the formulas), ``features`` (supervoxels, predicted structures), ``cost`` (the budget),
``reduction`` (maps and per-channel shares), ``explainer`` (:class:`AttributionExplainer`).
"""

from monai_xai.cams.attributions import blur_ig, methods  # noqa: F401  (registers the methods)
from monai_xai.cams.attributions.cost import AttributionBudgetExceeded, AttributionCost, check_budget, estimate_cost
from monai_xai.cams.attributions.explainer import AttributionExplainer, windows_per_image
from monai_xai.cams.attributions.features import feature_groups
from monai_xai.cams.attributions.reduction import attribution_map, channel_shares
from monai_xai.cams.attributions.registry import AttributionMethod, attribution_method
from monai_xai.cams.attributions.score import AttributionContext, TargetScore
from monai_xai.cams.attributions.settings import DEFAULT_MAX_VOXEL_PASSES, AttributionSettings, FeatureGroups

__all__ = [
    "DEFAULT_MAX_VOXEL_PASSES",
    "AttributionBudgetExceeded",
    "AttributionContext",
    "AttributionCost",
    "AttributionExplainer",
    "AttributionMethod",
    "AttributionSettings",
    "FeatureGroups",
    "TargetScore",
    "attribution_map",
    "attribution_method",
    "channel_shares",
    "check_budget",
    "estimate_cost",
    "feature_groups",
    "windows_per_image",
]
