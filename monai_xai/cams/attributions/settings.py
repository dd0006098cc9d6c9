"""The settings of the input-attribution methods, as one checked record: :class:`AttributionSettings`.

Configs give them as one dict (``xai_attribution``, e.g. ``{"steps": 64, "occlusion_window": 12}``); every key has a
default that explains a 3D volume of the demo's size in seconds to a minute on a CPU. Settings that only some methods
read are ignored by the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

__all__ = ["AttributionSettings", "FeatureGroups", "DEFAULT_MAX_VOXEL_PASSES"]

# the budget's default: (forward + backward passes of one image) x its voxels, summed over methods (see cost.py);
# 1e10 is e.g. Integrated Gradients with 64 steps of 80 windows of 96^3, or Occlusion of a 96^3 volume with 8^3 windows
# side by side (1728 passes), and refuses that Occlusion of a 256 x 256 x 160 volume (20480 passes of 1e7 voxels)
DEFAULT_MAX_VOXEL_PASSES = 1e10


class FeatureGroups(StrEnum):
    """The groups of voxels the feature methods (FeatureAblation, KernelSHAP) remove together, per input channel.

    - ``GRID``: supervoxels as a regular grid of ``feature_grid`` blocks per spatial dim;
    - ``PREDICTION``: the structures of the network's own label map (argmax over classes, background included):
      organ-level attributions of a multi-class segmenter (a classifier has one structure, the whole image).
    """

    GRID = "grid"
    PREDICTION = "prediction"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"xai_attribution {name!r} must be a positive int, got {value!r}.")
    return value


def _sizes(value: Any, name: str) -> int | tuple[int, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        entries = tuple(value)
        if entries and all(not isinstance(v, bool) and isinstance(v, int) and v >= 1 for v in entries):
            return entries
    elif not isinstance(value, bool) and isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"xai_attribution {name!r} must be a positive int or one per spatial dim, got {value!r}.")


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"xai_attribution {name!r} must be a number >= 0, got {value!r}.")
    return float(value)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"xai_attribution {name!r} must be a number, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class AttributionSettings:
    """How the input-attribution methods run (config id ``xai_attribution``, one dict of these keys).

    Attributes:
        steps: path steps of Integrated Gradients (Gauss-Legendre, Captum's default rule) and Blur IG.
        samples: noisy copies of SmoothGrad and VarGrad, random baselines of GradientSHAP.
        noise: SmoothGrad/VarGrad/GradientSHAP noise standard deviation, as a fraction of each image's intensity
            range (max - min), 0.15 as in the SmoothGrad paper.
        baseline: the constant image IG, Occlusion, FeatureAblation, KernelSHAP, DeepLift and GradientSHAP compare
            with (0: a black image; e.g. the background value of normalised MR).
        blur_sigma: the Gaussian blur (voxels) of Blur IG's path start, the most blurred image.
        occlusion_window: Occlusion's window, voxels per spatial dim (an int for all dims); each input channel is
            occluded on its own, so the attribution says which channel carried the evidence.
        occlusion_stride: Occlusion's stride between windows (voxels), at most the window; None: the window (windows
            side by side).
        features: the feature groups of FeatureAblation and KernelSHAP (:class:`FeatureGroups`).
        feature_grid: blocks per spatial dim of ``features="grid"``.
        shap_samples: KernelSHAP's coalitions per image.
        max_voxel_passes: the budget: a request whose estimated (forward + backward passes of one image) x voxels
            exceeds it is refused before it starts, with the estimate (:mod:`monai_xai.cams.attributions.cost`).
    """

    steps: int = 32
    samples: int = 16
    noise: float = 0.15
    baseline: float = 0.0
    blur_sigma: float = 8.0
    occlusion_window: int | tuple[int, ...] = 8
    occlusion_stride: int | tuple[int, ...] | None = None
    features: FeatureGroups = FeatureGroups.GRID
    feature_grid: int | tuple[int, ...] = 4
    shap_samples: int = 128
    max_voxel_passes: float = DEFAULT_MAX_VOXEL_PASSES

    def __post_init__(self) -> None:
        checks = {
            "steps": _positive_int,
            "samples": _positive_int,
            "noise": _non_negative,
            "baseline": _number,
            "blur_sigma": _non_negative,
            "occlusion_window": _sizes,
            "feature_grid": _sizes,
            "shap_samples": _positive_int,
            "max_voxel_passes": _non_negative,
        }
        for name, check in checks.items():
            object.__setattr__(self, name, check(getattr(self, name), name))
        if self.occlusion_stride is not None:
            object.__setattr__(self, "occlusion_stride", _sizes(self.occlusion_stride, "occlusion_stride"))
        try:
            object.__setattr__(self, "features", FeatureGroups(self.features))
        except ValueError:
            allowed = [member.value for member in FeatureGroups]
            raise ValueError(f"xai_attribution 'features' must be one of {allowed}, got {self.features!r}.") from None

    @classmethod
    def of(cls, value: AttributionSettings | Mapping[str, Any] | None) -> AttributionSettings:
        """The settings from a config's dict (unknown keys refused, naming the known ones), None (the defaults) or
        settings as they are."""
        if value is None:
            return cls()
        if isinstance(value, AttributionSettings):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"xai_attribution must be a dict of attribution settings, got {type(value).__name__}.")
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"xai_attribution has unknown key(s) {unknown}; known: {known}.")
        return cls(**value)
