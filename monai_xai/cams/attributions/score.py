"""What an attribution method differentiates or re-scores: the explained score as a module, and the rest of a call's
inputs as one record.

:class:`TargetScore` is ``target(model(images), sample_ids)``: for a classifier the class score of each row, for a
segmenter the class scores summed over the pixel set (:class:`~monai_xai.cams.SegmentationTarget`), which is the
summing forward function every Captum user of a segmenter writes by hand. Captum hands ``sample_ids`` through as an
additional forward argument and expands it exactly as it expands the images (repeated for IG steps and perturbation
batches, selected per example for KernelSHAP), so each row of a Captum batch is scored against its own image's class
and pixel set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from monai_xai.cams.attributions.settings import AttributionSettings
from monai_xai.cams.targets import ClassTarget, SegmentationTarget

__all__ = ["AttributionContext", "TargetScore"]


class TargetScore(nn.Module):
    """The explained score of a batch as a network: ``forward(images (N, C, *S), sample_ids (N,)) -> (N,)``.

    Args:
        model: the explained network.
        target: the batch's target; row n of a call is scored with the class (and pixel set) of image
            ``sample_ids[n]``.
    """

    def __init__(self, model: nn.Module, target: ClassTarget | SegmentationTarget) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, images: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        if sample_ids.numel() == 1:  # one image's rows (Captum's Lime/KernelSHAP pass its id unexpanded, 0-d)
            sample_ids = sample_ids.reshape(1).expand(images.shape[0])
        return self.target(self.model(images), sample_ids)


@dataclass(frozen=True)
class AttributionContext:
    """Everything an attribution method takes besides the score and the images.

    Attributes:
        settings: the methods' settings.
        batch_size: images per forward pass (perturbed copies, path points, noisy copies); bounds the memory.
        sample_ids: (B,) long, ``arange(B)``: the additional forward argument of :class:`TargetScore`.
        features: (B, C, *spatial) long feature groups of FeatureAblation/KernelSHAP, numbered from 0; None when no
            requested method removes features.
    """

    settings: AttributionSettings
    batch_size: int
    sample_ids: torch.Tensor
    features: torch.Tensor | None = None

    def rows_per_image(self, images: int) -> int:
        """Copies of each of ``images`` images that fit a forward pass of ``batch_size`` rows (at least 1)."""
        return max(1, self.batch_size // images)
