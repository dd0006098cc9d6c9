"""Localisation metrics: how well a saliency map agrees with a ground-truth region mask.

All functions take ``saliency`` (B, 1, *spatial) and a binary ``mask`` of the same shape, work on 2D and 3D, stay on
the input's device and return one value per sample, ``(B,)``. A sample the metric is undefined for (empty mask, and
the further cases each docstring names) is NaN, with a warning; the ``*Metric`` classes leave those samples out of
the mean (see :mod:`monai_xai.metrics.per_sample`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import MetricReduction

from monai_xai.enums import OTSU
from monai_xai.metrics.per_sample import PerSampleMetric, check_binary_map, check_saliency, warn_undefined

__all__ = [
    "effective_heat_ratios",
    "ehr_auc",
    "heat_diff",
    "saliency_iou",
    "saliency_dice",
    "otsu_threshold",
    "saliency_auprc",
    "pointing_game",
    "relevance_mass_accuracy",
    "EHRAUCMetric",
    "HeatDiffMetric",
    "SaliencyIoUMetric",
    "SaliencyDiceMetric",
    "SaliencyAUPRCMetric",
    "PointingGameMetric",
    "RelevanceMassAccuracyMetric",
]

# a value, one value per sample (B,), or "otsu" (each map's Otsu threshold)
Threshold = float | torch.Tensor | str | None

# InputIBA ignores heat below this value when it picks quantile thresholds ("points of interest").
_POI_THRESHOLD = 0.1
# InputIBA caps every threshold at this share of the maximum so the top threshold still selects the peak.
_MAX_THRESHOLD_SHARE = 0.99


def _flat_inputs(saliency: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    saliency = check_saliency(saliency)
    mask = check_binary_map("mask", mask, saliency)
    return saliency.flatten(1), mask.flatten(1)


def _nan_where(undefined: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(values, float("nan")), values)


def _flat(heat: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B,) bool: the map is constant, so it has no peak and points nowhere (e.g. an all-zero map)."""
    return heat.amax(dim=1) == heat.amin(dim=1)


def _quantiles_of_selected(values: torch.Tensor, selected: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Per-row quantiles (numpy's default linear interpolation) of the selected entries of ``values``.

    Args:
        values: (B, N) real tensor.
        selected: (B, N) bool tensor; each row needs at least one True entry for its result to be meaningful.
        levels: (K,) quantile levels in [0, 1].

    Returns:
        (B, K) tensor.
    """
    length = values.shape[1]
    # unselected entries sort first, so the selected ones fill the tail of every sorted row
    ordered = torch.where(selected, values, torch.full_like(values, -math.inf)).sort(dim=1).values
    count = selected.sum(dim=1, keepdim=True)
    position = levels[None] * (count - 1).clamp_min(0).to(values.dtype)
    low = position.floor()
    first = length - count.clamp_min(1)
    value_low = ordered.gather(1, first + low.long())
    value_high = ordered.gather(1, first + position.ceil().long())
    return value_low + (value_high - value_low) * (position - low)


def effective_heat_ratios(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    thresholds: str = "equidistant",
    steps: int = 11,
    weighted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective heat ratio (EHR) curve: share of the thresholded heat that falls inside the mask, per threshold.

    For each threshold ``t_k`` the map is binarised as ``above = saliency >= t_k`` and
    ``ratio_k = |above & mask| / |above|`` (``weighted=False``) or ``sum(saliency[above & mask]) / |above|``
    (``weighted=True``, InputIBA's ``weight_by_heat``); a threshold that selects nothing gives ratio 0.

    Threshold modes (``levels`` is ``linspace(0, 1, steps)`` in both):

    - ``"equidistant"`` (Qiu et al., the default): ``t_k = levels[k]`` applied to the map as given.
    - ``"quantile"`` (InputIBA ``EffectiveHeatRatios``): heat below 0.1 is set to 0; the points of interest are the
      values >= 0.1; ``t_k = min(quantile(points, levels[k]), 0.99 * max)`` with numpy's linear quantile. A sample
      with no value >= 0.1 has no threshold (the reference raises on it): its curve is NaN.

    The x axis of the curve is ``levels`` in both modes. InputIBA divides maps whose maximum exceeds 1 by 255
    (uint8 heatmaps); here the map must already lie in [0, 1].

    Args:
        saliency: (B, 1, *spatial) map with values in [0, 1], e.g. from ``monai_xai.utils.normalize_per_sample``.
        mask: (B, 1, *spatial) binary ground-truth region (bool or 0/1).
        thresholds: ``"equidistant"`` or ``"quantile"``.
        steps: number of thresholds, >= 2 (InputIBA uses 11).
        weighted: count heat instead of voxels inside the mask (default False; InputIBA's default is True).

    Returns:
        ``(ratios, levels)``: (B, steps) curve in [0, 1], NaN for skipped samples (empty mask, or a flat map: one
        without a peak, e.g. the all-zero map of an empty pixel set; in quantile mode also no heat >= 0.1), and the
        (steps,) x axis.
    """
    heat, roi = _flat_inputs(saliency, mask)
    if thresholds not in ("equidistant", "quantile"):
        raise ValueError(f'thresholds must be "equidistant" or "quantile", got {thresholds!r}.')
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (number of thresholds), got {steps!r}.")
    if heat.min() < 0 or heat.max() > 1:
        raise ValueError(
            "saliency must lie in [0, 1] for effective heat ratios; normalise it first, e.g. with "
            "monai_xai.utils.normalize_per_sample."
        )
    levels = torch.linspace(0.0, 1.0, steps, dtype=heat.dtype, device=heat.device)
    undefined = ~roi.any(dim=1) | _flat(heat)
    warn_undefined("effective heat ratio", undefined, "empty mask or a flat map")
    if thresholds == "equidistant":
        cuts = levels.expand(heat.shape[0], steps)
    else:
        points = heat >= _POI_THRESHOLD
        no_points = ~points.any(dim=1)
        warn_undefined("effective heat ratio", no_points & ~undefined, "no saliency >= 0.1 to take quantiles of")
        undefined = undefined | no_points
        heat = torch.where(points, heat, torch.zeros_like(heat))
        peak = heat.amax(dim=1, keepdim=True)
        cuts = torch.minimum(_quantiles_of_selected(heat, points, levels), _MAX_THRESHOLD_SHARE * peak)
    ratios = []
    for k in range(steps):
        above = heat >= cuts[:, k : k + 1]
        inside = above & roi
        amount = (heat * inside).sum(dim=1) if weighted else inside.sum(dim=1).to(heat.dtype)
        ratios.append(amount / above.sum(dim=1).clamp_min(1))
    return _nan_where(undefined[:, None], torch.stack(ratios, dim=1)), levels


def ehr_auc(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    thresholds: str = "equidistant",
    steps: int = 11,
    weighted: bool = False,
) -> torch.Tensor:
    """Area under the effective heat ratio curve, trapezoid rule over the threshold axis [0, 1].

    See :func:`effective_heat_ratios` for the curve, the threshold modes and the arguments; the reference
    InputIBA metric is ``ehr_auc(saliency, mask, thresholds="quantile", steps=11, weighted=True)``.

    Returns:
        (B,) tensor in [0, 1]; NaN for skipped samples.
    """
    ratios, levels = effective_heat_ratios(saliency, mask, thresholds=thresholds, steps=steps, weighted=weighted)
    return torch.trapezoid(ratios, levels, dim=1)


def heat_diff(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean saliency inside the mask minus mean saliency outside it (Qiu et al., "Diff").

    Args:
        saliency: (B, 1, *spatial) real map (normalise it first to compare methods on one scale).
        mask: (B, 1, *spatial) binary ground-truth region.

    Returns:
        (B,) tensor; NaN where the mask is empty or covers the whole image (one of the two means does not exist).
    """
    heat, roi = _flat_inputs(saliency, mask)
    inside_count = roi.sum(dim=1)
    outside_count = roi.shape[1] - inside_count
    undefined = (inside_count == 0) | (outside_count == 0)
    warn_undefined("heat_diff", undefined, "mask empty or covering the whole image")
    inside_mean = (heat * roi).sum(dim=1) / inside_count.clamp_min(1)
    outside_mean = (heat * ~roi).sum(dim=1) / outside_count.clamp_min(1)
    return _nan_where(undefined, inside_mean - outside_mean)


def _binarize(heat: torch.Tensor, threshold: Threshold, top_fraction: float | None) -> torch.Tensor:
    """(B, N) map -> (B, N) bool selection at a value threshold (one, one per sample, or each map's Otsu
    threshold) or of the top fraction."""
    if (threshold is None) == (top_fraction is None):
        raise ValueError(
            'pass exactly one of threshold=<value> or "otsu" (keep saliency >= value) or top_fraction=<(0, 1]>.'
        )
    if isinstance(threshold, str):
        if threshold != OTSU:
            raise ValueError(f'threshold must be a number, one per sample, or "otsu", got {threshold!r}.')
        threshold = otsu_threshold(heat[:, None])
    if threshold is not None:
        cut = torch.as_tensor(threshold, dtype=heat.dtype, device=heat.device).reshape(-1, 1)
        if cut.shape[0] not in (1, heat.shape[0]):
            raise ValueError(f"threshold must be one value or one per sample ({heat.shape[0]}), got {cut.shape[0]}.")
        return heat >= cut
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}.")
    keep = math.ceil(top_fraction * heat.shape[1])
    # stable sort: among equal values the lower flat index is kept, so the selection is deterministic
    order = heat.argsort(dim=1, descending=True, stable=True)[:, :keep]
    return torch.zeros_like(heat, dtype=torch.bool).scatter_(1, order, True)


def _overlap_counts(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    threshold: Threshold,
    top_fraction: float | None,
    metric: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    heat, roi = _flat_inputs(saliency, mask)
    selected = _binarize(heat, threshold, top_fraction)
    undefined = ~roi.any(dim=1)
    warn_undefined(metric, undefined, "empty mask")
    return (selected & roi).sum(dim=1), selected.sum(dim=1), roi.sum(dim=1), undefined


def saliency_iou(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    threshold: Threshold = None,
    top_fraction: float | None = None,
) -> torch.Tensor:
    """Intersection over union of the binarised saliency map and the mask.

    Args:
        saliency: (B, 1, *spatial) real map.
        mask: (B, 1, *spatial) binary ground-truth region.
        threshold: keep voxels with ``saliency >= threshold``: one value, (B,) one per sample, or ``"otsu"`` (each
            map's :func:`otsu_threshold`); or
        top_fraction: keep the ``ceil(top_fraction * N)`` most salient voxels of each sample (ties: lower flat index
            first). Exactly one of the two must be given.

    Returns:
        (B,) tensor in [0, 1]; NaN where the mask is empty.
    """
    intersection, selected, region, undefined = _overlap_counts(saliency, mask, threshold, top_fraction, "saliency_iou")
    union = (selected + region - intersection).clamp_min(1)
    return _nan_where(undefined, intersection / union)


def saliency_dice(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    threshold: Threshold = None,
    top_fraction: float | None = None,
) -> torch.Tensor:
    """Dice overlap ``2 |S & M| / (|S| + |M|)`` of the binarised saliency map S and the mask M.

    Arguments as :func:`saliency_iou`.

    Returns:
        (B,) tensor in [0, 1]; NaN where the mask is empty.
    """
    intersection, selected, region, undefined = _overlap_counts(
        saliency, mask, threshold, top_fraction, "saliency_dice"
    )
    return _nan_where(undefined, 2 * intersection / (selected + region).clamp_min(1))


def otsu_threshold(saliency: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each map: the histogram cut that maximises the between-class variance.

    As ``skimage.filters.threshold_otsu``: ``bins`` equal bins between the map's minimum and maximum, a threshold at a
    bin centre; voxels ``>= threshold`` are the foreground.

    Args:
        saliency: (B, 1, *spatial) real map.
        bins: histogram bins.

    Returns:
        (B,) thresholds; a flat map's is its value.
    """
    heat = check_saliency(saliency).flatten(1).double()
    low, high = heat.amin(dim=1, keepdim=True), heat.amax(dim=1, keepdim=True)
    width = (high - low) / bins
    index = ((heat - low) / width.clamp_min(1e-300)).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(heat.shape[0], bins, dtype=torch.float64, device=heat.device).scatter_add_(
        1, index, torch.ones_like(heat)
    )
    centres = low + width * (torch.arange(bins, device=heat.device, dtype=torch.float64) + 0.5)
    weight_low = counts.cumsum(dim=1)
    weight_high = counts.flip(1).cumsum(dim=1).flip(1)
    mean_low = (counts * centres).cumsum(dim=1) / weight_low.clamp_min(1e-300)
    mean_high = (counts * centres).flip(1).cumsum(dim=1).flip(1) / weight_high.clamp_min(1e-300)
    # between-class variance of a cut after bin k: low = bins 0..k, high = k+1..
    variance = weight_low[:, :-1] * weight_high[:, 1:] * (mean_low[:, :-1] - mean_high[:, 1:]) ** 2
    best = variance.argmax(dim=1)
    thresholds = centres.gather(1, best[:, None])[:, 0]
    return torch.where(width[:, 0] > 0, thresholds, low[:, 0]).to(saliency.dtype)


def saliency_auprc(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel-level area under the precision-recall curve of the map as a detector of the mask's voxels: average
    precision ``sum_k (R_k - R_{k-1}) P_k`` over the map's distinct values as thresholds (scikit-learn's
    ``average_precision_score``; CheXlocalize reports it for heatmaps).

    Args:
        saliency: (B, 1, *spatial) real map.
        mask: (B, 1, *spatial) binary ground-truth region.

    Returns:
        (B,) tensor in [0, 1]; NaN where the mask is empty. A map that ranks voxels at random scores about the
        mask's share of the image.
    """
    heat, roi = _flat_inputs(saliency, mask)
    undefined = ~roi.any(dim=1)
    warn_undefined("saliency_auprc", undefined, "empty mask")
    precisions = []
    for values, labels in zip(heat, roi):
        order = values.argsort(descending=True, stable=True)
        ordered, hits = values[order], labels[order].double()
        true_positives = hits.cumsum(0)
        # the last position of every distinct value: thresholds keep all voxels of a tied value together
        last = torch.cat([ordered[1:] != ordered[:-1], torch.ones(1, dtype=torch.bool, device=values.device)])
        tp = true_positives[last]
        precision = tp / (torch.nonzero(last)[:, 0] + 1).double()
        recall = tp / hits.sum().clamp_min(1)
        gained = torch.diff(recall, prepend=recall.new_zeros(1))
        precisions.append((gained * precision).sum())
    return _nan_where(undefined, torch.stack(precisions).to(heat.dtype))


def pointing_game(
    saliency: torch.Tensor,
    mask: torch.Tensor,
    tolerance: float = 15,
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    """Pointing game (Zhang et al.; TorchRay): does the saliency maximum fall within ``tolerance`` of the mask?

    The point is the first maximum in flattened (C-order) index order. As in TorchRay, it hits when some mask voxel
    lies strictly closer than ``tolerance``; a point inside the mask always hits (so ``tolerance=0`` means "inside").

    Args:
        saliency: (B, 1, *spatial) real map.
        mask: (B, 1, *spatial) binary ground-truth region.
        tolerance: distance, >= 0, in voxels, or in the units of ``spacing`` (e.g. mm) when that is given. Default 15.
        spacing: voxel size per spatial dim (len(spatial) positive numbers); None means 1 voxel per axis.

    Returns:
        (B,) tensor: 1.0 hit, 0.0 miss, NaN where the mask is empty or the map is flat (no peak to point with).
        Distances are computed in float32 at least, so half-precision maps of large volumes do not overflow.
    """
    saliency = check_saliency(saliency)
    roi = check_binary_map("mask", mask, saliency)[:, 0]
    spatial = roi.shape[1:]
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}.")
    if spacing is None:
        spacing = (1.0,) * len(spatial)
    if len(spacing) != len(spatial) or any(s <= 0 for s in spacing):
        raise ValueError(
            f"spacing must hold {len(spatial)} positive voxel sizes (one per spatial dim), got {tuple(spacing)!r}."
        )
    batch = roi.shape[0]
    peak = torch.unravel_index(saliency.flatten(1).argmax(dim=1), spatial)
    # squared distance to the peak, built axis by axis and broadcast: (B, *spatial) without a coordinate grid
    dtype = torch.promote_types(saliency.dtype, torch.float32)
    distance2 = torch.zeros((batch,) + (1,) * len(spatial), dtype=dtype, device=saliency.device)
    for axis, (size, step) in enumerate(zip(spatial, spacing, strict=True)):
        offsets = torch.arange(size, dtype=dtype, device=saliency.device)[None] - peak[axis][:, None]
        view = [batch] + [1] * len(spatial)
        view[axis + 1] = size
        distance2 = distance2 + ((offsets * step) ** 2).reshape(view)
    hit = (roi & ((distance2 < tolerance**2) | (distance2 == 0))).flatten(1).any(dim=1)
    undefined = ~roi.flatten(1).any(dim=1) | _flat(saliency.flatten(1))
    warn_undefined("pointing_game", undefined, "empty mask or a flat map")
    return _nan_where(undefined, hit.to(saliency.dtype))


def relevance_mass_accuracy(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the total positive relevance that lies inside the mask (Arras et al.; Quantus).

    ``sum(relu(saliency)[mask]) / sum(relu(saliency))``: negative relevance is set to 0 first.

    Args:
        saliency: (B, 1, *spatial) real relevance map.
        mask: (B, 1, *spatial) binary ground-truth region.

    Returns:
        (B,) tensor in [0, 1]; NaN where the mask is empty or the map has no positive relevance.
    """
    heat, roi = _flat_inputs(saliency, mask)
    positive = heat.clamp_min(0)
    total = positive.sum(dim=1)
    undefined = ~roi.any(dim=1) | (total == 0)
    warn_undefined("relevance_mass_accuracy", undefined, "empty mask or no positive relevance")
    return _nan_where(undefined, (positive * roi).sum(dim=1) / torch.where(undefined, 1, total))


class EHRAUCMetric(PerSampleMetric):
    """Cumulative EHR-AUC (:func:`ehr_auc`): call with ``y_pred=saliency`` (B, 1, *spatial), ``y=mask``.

    Args:
        thresholds, steps, weighted: as :func:`ehr_auc`.
        reduction, get_not_nans: as :class:`~monai_xai.metrics.per_sample.PerSampleMetric`; skipped (NaN) samples
            are left out of the mean and not counted in ``not_nans``.
    """

    def __init__(
        self,
        thresholds: str = "equidistant",
        steps: int = 11,
        weighted: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.thresholds = thresholds
        self.steps = steps
        self.weighted = weighted

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return ehr_auc(y_pred, y, thresholds=self.thresholds, steps=self.steps, weighted=self.weighted)[:, None]


class HeatDiffMetric(PerSampleMetric):
    """Cumulative :func:`heat_diff`: call with ``y_pred=saliency`` (B, 1, *spatial), ``y=mask``."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return heat_diff(y_pred, y)[:, None]


class SaliencyIoUMetric(PerSampleMetric):
    """Cumulative :func:`saliency_iou`: call with ``y_pred=saliency``, ``y=mask``.

    Args:
        threshold, top_fraction: as :func:`saliency_iou` (exactly one of them).
        reduction, get_not_nans: as :class:`~monai_xai.metrics.per_sample.PerSampleMetric`.
    """

    def __init__(
        self,
        threshold: Threshold = None,
        top_fraction: float | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.threshold = threshold
        self.top_fraction = top_fraction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return saliency_iou(y_pred, y, threshold=self.threshold, top_fraction=self.top_fraction)[:, None]


class SaliencyDiceMetric(SaliencyIoUMetric):
    """Cumulative :func:`saliency_dice`: ``y_pred=saliency``, ``y=mask``; arguments as :class:`SaliencyIoUMetric`."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return saliency_dice(y_pred, y, threshold=self.threshold, top_fraction=self.top_fraction)[:, None]


class SaliencyAUPRCMetric(PerSampleMetric):
    """Cumulative :func:`saliency_auprc`: call with ``y_pred=saliency``, ``y=mask``."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return saliency_auprc(y_pred, y)[:, None]


class PointingGameMetric(PerSampleMetric):
    """Cumulative :func:`pointing_game` hit rate: call with ``y_pred=saliency``, ``y=mask``.

    The mean is over all samples with a non-empty mask (TorchRay additionally averages per class).
    """

    def __init__(
        self,
        tolerance: float = 15,
        spacing: Sequence[float] | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.tolerance = tolerance
        self.spacing = spacing

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return pointing_game(y_pred, y, tolerance=self.tolerance, spacing=self.spacing)[:, None]


class RelevanceMassAccuracyMetric(PerSampleMetric):
    """Cumulative :func:`relevance_mass_accuracy`: call with ``y_pred=saliency``, ``y=mask``."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return relevance_mass_accuracy(y_pred, y)[:, None]
