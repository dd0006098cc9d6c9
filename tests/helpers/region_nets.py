"""Tiny networks whose decisions are known in closed form, for the perturbation-curve tests."""

from __future__ import annotations

import torch
from torch import nn


class RegionLinearClassifier(nn.Module):
    """Two-class classifier: logit 0 is 0, logit 1 is ``sum(weight * x)`` over every channel and voxel.

    With a weight that is zero outside a region, the decision depends only on that region, and the contribution of
    each voxel to the class-1 logit is exactly ``weight * x`` (summed over channels). ``dropout`` sits on the input so
    that a forward pass in train mode is random and one in eval mode is not.

    Args:
        weight: (C, *spatial) or (1, *spatial) weights, broadcast against each (C, *spatial) input.
        dropout: input dropout probability (active in train mode only).
    """

    def __init__(self, weight: torch.Tensor, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = (self.dropout(x) * self.weight).flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)
