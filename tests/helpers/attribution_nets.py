"""Networks and phantoms for the input-attribution tests.

- ``conv_classifier(spatial_dims, in_channels, activation)``: conv - activation - conv - activation - pool - linear,
  each non-linearity its own module (Captum's DeepLift needs that; TinyResNet reuses one ReLU and is refused).
- ``two_channel_phantom(...)`` and ``LesionDetector``: a two-channel 3D phantom whose lesion lies in one channel only,
  and a lesion detector that reads every channel the same way, so the channel that carries the lesion is the answer.
"""

from __future__ import annotations

import torch
from monai.networks.layers import separable_filtering
from torch import nn

__all__ = ["LesionDetector", "conv_classifier", "two_channel_phantom"]


def conv_classifier(
    spatial_dims: int, in_channels: int = 2, num_classes: int = 3, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """A small classifier whose every non-linearity is a module of its own, used once."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(
        conv(in_channels, 4, 3, padding=1),
        activation(),
        conv(4, 4, 3, padding=1, stride=2),
        activation(),
        pool,
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def _gaussian_line(sigma: float, radius: int) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    return line / line.sum()


def two_channel_phantom(
    batch: int, size: int = 16, lesion_channel: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, S, S, S) float64 volumes and their (B, 1, S, S, S) lesion masks.

    Both channels hold an independent smooth texture (standard deviation about 0.3, like tissue variation of two MR
    sequences); a Gaussian blob lesion (sigma 2 voxels, amplitude 3) is added to ``lesion_channel`` only, at a random
    place at least 6 voxels from the border.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch * 2, 1, size, size, size, generator=generator, dtype=torch.float64)
    texture = separable_filtering(noise, [_gaussian_line(1.5, 4)] * 3).reshape(batch, 2, size, size, size)
    texture = 0.3 * texture / texture.std()
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"))
    masks = torch.zeros(batch, 1, size, size, size, dtype=torch.float64)
    for index in range(batch):
        centre = torch.randint(6, size - 6, (3,), generator=generator).double()
        blob = torch.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / (2 * 2.0**2))
        texture[index, lesion_channel] += 3.0 * blob
        masks[index, 0] = (blob > 0.3).double()
    return texture, masks


class LesionDetector(nn.Module):
    """A two-class lesion classifier that reads every input channel the same way: a centre-surround filter (difference
    of Gaussians, sigma 1.5 and 3 voxels, separable, per channel with the same weights), ReLU above a threshold that
    smooth texture seldom exceeds and a lesion does, summed over voxels and channels into the lesion logit (class 1;
    class 0's logit is 0). Which channel drove its decision therefore depends on the data only."""

    def __init__(self, threshold: float = 0.3) -> None:
        super().__init__()
        self.register_buffer("narrow", _gaussian_line(1.5, 4))
        self.register_buffer("wide", _gaussian_line(3.0, 9))
        self.threshold = threshold
        self.relu = nn.ReLU()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        centre_surround = separable_filtering(images, [self.narrow] * 3) - separable_filtering(images, [self.wide] * 3)
        evidence = self.relu(centre_surround - self.threshold).flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)
