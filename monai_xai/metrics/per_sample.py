"""What the per-sample XAI metrics share: input checks, the NaN rule for undefined samples, the cumulative base class.

Every per-sample metric returns a ``(B,)`` tensor in which NaN marks a sample the metric is undefined for (an empty
ground-truth mask, a map without relevance, ...). The function warns with the number of such samples; the cumulative
classes buffer the NaN like any other value and leave it out when reducing, so ``aggregate`` is the mean over the
defined samples only and ``not_nans`` (``get_not_nans=True``) says how many those were.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_xai.utils import check_batch_map

__all__ = ["PerSampleMetric", "CurveMetric", "MetricCurve", "check_saliency", "check_binary_map", "warn_undefined"]


def check_saliency(saliency: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """Check that ``saliency`` is a finite (B, 1, *spatial) map and return it as a floating tensor.

    Args:
        saliency: (B, 1, *spatial) real tensor, e.g. (B, 1, H, W) or (B, 1, D, H, W).
        name: argument name used in error messages.

    Returns:
        the same values as a floating tensor (float32 unless already floating).
    """
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 1, *spatial), got {type(saliency).__name__}.")
    if saliency.ndim < 3:
        raise ValueError(
            f"{name} must have shape (B, 1, *spatial) with at least one spatial dim, got {tuple(saliency.shape)}; "
            "add the batch and channel dims (e.g. map[None, None])."
        )
    if not saliency.is_floating_point():
        saliency = saliency.float()
    check_batch_map(name, saliency, saliency)
    return saliency


def check_binary_map(name: str, value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Check that ``value`` is a binary (B, 1, *spatial) map shaped like ``reference`` and return it as bool.

    Args:
        name: argument name used in error messages (e.g. ``"mask"``).
        value: (B, 1, *spatial) bool tensor or real tensor holding only 0 and 1.
        reference: (B, 1, *spatial) tensor whose shape ``value`` must match.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 1, *spatial), got {type(value).__name__}.")
    check_batch_map(name, value, reference)
    if value.dtype == torch.bool:
        return value
    if not ((value == 0) | (value == 1)).all():
        raise ValueError(
            f"{name} must be binary (bool, or numbers that are all 0 or 1); threshold it first, e.g. {name} > 0.5."
        )
    return value.bool()


def warn_undefined(metric: str, undefined: torch.Tensor, reason: str) -> None:
    """Warn once per call when some samples of a batch are NaN because ``metric`` is undefined for them.

    Args:
        metric: metric name for the message.
        undefined: (B,) bool tensor, True where the sample's value is NaN.
        reason: why those samples are undefined (e.g. ``"empty mask"``).
    """
    count = int(undefined.sum())
    if count:
        warnings.warn(
            f"{metric}: {count} of {undefined.numel()} samples skipped ({reason}); their value is NaN and cumulative "
            "metrics leave them out of the mean.",
            stacklevel=3,
        )


class PerSampleMetric(CumulativeIterationMetric):
    """Cumulative metric that buffers one value per sample and reduces over the samples that are not NaN.

    Subclasses implement ``_compute_tensor(y_pred, y, **kwargs)`` by calling their plain function and returning its
    ``(B,)`` result as ``(B, 1)``; this class only buffers and reduces, so the result over several iterations (and
    across distributed ranks, through MONAI's buffer synchronisation) equals one call over the concatenated batch.

    Args:
        reduction: MONAI reduction applied by ``aggregate`` (default ``"mean"``; ``"none"`` returns the buffer).
        get_not_nans: if True, ``aggregate`` returns ``(value, not_nans)``, ``not_nans`` being the number of samples
            the metric was defined for; the number skipped is ``len(metric) - not_nans``.
    """

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered per-sample values, leaving NaN (skipped) samples out.

        Args:
            reduction: overrides the reduction given at construction.

        Returns:
            the reduced value (NaN when no sample was defined, rather than MONAI's 0), and with ``get_not_nans``
            the count of defined samples.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"{type(self).__name__} has nothing to aggregate; call it on at least one batch first.")
        value, not_nans = do_metric_reduction(data, reduction or self.reduction)
        value = torch.where(not_nans > 0, value, torch.full_like(value, float("nan")))
        return (value, not_nans) if self.get_not_nans else value


class MetricCurve(NamedTuple):
    """One curve of a curve-valued metric, e.g. ROAD's score change at each percentage of pixels kept.

    Attributes:
        x: the curve's positions (e.g. percentiles), length P.
        y: its values at those positions, length P.
        x_label: what ``x`` measures, for plots.
        y_label: what ``y`` measures, for plots.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    x_label: str
    y_label: str


class CurveMetric(PerSampleMetric):
    """A per-sample metric whose row per case holds whole curves and, in its last column, one headline value.

    ``aggregate`` with the default ``"mean_batch"`` reduction keeps the columns; :meth:`curves` names the curves of
    such a row, and the last column (e.g. the mean over the curve, or ROAD's combined score) is what tables report.
    Subclasses implement ``_compute_tensor`` (rows of the layout above) and :meth:`curves`.
    """

    def curves(self, row: torch.Tensor) -> dict[str, MetricCurve]:
        """The named curves held by one row (C,) of this metric (aggregated over cases, or of one case)."""
        raise NotImplementedError(f"{type(self).__name__} must name the curves of its rows.")
