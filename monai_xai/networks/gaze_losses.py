"""The two training losses of the gaze-saliency network (Qiu's thesis, ch. 4): a triplet loss that pre-trains the
DenseNet encoder (stage 1) and the KL divergence from the real gaze maps to the predicted ones (stage 2).

Each is one function (what the tests check against hand computations) and a thin ``nn.Module`` that MONAI's
``SupervisedTrainer`` calls as ``loss(prediction, target)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GazeKLLoss", "TripletLoss", "gaze_kl_loss", "triplet_loss"]


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Batch-all triplet loss: the mean of ``max(0, d(a, p) - d(a, n) + margin)`` over every triplet of the batch
    with ``labels[a] == labels[p]``, ``a != p`` and ``labels[n] != labels[a]``; ``d`` is the Euclidean distance.

    Args:
        embeddings: (B, D) embeddings (e.g. :meth:`~monai_xai.networks.gaze.GazeSaliencyNet.embed`).
        labels: (B,) class indices (a (B, 1) column is accepted).
        margin: the wanted gap between the negative's and the positive's distance.

    Returns:
        0-dim tensor; 0 (with a gradient) when the batch has no valid triplet (one class only, or no pair).

    Raises:
        ValueError: ``embeddings`` not (B, D), or ``labels`` not B values.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"triplet_loss needs (B, D) embeddings, got shape {tuple(embeddings.shape)}.")
    labels = labels.reshape(-1)
    if labels.numel() != embeddings.shape[0]:
        raise ValueError(
            f"triplet_loss needs one label per embedding: {embeddings.shape[0]} embeddings, {labels.numel()} labels."
        )
    distances = torch.cdist(embeddings, embeddings)  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    # valid[a, p, n]: p a positive of a (not a itself), n a negative of a
    valid = (same & ~eye)[:, :, None] & ~same[:, None, :]
    losses = (distances[:, :, None] - distances[:, None, :] + margin).clamp_min(0)
    if not valid.any():
        return embeddings.sum() * 0.0
    return losses[valid].mean()


def gaze_kl_loss(logits: torch.Tensor, gaze: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL divergence ``KL(Q || P) = sum Q log(Q / P)`` from the real gaze distribution Q to the predicted one P,
    averaged over the batch (the direction of the MIT saliency benchmark's KL, which
    :func:`~monai_xai.metrics.kl_divergence` reports).

    ``P = softmax(logits)`` over all pixels of each image; ``Q = gaze / sum(gaze)``; pixels with ``Q = 0`` add 0.

    Args:
        logits: (B, 1, *spatial) gaze logits (:meth:`~monai_xai.networks.gaze.GazeSaliencyNet.gaze_logits`).
        gaze: (B, 1, *spatial) non-negative gaze heatmaps, any scale.
        eps: guards ``log(0)`` of Q only (P comes from ``log_softmax`` and is never 0).

    Returns:
        0-dim tensor >= 0.

    Raises:
        ValueError: shapes differ, negative gaze values, or a gaze map that is all zero (nothing to match: check the
            heatmap file of that image or leave the image out).
    """
    if logits.shape != gaze.shape:
        raise ValueError(
            f"gaze_kl_loss needs logits and gaze maps of one shape, got {tuple(logits.shape)} and "
            f"{tuple(gaze.shape)}; resample the gaze maps to the network's input size."
        )
    target = gaze.flatten(1).to(logits.dtype)
    if (target < 0).any():
        raise ValueError("gaze_kl_loss: gaze maps must be non-negative heatmaps.")
    total = target.sum(dim=1, keepdim=True)
    if (total <= 0).any():
        empty = torch.nonzero(total[:, 0] <= 0).flatten().tolist()
        raise ValueError(
            f"gaze_kl_loss: the gaze maps of batch items {empty} are all zero; check those images' heatmap files "
            "(a heatmap.png that decodes to zero everywhere) or leave the images out."
        )
    target = target / total
    log_predicted = torch.log_softmax(logits.flatten(1), dim=1)
    divergence = (target * (torch.log(target + eps) - log_predicted)).sum(dim=1)
    return divergence.mean()


class TripletLoss(nn.Module):
    """:func:`triplet_loss` as a loss module: ``loss(embeddings (B, D), labels (B,) or (B, 1))``."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return triplet_loss(embeddings, labels, self.margin)


class GazeKLLoss(nn.Module):
    """:func:`gaze_kl_loss` as a loss module: ``loss(logits (B, 1, *spatial), gaze (B, 1, *spatial))``."""

    def forward(self, logits: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        return gaze_kl_loss(logits, gaze)
