"""Deletion and insertion curves (Petsiuk et al., RISE): how fast the class score falls (rises) as the most salient
voxels are removed (inserted) first. N-D, batched over the perturbation steps, on the model's device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.networks.layers import GaussianFilter
from monai.utils import MetricReduction
from torch import nn

from monai_xai.metrics.per_sample import PerSampleMetric, check_saliency
from monai_xai.utils import check_batch_map, per_sample_index

__all__ = ["PerturbationCurve", "deletion_insertion", "DeletionInsertionMetric"]


class PerturbationCurve(NamedTuple):
    """Result of :func:`deletion_insertion`.

    Attributes:
        scores: (B, steps + 1) class score after ``k`` of ``steps`` steps; column 0 is the unperturbed start.
        auc: (B,) area under ``scores`` by the trapezoid rule over the fraction of voxels replaced, [0, 1].
    """

    scores: torch.Tensor
    auc: torch.Tensor


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


def _module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(module, module.training) for module in model.modules()]


def _class_scores(model: nn.Module, inputs: torch.Tensor, apply_softmax: bool) -> torch.Tensor:
    logits = model(inputs)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != inputs.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model must return classification logits of shape (N, num_classes), got {shape}; wrap the network so "
            "that it returns one score per class (e.g. the mean logit of a segmentation class over its region)."
        )
    return logits.softmax(dim=1) if apply_softmax else logits


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    mode: str = "deletion",
    steps: int = 100,
    substrate: str | torch.Tensor | None = None,
    batch_size: int = 32,
    apply_softmax: bool = True,
    blur_sigma: float = 5.0,
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
        model: classifier returning (N, num_classes) logits, on the images' device.
        images: (B, C, *spatial) input batch, 2D or 3D.
        saliency: (B, 1, *spatial) map for each image (any real values; only their order matters).
        class_idx: class scored per sample (int, or one per sample); None uses the class the model predicts on the
            unperturbed image (RISE's top-1 class).
        mode: ``"deletion"`` (lower area is better) or ``"insertion"`` (higher is better).
        steps: number of perturbation steps, >= 1; the curve has ``steps + 1`` points.
        substrate: ``"zeros"``, ``"blur"`` or a tensor broadcastable to ``images``; None picks ``"zeros"`` for deletion
            and ``"blur"`` for insertion, as RISE.
        batch_size: perturbed images per forward pass, >= 1.
        apply_softmax: score the softmax probability of the class (True, RISE) or its raw logit (False).
        blur_sigma: standard deviation in voxels of the ``"blur"`` substrate (RISE: 5).

    Returns:
        :class:`PerturbationCurve` with ``scores`` (B, steps + 1) and ``auc`` (B,).
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 3:
        raise ValueError("images must be a (B, C, *spatial) tensor.")
    saliency = check_saliency(saliency)
    check_batch_map("saliency", saliency, images)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f'mode must be "deletion" or "insertion", got {mode!r}.')
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if substrate is None:
        substrate = "zeros" if mode == "deletion" else "blur"

    batch = images.shape[0]
    flat_saliency = saliency.flatten(1)
    voxels = flat_saliency.shape[1]
    order = flat_saliency.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(voxels, device=images.device).expand(batch, voxels)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[b, v]: where voxel v comes in the order
    replaced_counts = torch.arange(steps + 1, device=images.device) * voxels // steps

    modes = _module_modes(model)
    try:
        model.eval()
        with torch.no_grad():
            logits = _class_scores(model, images, apply_softmax=False)
            if class_idx is None:
                target = logits.argmax(dim=1)
            else:
                target = per_sample_index(class_idx, batch, images.device)
                if target.min() < 0 or target.max() >= logits.shape[1]:
                    raise ValueError(
                        f"class_idx must be in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} "
                        f"classes, got {target.tolist()}."
                    )
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
                class_scores = _class_scores(model, perturbed, apply_softmax)
                scores.append(class_scores.gather(1, target[sample][:, None])[:, 0])
    finally:
        for module, training in modes:
            module.train(training)
    scores = torch.cat(scores).reshape(batch, steps + 1)
    return PerturbationCurve(scores=scores, auc=torch.trapezoid(scores, dx=1.0 / steps, dim=1))


class DeletionInsertionMetric(PerSampleMetric):
    """Cumulative deletion or insertion AUC (:func:`deletion_insertion`).

    Call with ``y_pred=saliency`` (B, 1, *spatial) and ``y=images`` (B, C, *spatial) (the images the maps explain),
    optionally ``class_idx=`` per sample; the model is re-run on the perturbed images.

    Args:
        model: classifier returning (N, num_classes) logits.
        mode, steps, substrate, batch_size, apply_softmax, blur_sigma: as :func:`deletion_insertion`.
        reduction, get_not_nans: as :class:`~monai_xai.metrics.per_sample.PerSampleMetric`.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "deletion",
        steps: int = 100,
        substrate: str | torch.Tensor | None = None,
        batch_size: int = 32,
        apply_softmax: bool = True,
        blur_sigma: float = 5.0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.model = model
        self.curve_args = dict(
            mode=mode,
            steps=steps,
            substrate=substrate,
            batch_size=batch_size,
            apply_softmax=apply_softmax,
            blur_sigma=blur_sigma,
        )

    def _compute_tensor(
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("DeletionInsertionMetric needs y=images (B, C, *spatial) next to y_pred=saliency.")
        return deletion_insertion(self.model, y, y_pred, class_idx=class_idx, **self.curve_args).auc[:, None]
