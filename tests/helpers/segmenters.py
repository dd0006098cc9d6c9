"""A segmentation network whose per-voxel logits are a known function of intensity, for the ROAD and deletion tests."""

from __future__ import annotations

import torch
from torch import nn

GAIN = 10.0


def intensity_logits(images: torch.Tensor) -> torch.Tensor:
    """The hand formula of :func:`intensity_segmenter`: (B, 1, *spatial) -> (B, 3, *spatial) logits
    ``[0, GAIN * (x - 0.5), GAIN * (0.5 - x)]``: class 1 wins where x > 0.5, class 2 where x < 0.5."""
    evidence = GAIN * (images - 0.5)
    return torch.cat([torch.zeros_like(evidence), evidence, -evidence], dim=1)


def intensity_segmenter(spatial_dims: int) -> nn.Module:
    """A 1x1(x1) convolution computing :func:`intensity_logits` voxel by voxel (no context: each voxel's logits
    depend on its own intensity only)."""
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, GAIN, -GAIN]).reshape(3, 1, *([1] * spatial_dims)))
        conv.bias.copy_(torch.tensor([0.0, -GAIN / 2, GAIN / 2]))
    return conv
