"""Tiny networks for the CAM tests: fast on a 2-core CPU, with layer names the tests (and users' configs) refer to.

- ``TinyResNet(spatial_dims)``: ResNet-like classifier, stages ``layer1`` .. ``layer4`` (``layer4`` at 1/4 input size).
- ``tiny_unet3d()``: a MONAI ``UNet`` segmenter (1 input channel, 2 output classes).
- ``KnownRegionNet(spatial_size, region)``: its logits depend only on the features inside the box ``region``; the
  module ``region`` multiplies the features by a fixed box mask, so a correct CAM of layer ``"region"`` peaks inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["TinyResNet", "KnownRegionNet", "RegionMask", "tiny_unet3d", "box_mask"]


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def _norm(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a (projected) shortcut, then ReLU; as in torchvision's ResNet."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        conv, norm = _conv(spatial_dims), _norm(spatial_dims)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """ResNet-like classifier for (B, in_channels, *spatial) inputs, 2D or 3D.

    Feature sizes: ``layer1`` full, ``layer2`` 1/2, ``layer3`` and ``layer4`` 1/4 of the input size. It has BatchNorm
    and Dropout, so train and eval modes give different outputs (the tests check that the explainer restores the mode).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        conv, norm = _conv(spatial_dims), _norm(spatial_dims)
        self.stem = nn.Sequential(conv(in_channels, width, 3, padding=1, bias=False), norm(width), nn.ReLU())
        self.layer1 = BasicBlock(spatial_dims, width, width, stride=1)
        self.layer2 = BasicBlock(spatial_dims, width, 2 * width, stride=2)
        self.layer3 = BasicBlock(spatial_dims, 2 * width, 4 * width, stride=2)
        self.layer4 = BasicBlock(spatial_dims, 4 * width, 8 * width, stride=1)
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.dropout(self.pool(features).flatten(1)))


def tiny_unet3d(in_channels: int = 1, out_channels: int = 2) -> UNet:
    """A 3-level MONAI UNet, e.g. for 16^3 inputs; ``model.1.submodule`` is its bottom (1/4 resolution)."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=(4, 8, 16), strides=(2, 2))


def box_mask(spatial_size: Sequence[int], region: Sequence[slice]) -> torch.Tensor:
    """(1, 1, *spatial_size) float mask, 1 inside the box ``region`` (one slice per spatial dim), 0 elsewhere."""
    mask = torch.zeros(1, 1, *spatial_size)
    mask[(slice(None), slice(None), *region)] = 1.0
    return mask


class RegionMask(nn.Module):
    """Multiplies (B, K, *spatial) features by a fixed (1, 1, *spatial) 0/1 mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features * self.mask


class KnownRegionNet(nn.Module):
    """Classifier whose logits depend only on the input near ``region``: nothing outside can change the decision.

    ``features`` (two 3x3 convs + ReLU, non-negative, full resolution) -> ``region`` (zero outside the box) -> global
    average pooling -> linear head with positive weights. Every class score therefore increases with every feature
    inside the box, so each CAM method's map of layer ``"region"`` is zero outside the box and positive inside it.

    Args:
        spatial_size: input spatial size, e.g. (24, 24) or (12, 12, 12).
        region: one slice per spatial dim, the box the decision depends on.
    """

    def __init__(
        self, spatial_size: Sequence[int], region: Sequence[slice], in_channels: int = 1, num_classes: int = 2
    ) -> None:
        super().__init__()
        spatial_dims = len(spatial_size)
        conv = _conv(spatial_dims)
        width = 6
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1), nn.ReLU(), conv(width, width, 3, padding=1), nn.ReLU()
        )
        self.region = RegionMask(box_mask(spatial_size, region))
        self.fc = nn.Linear(width, num_classes)
        with torch.no_grad():
            self.fc.weight.abs_().add_(0.1)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.region(self.features(x)).flatten(2).mean(dim=2)
        return self.fc(pooled)
