"""Deletion and insertion curves (Petsiuk et al., RISE): how fast the class score falls (rises) as the most salient
voxels are removed (inserted) first. N-D, batched over the perturbation steps, on the model's device.

The score is the CAM target (``monai_xai.cams.targets.build_target``): a classifier's class probability (or logit), or
for a segmentation network the class probability (or logit) over a pixel set fixed on the unperturbed image, as its
mean over the set (NaN for an empty set).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from monai.networks.layers import GaussianFilter
from monai.utils import MetricReduction
from torch import nn

from monai_xai.budgets import check_curve_passes, check_curve_steps
from monai_xai.cams.targets import PixelSetSpec, build_target, per_voxel_scale
from monai_xai.enums import Score, as_choice
from monai_xai.metrics.per_sample import PerSampleMetric, check_saliency
from monai_xai.utils import check_batch_map, preserved_model_state

__all__ = [
    "PerturbationCurve",
    "deletion_insertion",
    "DeletionInsertionMetric",
    "confidence_change",
    "ConfidenceChangeMetric",
]


class PerturbationCurve(NamedTuple):
    """Result of :func:`deletion_insertion`.

    Attributes:
        scores: (B, steps + 1) class score after ``k`` of ``steps`` steps; column 0 is the unperturbed start.
        auc: (B,) area under ``scores`` by the trapezoid rule over the fraction of voxels replaced, [0, 1].
    """

    scores: torch.Tensor
    auc: torch.Tensor


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (perturbation steps of the curve), got {steps!r}.")
    return steps


def _check_blur_sigma(blur_sigma: Any) -> float:
    """A Gaussian's standard deviation: 0 or less is no blur (or no Gaussian), NaN or inf no image."""
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, numbers.Real) or not 0 < blur_sigma < math.inf:
        raise ValueError(
            "blur_sigma must be a finite number > 0 (the standard deviation in voxels of the blurred substrate, "
            f"insertion's default start; RISE: 5), got {blur_sigma!r}."
        )
    return float(blur_sigma)


def _substrate(images: torch.Tensor, substrate: str | torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """The images that perturbed voxels are taken from, (B, C, *spatial)."""
    if isinstance(substrate, torch.Tensor):
        try:
            return torch.broadcast_to(substrate.to(images), images.shape)
        except RuntimeError as error:
            raise ValueError(
                f"substrate tensor of shape {tuple(substrate.shape)} does not broadcast to the images' shape "
                f"{tuple(images.shape)}."
            ) from error
    if substrate == "zeros":
        return torch.zeros_like(images)
    if substrate == "blur":
        # zero padding at the border, as RISE's convolution with its Gaussian kernel
        return GaussianFilter(images.ndim - 2, sigma=blur_sigma).to(images.device)(images)
    raise ValueError(f'substrate must be "zeros", "blur" or a tensor, got {substrate!r}.')


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    mode: str = "deletion",
    steps: int = 100,
    substrate: str | torch.Tensor | None = None,
    batch_size: int = 32,
    score: Score | str = Score.PROBABILITY,
    blur_sigma: float = 5.0,
    pixel_set: PixelSetSpec = None,
) -> PerturbationCurve:
    """Deletion or insertion curve of each image under its saliency map (RISE).

    Voxels are ordered by descending saliency; equal values keep flattened index order (stable sort), so the result
    is deterministic. After step ``k`` of ``steps`` the first ``floor(k * N / steps)`` voxels of that order (N voxels
    per channel, all channels at once) are replaced: deletion starts from the image and takes replaced voxels from the
    substrate (default zeros); insertion starts from the substrate (default a Gaussian blur of the image) and takes them
    from the image. RISE replaces a fixed number of pixels per step; that equals this rule when ``steps`` divides N.

    The model runs in eval mode under ``torch.no_grad``, ``batch_size`` perturbed copies per forward pass; each
    module's train/eval mode is restored afterwards, also when the call raises.

    Args:
        model: classifier returning (N, num_classes) logits, or segmentation network returning (N, num_classes,
            *spatial) logits, on the images' device.
        images: (B, C, *spatial) input batch, 2D or 3D.
        saliency: (B, 1, *spatial) map for each image (any real values; only their order matters).
        class_idx: class scored per sample (int, or one per sample); None uses the class a classifier predicts on the
            unperturbed image (RISE's top-1 class); required for segmentation networks.
        mode: ``"deletion"`` (lower area is better) or ``"insertion"`` (higher is better).
        steps: number of perturbation steps, >= 1 and at most the voxels of an image (a step replaces at least one
            voxel); the curve has ``steps + 1`` points. Bounded by the budgets of :mod:`monai_xai.budgets`
            (``MONAI_XAI_MAX_CURVE_STEPS``, and the call's voxel-passes ``MONAI_XAI_MAX_METRIC_VOXEL_PASSES``).
        substrate: ``"zeros"``, ``"blur"`` or a tensor broadcastable to ``images``; None picks ``"zeros"`` for deletion
            and ``"blur"`` for insertion, as RISE.
        batch_size: perturbed images per forward pass, >= 1.
        score: the scored value of the class: ``"probability"`` (default, RISE; softmax over classes, sigmoid for a
            single output channel) or ``"logit"``, as in ``CAMExplainer`` and ``road``.
        blur_sigma: standard deviation in voxels of the ``"blur"`` substrate (RISE: 5), finite and > 0.
        pixel_set: segmentation only, the pixel set whose class score is averaged, defined on the unperturbed images
            as in ``CAMExplainer``: None or ``"pred"`` (voxels predicted as the class), ``"largest_component"``,
            ``"image"``, a (B or 1, 1, *spatial) tensor in [0, 1] on the output grid (e.g. the ground truth), a tuple
            of ints (one voxel) or of slices (a box). Must be None for classifiers.

    Returns:
        :class:`PerturbationCurve` with ``scores`` (B, steps + 1) and ``auc`` (B,).

    Raises:
        ValueError: a wrong argument, or ``steps`` above the voxels of an image, before any forward pass.
        BudgetExceeded: ``steps``, or the call's voxel-passes, above their cap (:mod:`monai_xai.budgets`), before any
            forward pass.
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 3:
        raise ValueError("images must be a (B, C, *spatial) tensor.")
    saliency = check_saliency(saliency)
    check_batch_map("saliency", saliency, images)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f'mode must be "deletion" or "insertion", got {mode!r}.')
    _check_steps(steps)
    _check_blur_sigma(blur_sigma)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    score = as_choice(Score, score, "score")
    if substrate is None:
        substrate = "zeros" if mode == "deletion" else "blur"

    batch = images.shape[0]
    flat_saliency = saliency.flatten(1)
    voxels = flat_saliency.shape[1]
    check_curve_passes(steps, batch, voxels)  # before any forward pass
    order = flat_saliency.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(voxels, device=images.device).expand(batch, voxels)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[b, v]: where voxel v comes in the order
    replaced_counts = torch.arange(steps + 1, device=images.device) * voxels // steps

    with preserved_model_state(model), torch.no_grad():
        target = build_target(model(images), class_idx, pixel_set, score)
        replacement = _substrate(images, substrate, blur_sigma)
        start, finish = (images, replacement) if mode == "deletion" else (replacement, images)
        # every (sample, step) pair is one perturbed image; they are built and scored batch_size at a time
        pairs = torch.arange(batch * (steps + 1), device=images.device)
        scores = []
        for chunk in pairs.split(batch_size):
            sample, step = chunk // (steps + 1), chunk % (steps + 1)
            replaced = rank[sample] < replaced_counts[step][:, None]
            replaced = replaced.reshape(chunk.numel(), 1, *images.shape[2:])
            perturbed = torch.where(replaced, finish[sample], start[sample])
            scores.append(target(model(perturbed), sample))
    # segmentation: mean over the pixel set; an empty set has no score: NaN, so reductions skip it
    scores = torch.cat(scores).reshape(batch, steps + 1) / per_voxel_scale(target)[:, None]
    return PerturbationCurve(scores=scores, auc=torch.trapezoid(scores, dx=1.0 / steps, dim=1))


def confidence_change(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    pixel_set: PixelSetSpec = None,
    score: Score | str = Score.PROBABILITY,
) -> torch.Tensor:
    """Confidence increase (pytorch-grad-cam's ``CamMultImageConfidenceChange``): the class score of the image
    multiplied by its map minus that of the image. Positive when what the map keeps is enough for the class.

    Args:
        model: classifier or segmentation network (see :func:`deletion_insertion`), run in eval mode without
            gradients, its mode restored.
        images: (B, C, *spatial) input batch.
        saliency: (B, 1, *spatial) maps in [0, 1].
        class_idx: class per sample; None: a classifier's predicted class on the images.
        pixel_set: segmentation pixel set (fixed on the unperturbed images), its score averaged over the set.
        score: ``"probability"`` (default) or ``"logit"``.

    Returns:
        (B,) score changes; NaN for an empty pixel set.
    """
    saliency = check_saliency(saliency)
    check_batch_map("saliency", saliency, images)
    if saliency.min() < 0 or saliency.max() > 1:
        raise ValueError("saliency must lie in [0, 1] (it multiplies the image); normalise it first.")
    with preserved_model_state(model), torch.no_grad():
        outputs = model(images)
        target = build_target(outputs, class_idx, pixel_set, as_choice(Score, score, "score"))
        change = target(model(images * saliency.to(images.dtype))) - target(outputs)
    return change / per_voxel_scale(target)


class DeletionInsertionMetric(PerSampleMetric):
    """Cumulative deletion or insertion AUC (:func:`deletion_insertion`).

    Call with ``y_pred=saliency`` (B, 1, *spatial) and ``y=images`` (B, C, *spatial) (the images the maps explain),
    optionally ``class_idx=`` per sample and, for a segmentation network, ``pixel_set=`` (see
    :func:`deletion_insertion`); the model is re-run on the perturbed images.

    Args:
        model: classifier or segmentation network (see :func:`deletion_insertion`).
        mode, steps, substrate, batch_size, score, blur_sigma: as :func:`deletion_insertion`.
        reduction, get_not_nans: as :class:`~monai_xai.metrics.per_sample.PerSampleMetric`.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "deletion",
        steps: int = 100,
        substrate: str | torch.Tensor | None = None,
        batch_size: int = 32,
        score: Score | str = Score.PROBABILITY,
        blur_sigma: float = 5.0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        # checked when the metric is built (a config, a study), before any image
        check_curve_steps(_check_steps(steps))
        self.model = model
        self.curve_args = dict(
            mode=mode,
            steps=steps,
            substrate=substrate,
            batch_size=batch_size,
            score=as_choice(Score, score, "score"),
            blur_sigma=_check_blur_sigma(blur_sigma),
        )

    def _compute_tensor(
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        pixel_set: PixelSetSpec = None,
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("DeletionInsertionMetric needs y=images (B, C, *spatial) next to y_pred=saliency.")
        curve = deletion_insertion(self.model, y, y_pred, class_idx=class_idx, pixel_set=pixel_set, **self.curve_args)
        return curve.auc[:, None]


class ConfidenceChangeMetric(PerSampleMetric):
    """Cumulative :func:`confidence_change`: call with ``y_pred=saliency`` in [0, 1], ``y=images`` and, as the other
    image metrics, ``class_idx=`` and ``pixel_set=``.

    Args:
        model: classifier or segmentation network.
        score: as :func:`confidence_change`.
        reduction, get_not_nans: as :class:`~monai_xai.metrics.per_sample.PerSampleMetric`.
    """

    def __init__(
        self,
        model: nn.Module,
        score: Score | str = Score.PROBABILITY,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.model = model
        self.score = as_choice(Score, score, "score")

    def _compute_tensor(
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        pixel_set: PixelSetSpec = None,
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("ConfidenceChangeMetric needs y=images (B, C, *spatial) next to y_pred=saliency.")
        return confidence_change(self.model, y, y_pred, class_idx=class_idx, pixel_set=pixel_set, score=self.score)[
            :, None
        ]
