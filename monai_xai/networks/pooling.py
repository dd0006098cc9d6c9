"""Global power-mean (LP) pooling for classifiers whose evidence is small and local.

An average over the whole grid dilutes a lesion that fills a few voxels of it; a max keeps only one voxel. The LP
pool ``(sum_v x_v^p)^(1/p)`` lies between (p = 1: the sum, p -> inf: the max), so a classifier trained with it bases
its score on its strongest voxels while every one of them still gets a gradient, and its class-activation maps land
on the lesion (see ``bundles/lesion_classification_3d``).
"""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet
from torch import nn

__all__ = ["GlobalLPPool", "with_global_lp_pool"]


class GlobalLPPool(nn.Module):
    """``(sum over all spatial positions of x^p)^(1/p)`` per sample and channel, for any input size.

    On a grid of kernel size it equals ``torch.nn.LPPoolNd(p, kernel)``, which needs the grid's size in advance.

    Args:
        power: p > 0.
    """

    def __init__(self, power: float = 4.0) -> None:
        super().__init__()
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}.")
        self.power = float(power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) non-negative features -> (B, C, 1, ..., 1), the spatial dims kept as ones (so a
        following ``Flatten`` gives (B, C), as after MONAI's adaptive pools).

        The p-norm over the positions: its gradient at an all-zero channel (a dead channel, common once weights are
        re-initialised in a randomisation check) is zero, where ``x.pow(p).sum().pow(1 / p)`` gives NaN (inf x 0)
        and every gradient map of the sample with it."""
        pooled = torch.linalg.vector_norm(x.flatten(2), ord=self.power, dim=2)
        return pooled.reshape(*x.shape[:2], *[1] * (x.ndim - 2))

    def extra_repr(self) -> str:
        return f"power={self.power}"


def with_global_lp_pool(network: DenseNet, power: float = 4.0) -> DenseNet:
    """``network`` (a MONAI ``DenseNet``) with its global average pool (``class_layers.pool``) replaced by
    :class:`GlobalLPPool`; no parameter changes, so checkpoints load as before.

    Args:
        network: a MONAI DenseNet (``class_layers``: relu, pool, flatten, out).
        power: the pool's p.
    """
    if (
        not isinstance(getattr(network, "class_layers", None), nn.Sequential)
        or "pool" not in network.class_layers._modules
    ):
        raise ValueError(
            f"with_global_lp_pool needs a MONAI DenseNet (class_layers with a 'pool'), got {type(network).__name__}."
        )
    network.class_layers.pool = GlobalLPPool(power)
    return network
