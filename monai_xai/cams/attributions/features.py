"""Feature groups of FeatureAblation and KernelSHAP: which voxels of which input channel are removed together.

Each input channel has its own groups (group ids of channel c follow those of channel c - 1), so a group's attribution
says which channel carried the evidence (per-channel attribution of multi-sequence MRI). Two kinds
(:class:`~monai_xai.cams.attributions.settings.FeatureGroups`):

- ``"grid"``: supervoxels as a regular grid, ``feature_grid`` blocks per spatial dim (block of voxel i along a dim
  of size n: ``floor(i * blocks / n)``), the same for every image;
- ``"prediction"``: the structures of the network's own label map (argmax over its classes, background included;
  logit > 0 for one output channel), so a multi-class segmenter's Shapley values are per organ; a classifier's image
  is one structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_xai.cams.attributions.settings import AttributionSettings, FeatureGroups

__all__ = ["feature_groups", "groups_per_channel"]


def _blocks(settings: AttributionSettings, spatial: Sequence[int]) -> tuple[int, ...]:
    grid = settings.feature_grid
    blocks = (grid,) * len(spatial) if isinstance(grid, int) else tuple(grid)
    if len(blocks) != len(spatial):
        raise ValueError(f"xai_attribution 'feature_grid' {grid!r} needs one int per spatial dim of {tuple(spatial)}.")
    return tuple(min(b, size) for b, size in zip(blocks, spatial))


def groups_per_channel(settings: AttributionSettings, spatial: Sequence[int], outputs_shape: Sequence[int]) -> int:
    """The number of feature groups of one input channel: the grid's blocks, or the structures a network with
    outputs of shape ``outputs_shape`` can predict (its classes; 2 for one output channel; 1 for a classifier)."""
    if settings.features == FeatureGroups.GRID:
        return math.prod(_blocks(settings, spatial))
    if len(outputs_shape) == 2:
        return 1
    return max(int(outputs_shape[1]), 2)


def _grid_labels(settings: AttributionSettings, spatial: Sequence[int], device: torch.device) -> torch.Tensor:
    """(*spatial) long block index of every voxel, blocks numbered in C order."""
    blocks = _blocks(settings, spatial)
    labels = torch.zeros(tuple(spatial), dtype=torch.long, device=device)
    for dim, (size, count) in enumerate(zip(spatial, blocks)):
        index = torch.arange(size, device=device) * count // size
        labels = labels * count + index.reshape(*([1] * dim), size, *([1] * (len(spatial) - dim - 1)))
    return labels


def _predicted_labels(outputs: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """(B, *spatial) long label map of a segmenter's (B, K, *spatial) outputs; zeros for a classifier's (B, K)."""
    if outputs.ndim == 2:
        return torch.zeros(outputs.shape[0], *spatial, dtype=torch.long, device=outputs.device)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(dim=1)


def feature_groups(settings: AttributionSettings, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) long feature group of every input channel and voxel (see the module docstring).

    Args:
        settings: ``features`` and ``feature_grid``.
        images: (B, C, *spatial) the explained images.
        outputs: the network's outputs on them: (B, K) (classifier) or (B, K, *spatial) (segmenter).

    Returns:
        ids 0 .. C * G - 1, G = :func:`groups_per_channel`; channel c holds c * G .. (c + 1) * G - 1.

    Raises:
        ValueError: ``"prediction"`` groups of a segmenter whose outputs are not on the images' grid.
    """
    batch, channels, spatial = images.shape[0], images.shape[1], tuple(images.shape[2:])
    if settings.features == FeatureGroups.GRID:
        labels = _grid_labels(settings, spatial, images.device).expand(batch, *spatial)
    else:
        if outputs.ndim > 2 and tuple(outputs.shape[2:]) != spatial:
            raise ValueError(
                f"feature groups 'prediction' need the network's label map on the images' grid: outputs "
                f"{tuple(outputs.shape)}, images {tuple(images.shape)}; use xai_attribution features 'grid'."
            )
        labels = _predicted_labels(outputs.detach(), spatial)
    per_channel = groups_per_channel(settings, spatial, tuple(outputs.shape))
    offsets = torch.arange(channels, device=images.device).reshape(1, channels, *([1] * len(spatial))) * per_channel
    return labels[:, None] + offsets
