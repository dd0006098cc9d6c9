"""Signed input attributions made comparable with CAMs, and their share per input channel.

An attribution method returns a signed (B, C, *spatial) map of any range, one channel per input channel. The metrics,
writers and reports take (B, 1, *spatial) maps in [0, 1], so every attribution is reduced the same documented way
(:func:`attribution_map`): the absolute value (evidence for and against the explained score both count as
relevance, as in the SmoothGrad and Integrated Gradients papers' figures), summed over input channels, divided by
its maximum per image (0 stays 0, so a voxel's value is its share of the peak; an all-zero map stays zero).
The signed map is kept beside it (``Explanation.attributions``, engine key ``xai_attribution_<method>``) for the
writers that want it.

:func:`channel_shares` says which input channel (MRI sequence) carried the attribution: per image and channel, the
channel's share of the absolute attribution inside a region.
"""

from __future__ import annotations

import torch

__all__ = ["attribution_map", "channel_shares"]


def attribution_map(attributions: torch.Tensor) -> torch.Tensor:
    """The (B, 1, *spatial) map in [0, 1] of signed attributions (see the module docstring).

    m(s) = sum_c |a_c(s)| / max_s' sum_c |a_c(s')|   (0 where the maximum is 0)

    Args:
        attributions: (B, C, *spatial) signed attributions.

    Returns:
        (B, 1, *spatial) in the attributions' dtype.
    """
    relevance = attributions.abs().sum(dim=1, keepdim=True)
    peak = relevance.flatten(1).amax(dim=1).reshape(-1, *([1] * (relevance.ndim - 1)))
    return torch.where(peak > 0, relevance / peak.clamp_min(torch.finfo(relevance.dtype).tiny), 0.0)


def channel_shares(attributions: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Each input channel's share of the absolute attribution inside a region, per image.

    share_c = sum_{s in R} |a_c(s)| / sum_c' sum_{s in R} |a_c'(s)|

    Args:
        attributions: (B, C, *spatial) signed attributions.
        region: (B or 1, 1, *spatial) bool or weights in [0, 1] (e.g. the explained pixel set, a ground-truth
            mask); None: the whole image.

    Returns:
        (B, C) float64 shares summing to 1 per image; NaN for an image with no attribution in the region.

    Raises:
        ValueError: a region that is not one channel on the attributions' grid.
    """
    relevance = attributions.detach().abs().double()
    if region is not None:
        weights = torch.as_tensor(region).to(relevance.device, torch.float64)
        if weights.ndim != relevance.ndim or weights.shape[1] != 1 or weights.shape[2:] != relevance.shape[2:]:
            raise ValueError(
                f"region must be (B or 1, 1, *spatial) on the attributions' grid {tuple(relevance.shape)}, got "
                f"{tuple(weights.shape)}."
            )
        relevance = relevance * weights
    per_channel = relevance.flatten(2).sum(dim=2)
    total = per_channel.sum(dim=1, keepdim=True)
    return torch.where(total > 0, per_channel / total.clamp_min(1e-300), torch.nan)
