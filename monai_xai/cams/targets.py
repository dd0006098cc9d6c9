"""The score a CAM explains: a class of a classifier, or a class summed over a pixel set of a segmenter.

A target is a callable ``target(outputs, sample_ids=None) -> scores``: ``outputs`` (N, C) or (N, C, *spatial) are model
outputs and ``sample_ids`` (N,) says which original sample each row belongs to (default ``arange(N)``), so perturbation
methods can score many perturbed copies of a sample in one forward pass. ``scores`` (N,) never mixes rows.
``target.predicted(outputs, sample_ids=None) -> (N,) bool`` says whether each row still predicts the explained class
(what the perturbation metrics report as accuracy).

A segmentation target can explain several classes at once (:class:`ClassSet`, e.g. kidney + tumour + cyst): each
class k has its own pixel set M_k (the voxels predicted as k, its ground-truth region, ...) and the target is the sum
over classes of each class's scores over its own set, sum_k sum_{v in M_k} y_k(v). With ``"pred"`` the sets are
disjoint and cover the predicted foreground, so the map explains "the segmentation of these classes" as a whole: a
voxel counts once, with the score of the class it is predicted as. Large classes weigh more, as in Seg-Grad-CAM for
one class; a map of the sum is not the sum of the per-class maps (each method normalises its map).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from monai_xai.enums import PixelSet, Score, as_choice
from monai_xai.utils import per_sample_index

__all__ = [
    "ClassSet",
    "ClassTarget",
    "SegmentationTarget",
    "as_class_choice",
    "class_sets",
    "PixelSetSpec",
    "as_pixel_set_choice",
    "build_target",
    "resolve_pixel_set",
    "predicted_mask",
    "index_pixel_set",
    "peak_voxel",
    "tensor_pixel_set",
    "per_voxel_scale",
]

# a segmentation pixel set as callers give it: a name, a (B|1, 1|K, *spatial) tensor, a voxel (ints) or a box (slices)
PixelSetSpec = PixelSet | str | torch.Tensor | Sequence[int | slice] | None
# the word a config uses for "every foreground class" (``"xai_class": "foreground"``)
FOREGROUND = "foreground"


@dataclass(frozen=True)
class ClassSet:
    """Several classes of a segmenter explained at once, each over its own pixel set, scores summed (see the module
    docstring): the multi-class pixel set.

    Attributes:
        classes: the class indices, e.g. ``(1, 2, 3)``; None: every foreground class of the network (1 .. C-1; the one
            channel of a single-channel segmenter), so with ``"pred"`` the classes present in each prediction.
    """

    classes: tuple[int, ...] | None = None

    def indices(self, num_classes: int) -> tuple[int, ...]:
        """The class indices for a network with ``num_classes`` output channels.

        Raises:
            ValueError: a class out of range, or repeated.
        """
        if self.classes is None:
            return tuple(range(1, num_classes)) if num_classes > 1 else (0,)
        if len(set(self.classes)) != len(self.classes) or not all(0 <= k < num_classes for k in self.classes):
            raise ValueError(
                f"the classes {list(self.classes)} must be distinct indices of the network's {num_classes} output "
                f"classes (0..{num_classes - 1})."
            )
        return self.classes

    def __str__(self) -> str:
        return FOREGROUND if self.classes is None else "+".join(str(k) for k in self.classes)


def as_class_choice(value: Any, config_id: str = "class_idx") -> int | Sequence[int] | ClassSet | None:
    """The explained class as a config gives it: None, an int, one int per sample (a list), or several classes of a
    segmenter at once as a :class:`ClassSet`: ``"foreground"`` (every foreground class) or ``"1+2+3"``.

    Raises:
        ValueError: naming ``config_id``, for a string that is neither form.
    """
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text == FOREGROUND:
        return ClassSet()
    parts = [part.strip() for part in text.split("+")]
    if not all(part.isdigit() for part in parts):
        raise ValueError(
            f"{config_id} as a string must be {FOREGROUND!r} (every foreground class of a segmenter) or classes "
            f"joined by '+' (e.g. '1+2+3', explained together), got {value!r}; an int explains one class."
        )
    return ClassSet(tuple(int(part) for part in parts))


def class_sets(
    class_idx: ClassSet | torch.Tensor, batch_size: int, num_classes: int, device: torch.device
) -> torch.Tensor:
    """(B, K) long: the K classes each sample explains together, from a :class:`ClassSet` (the same for every sample)
    or a (B, K) tensor (e.g. the engine output ``"xai_class"`` of a multi-class run).

    Raises:
        ValueError: classes out of range, or a tensor whose rows are not the batch.
    """
    if isinstance(class_idx, ClassSet):
        classes = torch.tensor(class_idx.indices(num_classes), dtype=torch.long, device=device)
        return classes.expand(batch_size, -1).clone()
    classes = torch.as_tensor(class_idx).to(device=device, dtype=torch.long)
    if classes.ndim != 2 or classes.shape[0] != batch_size:
        raise ValueError(f"class sets must be (B, K) = ({batch_size}, K), got shape {tuple(classes.shape)}.")
    if ((classes < 0) | (classes >= num_classes)).any():
        raise ValueError(
            f"class_idx {classes.tolist()} out of range: the model has {num_classes} output classes "
            f"(0..{num_classes - 1})."
        )
    return classes


def _class_scores(outputs: torch.Tensor, score: Score) -> torch.Tensor:
    """Logits, or probabilities: softmax over classes (dim 1), sigmoid when there is a single output channel."""
    if score == Score.LOGIT:
        return outputs
    return torch.sigmoid(outputs) if outputs.shape[1] == 1 else torch.softmax(outputs, dim=1)


def _rows(sample_ids: torch.Tensor | None, num_rows: int, device: torch.device) -> torch.Tensor:
    return torch.arange(num_rows, device=device) if sample_ids is None else sample_ids.to(device)


class ClassTarget:
    """Score of one class per sample of a classifier's outputs.

    Args:
        class_idx: (B,) long, the class to explain for each original sample.
        score: ``"logit"`` (default, pre-activation) or ``"probability"`` (softmax over classes; sigmoid if C == 1).
    """

    def __init__(self, class_idx: torch.Tensor, score: Score | str = Score.LOGIT) -> None:
        self.class_idx = class_idx
        self.score = as_choice(Score, score, "score")

    def __call__(self, outputs: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """outputs (N, C) -> (N,) score of ``class_idx[sample_ids[n]]`` in row n."""
        rows = _rows(sample_ids, outputs.shape[0], outputs.device)
        classes = self.class_idx.to(outputs.device)[rows]
        return _class_scores(outputs, self.score).gather(1, classes[:, None])[:, 0]

    def predicted(self, outputs: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """outputs (N, C) -> (N,) bool: row n predicts class ``class_idx[sample_ids[n]]``.

        With C > 1 the class must be the arg-max (ties go to the lowest index, as ``argmax``). A single-output
        classifier (C == 1, class 0) has one logit for its positive class: it predicts the class when the logit is
        > 0, i.e. its sigmoid probability exceeds 0.5.
        """
        rows = _rows(sample_ids, outputs.shape[0], outputs.device)
        if outputs.shape[1] == 1:
            return outputs[:, 0] > 0
        return outputs.argmax(dim=1) == self.class_idx.to(outputs.device)[rows]


class SegmentationTarget:
    """Seg-Grad-CAM target: the sum of one class's scores over a pixel set M, per sample; or, for a
    :class:`ClassSet`, the sum over K classes of each class's scores over its own set M_k.

    Args:
        class_idx: (B,) long, the class to explain for each original sample; or (B, K) long, K classes explained
            together.
        pixel_set: (B, 1, *spatial) float weights of M (0/1 for a set, values in [0, 1] for a soft set); with (B, K)
            classes, (B, K, *spatial): channel k is the set of class ``class_idx[:, k]``.
        score: ``"logit"`` (default, pre-activation as in Seg-Grad-CAM) or ``"probability"`` (softmax over classes,
            sigmoid if C == 1).
    """

    def __init__(self, class_idx: torch.Tensor, pixel_set: torch.Tensor, score: Score | str = Score.LOGIT) -> None:
        classes = class_idx.reshape(class_idx.shape[0], -1)
        if pixel_set.shape[:2] != classes.shape:
            raise ValueError(
                f"a pixel set (B, K, *spatial) needs one channel per explained class: classes {tuple(classes.shape)}, "
                f"pixel set {tuple(pixel_set.shape)}."
            )
        self.class_idx = class_idx
        self.pixel_set = pixel_set
        self.score = as_choice(Score, score, "score")
        self._classes = classes

    @property
    def size(self) -> torch.Tensor:
        """(B,) total weight of each sample's pixel set(s) (its voxel count for a binary set)."""
        return self.pixel_set.flatten(1).sum(dim=1)

    @property
    def empty(self) -> torch.Tensor:
        """(B,) bool, True for samples whose pixel set is empty (their score does not depend on the input)."""
        return self.size == 0

    def _class_index(self, rows: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K, *spatial) long: the classes of each row, broadcast over the outputs' voxels."""
        classes = self._classes.to(outputs.device)[rows]
        return classes.reshape(*classes.shape, *([1] * (outputs.ndim - 2))).expand(-1, -1, *outputs.shape[2:])

    def __call__(self, outputs: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """outputs (N, C, *spatial) -> (N,) sum over M (over each M_k) of the scores of the row's class(es)."""
        rows = _rows(sample_ids, outputs.shape[0], outputs.device)
        class_maps = _class_scores(outputs, self.score).gather(1, self._class_index(rows, outputs))
        return (class_maps * self.pixel_set.to(outputs.device, outputs.dtype)[rows]).flatten(1).sum(dim=1)

    def predicted(self, outputs: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """outputs (N, C, *spatial) -> (N,) bool: at least half of the pixel-set weight of row n is still predicted
        as its class (argmax == class, or logit > 0 for single-channel outputs; each M_k as class k). An empty pixel
        set gives False."""
        rows = _rows(sample_ids, outputs.shape[0], outputs.device)
        weights = self.pixel_set.to(outputs.device, outputs.dtype)[rows].flatten(1)
        still_class = predicted_mask(outputs, self._classes.to(outputs.device)[rows]).flatten(1)
        total = weights.sum(dim=1)
        return (total > 0) & ((weights * still_class).sum(dim=1) >= 0.5 * total)


def per_voxel_scale(target: ClassTarget | SegmentationTarget) -> torch.Tensor:
    """(B,) divisor that turns a target's scores into per-voxel means: 1 for a classifier, the pixel-set size for a
    segmenter, NaN for an empty pixel set (the sample has no score, so anything divided by it is skipped as NaN).

    Perturbation metrics report segmentation scores as the mean over the pixel set so that they read like a
    classifier's (e.g. a probability change in [-1, 1]) and do not grow with the size of the region.
    """
    if isinstance(target, SegmentationTarget):
        size = target.size
        return torch.where(size > 0, size, torch.full_like(size, float("nan")))
    return torch.ones(target.class_idx.shape, device=target.class_idx.device)


def predicted_mask(outputs: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Voxels predicted as each sample's class (or classes).

    Args:
        outputs: (B, C, *spatial) segmentation outputs (logits or probabilities: only their order matters, and for
            one channel, the sign of the logit).
        class_idx: (B,) class per sample, or (B, K) classes per sample.

    Returns:
        (B, 1, *spatial) bool, or (B, K, *spatial) for (B, K) classes: argmax over classes == the class, or logit > 0
        for single-channel outputs.
    """
    classes = class_idx.reshape(class_idx.shape[0], -1)
    if outputs.shape[1] == 1:
        return (outputs > 0).expand(-1, classes.shape[1], *outputs.shape[2:])
    return outputs.argmax(dim=1, keepdim=True) == classes.reshape(*classes.shape, *([1] * (outputs.ndim - 2)))


def peak_voxel(outputs: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """The one voxel of each sample (and class) where the class's score is highest (first in memory order on ties).

    Args:
        outputs: (B, C, *spatial) segmentation outputs (logits or probabilities: only their order per class matters).
        class_idx: (B,) class per sample, or (B, K) classes per sample.

    Returns:
        (B, 1, *spatial) float, or (B, K, *spatial) for (B, K) classes: 1 at the peak, 0 elsewhere.
    """
    classes = class_idx.reshape(class_idx.shape[0], -1).to(outputs.device)
    index = classes.reshape(*classes.shape, *([1] * (outputs.ndim - 2))).expand(-1, -1, *outputs.shape[2:])
    scores = outputs.gather(1, index).flatten(2)
    peaks = torch.zeros_like(scores, dtype=torch.float32).scatter_(2, scores.argmax(dim=2, keepdim=True), 1.0)
    return peaks.reshape(*classes.shape, *outputs.shape[2:])


def _largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep, per sample and channel, the largest connected component (full connectivity: 8 in 2D, 26 in 3D) of a
    (B, K, *spatial) bool mask.

    This defines the target on a small boolean mask once per call, so scipy on the CPU is fine here.
    """
    structure = np.ones((3,) * (mask.ndim - 2), dtype=bool)
    kept = []
    for channel in mask.flatten(0, 1).cpu().numpy():
        labels, num_components = ndimage.label(channel, structure=structure)
        if num_components == 0:
            kept.append(np.zeros_like(channel))
            continue
        sizes = np.bincount(labels.ravel())[1:]
        kept.append(labels == 1 + int(np.argmax(sizes)))
    return torch.as_tensor(np.stack(kept), device=mask.device).reshape(mask.shape)


def index_pixel_set(pixel_set: Sequence[int | slice], outputs: torch.Tensor, num_sets: int = 1) -> torch.Tensor:
    """Pixel set (B, num_sets, *spatial) of one voxel (tuple of ints) or a box (tuple of slices), the same for every
    sample (and every explained class of a :class:`ClassSet`).

    Args:
        pixel_set: one int or slice per spatial dim of ``outputs``.
        outputs: (B, C, *spatial) tensor giving the batch size, spatial shape and device.
        num_sets: channels of the result: the number of classes explained together.
    """
    spatial_shape = tuple(outputs.shape[2:])
    if len(pixel_set) != len(spatial_shape) or not all(isinstance(i, int | slice) for i in pixel_set):
        raise ValueError(
            f"a pixel set given as a tuple must hold one int (one voxel) or one slice (a box) per spatial dim, i.e. "
            f"{len(spatial_shape)} entries for outputs of spatial shape {spatial_shape}; got {pixel_set!r}."
        )
    for position, size in zip(pixel_set, spatial_shape):
        if isinstance(position, int) and not -size <= position < size:
            raise ValueError(f"pixel set index {pixel_set!r} lies outside the outputs' spatial shape {spatial_shape}.")
    voxels = torch.zeros(outputs.shape[0], num_sets, *spatial_shape, device=outputs.device)
    voxels[(slice(None), slice(None), *pixel_set)] = 1.0
    return voxels


def tensor_pixel_set(pixel_set: torch.Tensor, outputs: torch.Tensor, num_sets: int = 1) -> torch.Tensor:
    """Check a given pixel set (B or 1, 1 or num_sets, *spatial), binary or soft weights in [0, 1], and broadcast it
    to the batch (and to every explained class of a :class:`ClassSet`): (B, num_sets, *spatial) float32 on the
    outputs' device."""
    batch_size, spatial_shape = outputs.shape[0], tuple(outputs.shape[2:])
    batch_fits = pixel_set.ndim == outputs.ndim and pixel_set.shape[0] in (1, batch_size)
    if not batch_fits or pixel_set.shape[1] not in (1, num_sets):
        expected = "1" if num_sets == 1 else f"1 or {num_sets} (one per explained class)"
        raise ValueError(
            f"pixel_set must have shape (B or 1, {expected}, *spatial) = ({batch_size} or 1, {expected}, "
            f"*{spatial_shape}) to match outputs of shape {tuple(outputs.shape)}, got {tuple(pixel_set.shape)}; e.g. "
            "use (labels == class_idx)[:, None]."
        )
    if tuple(pixel_set.shape[2:]) != spatial_shape:
        raise ValueError(
            f"pixel_set spatial shape {tuple(pixel_set.shape[2:])} differs from the outputs' spatial shape "
            f"{spatial_shape}; resample it to the model output's grid."
        )
    weights = torch.as_tensor(pixel_set).to(device=outputs.device, dtype=torch.float32)
    if not torch.isfinite(weights).all() or weights.min() < 0 or weights.max() > 1:
        raise ValueError(
            "pixel_set values must lie in [0, 1] (binary, or soft weights); for a label map pass (labels == class_idx)."
        )
    return weights.expand(batch_size, num_sets, *weights.shape[2:]).clone()


def as_pixel_set_choice(value: Any, config_id: str = "pixel_set") -> PixelSet | tuple[int, ...]:
    """A pixel set as a config can give it: a :class:`~monai_xai.enums.PixelSet` name or one voxel as a list of ints
    (JSON has no tuples), e.g. ``"pred"``, ``"empty"`` or ``[40, 52, 18]`` (indices on the network's input grid).

    Raises:
        ValueError: naming ``config_id``, for anything else.
    """
    if isinstance(value, list | tuple):
        if not value or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise ValueError(
                f"{config_id} as a list must be one voxel, one int index per spatial dim of the network's input (e.g. "
                f"[40, 52, 18]), got {value!r}."
            )
        return tuple(value)
    try:
        return as_choice(PixelSet, value, config_id)
    except ValueError as error:
        raise ValueError(f"{error} Or give one voxel as a list of ints, e.g. [40, 52, 18].") from None


def resolve_pixel_set(outputs: torch.Tensor, class_idx: torch.Tensor, pixel_set: PixelSetSpec) -> torch.Tensor:
    """The pixel set M of each sample as weights (B, 1, *spatial) in [0, 1] on the outputs' device; with (B, K)
    classes, one set per class: (B, K, *spatial).

    Args:
        outputs: (B, C, *spatial) segmentation outputs the set is resolved on (only their values are used).
        class_idx: (B,) class per sample, or (B, K) classes explained together.
        pixel_set: ``None`` or ``"pred"`` (voxels predicted as the class), ``"largest_component"``, ``"image"``
            (every voxel), ``"empty"``, ``"peak"`` (the voxel of the class's highest score), a (B or 1, 1 or K,
            *spatial) tensor in [0, 1], a tuple of ints (one voxel) or of slices (a box); see
            :class:`~monai_xai.enums.PixelSet`. With K classes a one-channel set, a voxel or a box is the set of every
            class.

    Raises:
        ValueError: an unknown name, or a tensor / voxel / box that does not fit the outputs.
        TypeError: anything else.
    """
    num_sets = class_idx.reshape(class_idx.shape[0], -1).shape[1]
    if pixel_set is None or isinstance(pixel_set, str):
        name = as_choice(PixelSet, pixel_set or PixelSet.PRED, "pixel_set")
        if name in (PixelSet.IMAGE, PixelSet.EMPTY):
            fill = torch.ones if name == PixelSet.IMAGE else torch.zeros
            return fill(outputs.shape[0], num_sets, *outputs.shape[2:], device=outputs.device)
        if name == PixelSet.PEAK:
            return peak_voxel(outputs, class_idx)
        predicted = predicted_mask(outputs, class_idx)
        return (_largest_component(predicted) if name == PixelSet.LARGEST_COMPONENT else predicted).float()
    if isinstance(pixel_set, torch.Tensor):
        return tensor_pixel_set(pixel_set, outputs, num_sets)
    if isinstance(pixel_set, tuple | list):
        return index_pixel_set(pixel_set, outputs, num_sets)
    raise TypeError(
        f"pixel_set must be None, one of {[name.value for name in PixelSet]}, a tensor, or a tuple of ints/slices, "
        f"got {type(pixel_set).__name__}."
    )


def build_target(
    outputs: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | ClassSet | None = None,
    pixel_set: PixelSetSpec = None,
    score: Score | str = Score.LOGIT,
    warn_empty: bool = True,
) -> ClassTarget | SegmentationTarget:
    """Build the target for a batch from the model's outputs on it.

    Classification when ``outputs`` is (B, C); segmentation when it is (B, C, *spatial).

    Args:
        outputs: the model's outputs on the images to explain (only their values are used, never their graph).
        class_idx: class to explain: ``None`` (classification only: the predicted class of each sample), an int for all
            samples, or one per sample (sequence or (B,) tensor). Required for segmentation outputs, which also take
            several classes explained together: a :class:`ClassSet` (the same classes for every sample) or a (B, K)
            tensor (each class over its own pixel set, scores summed; see the module docstring).
        pixel_set: segmentation only, the pixel set M summed over: ``None`` or ``"pred"`` (voxels predicted as the
            class: argmax == class, or logit > 0 for single-channel outputs), ``"largest_component"`` (the largest
            connected component of that prediction), ``"image"`` (every voxel, the same for every model; with
            ``score="probability"`` the target is the class's expected volume, whose gradient lies where the
            prediction is uncertain), a (B or 1, 1, *spatial) tensor with values in [0, 1] (e.g. a ground-truth
            mask; (B or 1, K, *spatial) for K classes), a tuple of ints (one voxel, every sample) or a tuple of slices
            (a box, every sample). With several classes each class gets its own set (e.g. ``"pred"``: the voxels
            predicted as that class).
        score: ``"logit"`` (default) or ``"probability"``.
        warn_empty: warn when a sample's pixel set is empty (its score is 0 whatever the input: maps all zeros).

    Raises:
        ValueError: unknown score, class_idx out of range or missing for segmentation, a pixel set for a classifier,
            a pixel set of the wrong shape or values.
        TypeError: outputs that are not one tensor.
    """
    score = as_choice(Score, score, "score")
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(
            f"the model must return one tensor (B, C) or (B, C, *spatial), got {type(outputs).__name__}; wrap a "
            "network with several outputs (e.g. deep supervision) so that it returns the final one."
        )
    if outputs.ndim < 2:
        raise ValueError(f"model outputs must be (B, C) or (B, C, *spatial), got shape {tuple(outputs.shape)}.")
    outputs = outputs.detach()
    batch_size, num_classes = outputs.shape[:2]
    segmentation = outputs.ndim > 2
    several = isinstance(class_idx, ClassSet) or (isinstance(class_idx, torch.Tensor) and class_idx.ndim == 2)
    if several and not segmentation:
        raise ValueError(
            f"several classes at once ({class_idx}) are only explained for segmentation outputs (B, C, *spatial); "
            f"this model returns {tuple(outputs.shape)}: give one class, or None for each sample's predicted class."
        )
    if class_idx is None:
        if segmentation:
            raise ValueError(
                f"class_idx is required for segmentation outputs (shape {tuple(outputs.shape)}): pass the class "
                "whose region to explain, e.g. class_idx=1, or ClassSet() for every foreground class at once, with "
                "pixel_set='pred' (default), a ground-truth mask, a voxel or a box."
            )
        index = outputs.argmax(dim=1)
    elif several:
        index = class_sets(class_idx, batch_size, num_classes, outputs.device)
    else:
        index = per_sample_index(class_idx, batch_size, outputs.device)
    if ((index < 0) | (index >= num_classes)).any():
        raise ValueError(
            f"class_idx {index.tolist()} out of range: the model has {num_classes} output classes "
            f"(0..{num_classes - 1})."
        )
    if not segmentation:
        if pixel_set is not None:
            raise ValueError(
                "pixel_set is only used for segmentation outputs (B, C, *spatial); this model returns "
                f"{tuple(outputs.shape)}."
            )
        return ClassTarget(index, score)
    target = SegmentationTarget(index, resolve_pixel_set(outputs, index, pixel_set), score)
    empty = target.empty
    if warn_empty and pixel_set == PixelSet.EMPTY:
        warnings.warn(
            "pixel_set='empty' was asked for: the explained score is 0 whatever the input, so every map is all zeros "
            "and ROAD and deletion/insertion give NaN (the control of the segmentation-CAM study).",
            stacklevel=2,
        )
    elif warn_empty and empty.any():
        warnings.warn(
            f"the pixel set is empty for sample(s) {empty.nonzero()[:, 0].tolist()} (class {index[empty].tolist()}); "
            "their score is 0 whatever the input (all-zero maps; ROAD and deletion/insertion give NaN). "
            "Check class_idx and pixel_set (with pixel_set='empty' this is the control that was asked for).",
            stacklevel=2,
        )
    return target
