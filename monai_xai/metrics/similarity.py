"""Similarity between a predicted saliency map and a reference heatmap (e.g. radiologists' gaze), following the MIT
saliency benchmark code (cvzoya/saliency ``code_forMetrics``): KL divergence, Pearson CC, SIM and NSS.

The maps must already share one shape (the MIT code resizes the prediction to the reference; do that beforehand).
Each function returns ``(B,)``. Deviations from the MIT code, all NaN with a warning, left out by the ``*Metric``
classes: an all-zero reference (or no fixation, for NSS) is undefined here, where the MIT code returns 0 for KL and
SIM; and the divisions by zero the MIT code itself hits (constant map: std 0 for CC and NSS, max = min for SIM) give
NaN as they do in MATLAB.
"""

from __future__ import annotations

import torch

from monai_xai.metrics.per_sample import PerSampleMetric, check_binary_map, check_saliency, warn_undefined
from monai_xai.utils import check_batch_map

__all__ = [
    "kl_divergence",
    "pearson_cc",
    "similarity_sim",
    "nss",
    "SaliencyKLMetric",
    "SaliencyCCMetric",
    "SaliencySIMMetric",
    "NSSMetric",
]

# MATLAB's eps, as used by the MIT benchmark's KLdiv.m
_MATLAB_EPS = 2.220446049250313e-16


def _flat_pair(saliency: torch.Tensor, reference: torch.Tensor, nonnegative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    saliency = check_saliency(saliency)
    reference = check_saliency(reference, name="reference")
    check_batch_map("reference", reference, saliency)
    if nonnegative and (saliency.min() < 0 or reference.min() < 0):
        raise ValueError(
            "saliency and reference must be non-negative for this metric (they are read as distributions); "
            "rescale them, e.g. with monai_xai.utils.normalize_per_sample."
        )
    dtype = torch.promote_types(saliency.dtype, reference.dtype)
    return saliency.flatten(1).to(dtype), reference.flatten(1).to(dtype)


def _sum_to_one(maps: torch.Tensor) -> torch.Tensor:
    """Divide each row by its sum; all-zero rows stay zero (MIT: ``if any(map(:))``)."""
    total = maps.sum(dim=1, keepdim=True)
    return torch.where(total > 0, maps / torch.where(total > 0, total, 1), maps)


def _min_max_sum_to_one(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MIT ``similarity.m`` normalisation of (B, N) rows: min-max, then divide by the sum.

    Returns the normalised rows and a (B,) flag for constant non-zero rows, where MATLAB divides 0 by 0; all-zero
    rows stay zero.
    """
    low = maps.amin(dim=1, keepdim=True)
    span = maps.amax(dim=1, keepdim=True) - low
    flat = ((span == 0) & (maps != 0).any(dim=1, keepdim=True))[:, 0]
    return _sum_to_one((maps - low) / torch.where(span > 0, span, 1)), flat


def _constant(maps: torch.Tensor) -> torch.Tensor:
    """(B,) True for rows without variance; tested exactly, as a rounded mean would leave tiny non-zero residues."""
    return maps.amax(dim=1) == maps.amin(dim=1)


def _nan_where(undefined: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(values, float("nan")), values)


def _empty_reference(metric: str, reference: torch.Tensor) -> torch.Tensor:
    empty = ~(reference != 0).any(dim=1)
    warn_undefined(metric, empty, "all-zero reference")
    return empty


def kl_divergence(saliency: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL divergence of the saliency distribution P from the reference distribution Q (MIT ``KLdiv.m``).

    ``P = saliency / sum``, ``Q = reference / sum``, ``KL = sum(Q * log(eps + Q / (P + eps)))``, eps = 2.2e-16.
    Lower is better; 0 for identical distributions.

    Args:
        saliency: (B, 1, *spatial) non-negative map.
        reference: (B, 1, *spatial) non-negative reference heatmap.

    Returns:
        (B,) tensor >= 0 (up to eps); NaN where the reference is all zero.
    """
    predicted, target = _flat_pair(saliency, reference, nonnegative=True)
    undefined = _empty_reference("kl_divergence", target)
    predicted, target = _sum_to_one(predicted), _sum_to_one(target)
    divergence = (target * torch.log(_MATLAB_EPS + target / (predicted + _MATLAB_EPS))).sum(dim=1)
    return _nan_where(undefined, divergence)


def pearson_cc(saliency: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Pearson correlation coefficient of the two maps over voxels (MIT ``CC.m``).

    Args:
        saliency: (B, 1, *spatial) real map.
        reference: (B, 1, *spatial) real reference heatmap.

    Returns:
        (B,) tensor in [-1, 1]; NaN where either map is constant (no variance) or the reference is all zero.
    """
    predicted, target = _flat_pair(saliency, reference, nonnegative=False)
    undefined = _constant(predicted) | _constant(target)
    warn_undefined("pearson_cc", undefined, "constant map (zero variance)")
    predicted = predicted - predicted.mean(dim=1, keepdim=True)
    target = target - target.mean(dim=1, keepdim=True)
    norm = (predicted.square().sum(dim=1) * target.square().sum(dim=1)).sqrt()
    return _nan_where(undefined, (predicted * target).sum(dim=1) / torch.where(undefined, 1, norm))


def similarity_sim(saliency: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SIM, histogram intersection (MIT ``similarity.m``): ``sum(min(P, Q))``.

    Each non-zero map is min-max normalised and then divided by its sum (an all-zero saliency map stays zero).

    Args:
        saliency: (B, 1, *spatial) non-negative map.
        reference: (B, 1, *spatial) non-negative reference heatmap.

    Returns:
        (B,) tensor in [0, 1], 1 for identical normalised maps; NaN where the reference is all zero or either map is
        constant and non-zero (max = min).
    """
    predicted, target = _flat_pair(saliency, reference, nonnegative=True)
    empty = _empty_reference("similarity_sim", target)
    (predicted, predicted_flat), (target, target_flat) = _min_max_sum_to_one(predicted), _min_max_sum_to_one(target)
    constant = (predicted_flat | target_flat) & ~empty
    warn_undefined("similarity_sim", constant, "constant non-zero map (max = min)")
    return _nan_where(empty | constant, torch.minimum(predicted, target).sum(dim=1))


def nss(saliency: torch.Tensor, fixations: torch.Tensor) -> torch.Tensor:
    """Normalised scanpath saliency (MIT ``NSS.m``): mean of the z-scored map at the fixated voxels.

    The map is z-scored per sample with the sample standard deviation (N - 1 denominator, MATLAB's ``std``).

    Args:
        saliency: (B, 1, *spatial) real map.
        fixations: (B, 1, *spatial) binary fixation map (bool or 0/1).

    Returns:
        (B,) tensor; NaN where there is no fixation or the map is constant.
    """
    saliency = check_saliency(saliency)
    fixated = check_binary_map("fixations", fixations, saliency).flatten(1)
    heat = saliency.flatten(1)
    std = heat.std(dim=1, keepdim=True)
    count = fixated.sum(dim=1)
    no_fixation = count == 0
    constant = _constant(heat) & ~no_fixation
    warn_undefined("nss", no_fixation, "no fixation")
    warn_undefined("nss", constant, "constant map (zero variance)")
    undefined = no_fixation | constant
    zscore = (heat - heat.mean(dim=1, keepdim=True)) / torch.where(constant[:, None] | (std == 0), 1, std)
    return _nan_where(undefined, (zscore * fixated).sum(dim=1) / count.clamp_min(1))


class SaliencyKLMetric(PerSampleMetric):
    """Cumulative :func:`kl_divergence`: call with ``y_pred=saliency``, ``y=reference`` (both (B, 1, *spatial))."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return kl_divergence(y_pred, y)[:, None]


class SaliencyCCMetric(PerSampleMetric):
    """Cumulative :func:`pearson_cc`: call with ``y_pred=saliency``, ``y=reference`` (both (B, 1, *spatial))."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return pearson_cc(y_pred, y)[:, None]


class SaliencySIMMetric(PerSampleMetric):
    """Cumulative :func:`similarity_sim`: call with ``y_pred=saliency``, ``y=reference`` (both (B, 1, *spatial))."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return similarity_sim(y_pred, y)[:, None]


class NSSMetric(PerSampleMetric):
    """Cumulative :func:`nss`: call with ``y_pred=saliency`` and ``y=fixations`` (both (B, 1, *spatial))."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return nss(y_pred, y)[:, None]
