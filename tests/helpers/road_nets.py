"""Tiny classifiers for the ROAD tests: a conv net (2D or 3D) and one whose decision depends on one region only."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 3, gain: float = 20.0) -> nn.Module:
    """Conv -> ReLU -> global pooling on a 2x2(x2) grid -> linear; ``gain`` scales the last layer so that score
    changes are far above float32 rounding. Dropout makes a forward pass in train mode random."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    head = nn.Linear(4 * 2**spatial_dims, num_classes)
    with torch.no_grad():
        head.weight.mul_(gain)
    return nn.Sequential(conv(in_channels, 4, 3, padding=1), nn.ReLU(), pool(2), nn.Flatten(), nn.Dropout(0.5), head)


class RegionMeanClassifier(nn.Module):
    """Two classes: logit 1 is ``scale * (mean of channel 0 inside region - 0.5)``, logit 0 is zero.

    The decision depends on the pixels of ``region`` only, so removing exactly that region is what a faithful
    saliency map should make ROAD do first.

    Args:
        region: (*spatial) bool tensor.
        scale: logit gain.
    """

    def __init__(self, region: torch.Tensor, scale: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x[:, 0] * self.region).flatten(1).sum(dim=1) / self.region.sum()
        evidence = self.scale * (inside - 0.5)
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)
