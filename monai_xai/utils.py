"""Small helpers shared by the CAM engine, the metrics and the reports (tensors batch-first, N-D, torch only)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

__all__ = [
    "strict_value",
    "with_meta_of",
    "normalize_per_sample",
    "per_sample_index",
    "check_batch_map",
    "label_mask",
    "preserved_model_state",
    "json_ready",
    "affine_4x4",
]


def with_meta_of(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``values`` (B, ...) carrying the batch meta of ``images`` (affine per case, file names, ``is_batch``) when
    ``images`` is a MetaTensor, else ``values`` as they are.

    The meta is attached after construction, as MONAI's collate does: ``MetaTensor(x, meta=batched_meta)`` fails on
    collated entries such as ``original_channel_dim``.
    """
    if not isinstance(images, MetaTensor):
        return values
    wrapped = MetaTensor(values.as_tensor() if isinstance(values, MetaTensor) else values)
    wrapped.copy_meta_from(images)
    return wrapped


def normalize_per_sample(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise every sample of a batch to [0, 1] independently.

    Args:
        maps: (B, ...) real tensor, any number of trailing dims (e.g. (B, 1, H, W) or (B, 1, D, H, W)).
        eps: a sample whose max - min is below this is constant; it becomes all zeros instead of NaN.

    Returns:
        (B, ...) tensor of the same dtype and device, each sample in [0, 1].
    """
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    scaled = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def per_sample_index(
    class_idx: int | Sequence[int] | torch.Tensor, batch_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """One integer index per sample: an int is broadcast, a sequence or tensor must hold ``batch_size`` values.

    Returns:
        (B,) int64 tensor on ``device``.

    Raises:
        ValueError: when the number of indices differs from ``batch_size`` (and is not 1).
        TypeError: indices that are not integers (a float such as 1.7, a float tensor, a bool): they are never
            truncated silently.
    """
    given = torch.as_tensor(class_idx)
    if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
        raise TypeError(
            f"class_idx must be an int, a sequence of ints or an integer tensor, got {class_idx!r} ({given.dtype}); "
            "pass e.g. class_idx=1 or predictions.argmax(dim=1)."
        )
    index = given.to(dtype=torch.long, device=device).reshape(-1)
    if index.numel() == 1:
        return index.expand(batch_size).clone()
    if index.numel() != batch_size:
        raise ValueError(
            f"class_idx has {index.numel()} entries but the batch has {batch_size} samples; "
            "pass one int for the whole batch or one per sample."
        )
    return index


def check_batch_map(name: str, value: torch.Tensor, reference: torch.Tensor) -> None:
    """Raise a clear error unless ``value`` is (B, 1, *spatial) matching ``reference``'s batch and spatial shape.

    Args:
        name: argument name used in the message (e.g. ``"saliency"``).
        value: tensor to check, expected (B, 1, *spatial).
        reference: (B, C, *spatial) tensor whose batch size and spatial shape ``value`` must share.
    """
    expected = (reference.shape[0], 1, *reference.shape[2:])
    if tuple(value.shape) != expected:
        raise ValueError(
            f"{name} must have shape (B, 1, *spatial) = {expected} to match images of shape {tuple(reference.shape)}, "
            f"got {tuple(value.shape)}."
        )
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix or mask them before computing the metric.")


def label_mask(label: torch.Tensor, value: int | torch.Tensor | None = None) -> torch.Tensor:
    """Binary mask of one label value per sample in a label batch: what turns a label into a pixel set (the voxels a
    segmentation CAM explains) or into a region (the ground truth a map is scored against).

    Args:
        label: (B, 1, *spatial) label map (a class index, or 0/1, per voxel) or (B, C, *spatial) one-hot labels.
        value: None: any foreground (``label > 0``; one-hot: any channel but 0); an int: the voxels of that value
            (one-hot: that channel) in every sample; a (B,) tensor: one value per sample (e.g. each case's explained
            class); a (B, K) tensor: K values per sample, one mask each (the classes of a multi-class pixel set).

    Returns:
        (B, 1, *spatial) float mask in {0, 1} on the label's device; (B, K, *spatial) for (B, K) values.

    Raises:
        ValueError: a label without spatial dims (a classification label is not a region), or a value with no channel
            in one-hot labels.
    """
    if label.ndim < 3:
        raise ValueError(
            f"a label must be (B, 1, *spatial) or one-hot (B, C, *spatial) to give a region, got shape "
            f"{tuple(label.shape)}; a classification label is not a region: name the batch key of the lesion/ROI "
            "mask instead."
        )
    one_hot = label.shape[1] > 1
    if value is None:
        return (label[:, 1:].sum(dim=1, keepdim=True) > 0 if one_hot else label > 0).float()
    if isinstance(value, torch.Tensor) and value.ndim == 2:
        values = value.to(label.device).long()
    else:
        values = per_sample_index(value, label.shape[0], label.device)[:, None]
    index = values.reshape(*values.shape, *([1] * (label.ndim - 2)))
    if not one_hot:
        return (label == index.to(label.dtype)).float()
    if int(values.max()) >= label.shape[1] or int(values.min()) < 0:
        raise ValueError(
            f"label value {values.tolist()} has no channel in one-hot labels of shape {tuple(label.shape)}."
        )
    return (label.gather(1, index.expand(-1, -1, *label.shape[2:])) > 0).float()


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode, then restore each module's mode and each parameter's ``requires_grad``.

    Flags are saved per module (not just the top-level one), so a model with e.g. frozen BatchNorm layers in eval mode
    inside a training model comes back unchanged.
    """
    training_flags = [(module, module.training) for module in model.modules()]
    requires_grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in training_flags:
            module.training = training
        for param, requires_grad in requires_grad_flags:
            param.requires_grad_(requires_grad)


def json_ready(value: Any) -> Any:
    """``value`` (nested dicts and lists) with NaN (undefined) numbers as None, so that ``json.dumps`` writes strict
    JSON (``null``) instead of the non-standard ``NaN``."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_ready(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def affine_4x4(affine: Any, spatial_dims: int) -> np.ndarray:
    """The 4 x 4 voxel-to-world affine of a 2D or 3D grid, as NIfTI and NRRD files state it: a 3D affine as it is, a
    2D grid's 3 x 3 affine with an identity third axis (one slice, 1 mm thick).

    Args:
        affine: (4, 4) or, for ``spatial_dims == 2``, (3, 3) array or tensor.
        spatial_dims: the grid's spatial dims, 2 or 3.

    Raises:
        ValueError: any other shape.
    """
    matrix = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if matrix.shape == (4, 4):
        return matrix
    if matrix.shape == (3, 3) and spatial_dims == 2:
        full = np.eye(4)
        full[:2, :2], full[:2, 3] = matrix[:2, :2], matrix[:2, 2]
        return full
    raise ValueError(f"the affine must be 4x4 (or 3x3 for a 2D image), got shape {matrix.shape}.")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def strict_value(value: Any, kind: type, name: str) -> Any:
    """A command-line value as ``kind`` (``bool``, ``int`` or ``float``), refused unless it is one.

    python-fire parses ``--flag False`` as a bool but ``--flag false`` as the string ``"false"``, which Python takes as
    true: a value is therefore read here, strictly (``true/false``, ``yes/no``, ``on/off``, ``1/0`` for a bool; a
    whole number for an int; a finite number for a float).

    Raises:
        ValueError: naming ``--name``, what it takes and what it got.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"--{name} takes true or false, got {value!r}.")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # ASCII digits only: str.isdigit also takes superscripts such as "¹", which int() refuses
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            return int(value)
        raise ValueError(f"--{name} takes a whole number, got {value!r}.")
    if kind is float:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"--{name} takes a finite number, got {value!r}.")
        return number
    return value
