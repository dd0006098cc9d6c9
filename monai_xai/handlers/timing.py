"""``XAITimingHandler``: explanation time per method, per case and on average, as engine metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_xai.enums import MetricInput, seconds_key
from monai_xai.handlers.xai_metrics import SaliencyMetricHandler
from monai_xai.metrics.catalogue import SECONDS, MetricKey
from monai_xai.metrics.per_sample import PerSampleMetric

__all__ = ["XAITimingHandler", "CaseValueMetric"]


class CaseValueMetric(PerSampleMetric):
    """Buffers one given value per case, unchanged: ``metric(values (B,) or (B, 1))``; ``aggregate`` is the mean."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        return y_pred.reshape(-1, 1).double()


class XAITimingHandler:
    """Record the seconds each method took per case (``"xai_seconds_<method>"`` of the ``XAIInferer`` output).

    ``engine.state.metrics["xai_seconds_<method>"]`` is the mean over cases (all ranks) and
    ``engine.state.metric_details["xai_seconds_<method>"]`` holds the per-case values (N, 1). A case's time is its
    batch's time divided by the batch size. Each is registered as the metric ``"seconds"`` of its method
    (:class:`~monai_xai.metrics.MetricKey`).

    Args:
        methods: the ``XAIInferer``'s methods.
    """

    def __init__(self, methods: str | Sequence[str]) -> None:
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.handlers: dict[str, SaliencyMetricHandler] = {}

    def attach(self, engine: Any) -> None:
        for method in self.methods:
            key = MetricKey(SECONDS, method, seconds_key(method))
            handler = SaliencyMetricHandler(
                CaseValueMetric(), name=key.name, pred_key=key.name, compares_with=MetricInput.NONE, key=key
            )
            handler.attach(engine)
            self.handlers[key.name] = handler
