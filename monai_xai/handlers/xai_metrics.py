"""Ignite handlers that score the CAMs an :class:`~monai_xai.inferers.XAIInferer` puts into the engine output.

``SaliencyMetricHandler`` is MONAI's ``IgniteMetricHandler`` fed from the engine's per-case dicts (keys of
:class:`~monai_xai.enums.XAIKeys`): the maps of one method as ``y_pred``, and, by what the metric compares them with,
the ground-truth region, or the input images plus the explained class (``"xai_class"``) and, for a segmentation
network, the explained pixel set (``"xai_pixel_set"``), so that metrics re-running the network score exactly what the
maps explain. Values land in ``engine.state.metrics[name]``, per-case values in ``engine.state.metric_details[name]``
(what MONAI's ``MetricsSaver`` writes) and, for curve-valued metrics such as ROAD, the mean curves in
``engine.state.metric_curves[name]`` as ``{curve name: MetricCurve}``; the cumulative metrics all-gather their
buffers, so a run split over ranks aggregates to the one-process result.

``XAIMetricHandler`` attaches one such handler per metric and explanation method, named ``"<metric>_<method>"``; it
is what the config overlays use, because a bundle's ``handlers`` list cannot grow with (command-line) lists of metrics
and methods.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics.metric import reinit__is_reduced
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import CommonKeys
from torch import nn

from monai_xai.enums import EXPLAINED_CLASS, MetricInput, Score, XAIKeys, as_choice, saliency_key
from monai_xai.handlers.engine_data import (
    case_value,
    engine_cases,
    output_value,
    register_metric_key,
    stack_values,
)
from monai_xai.metrics.catalogue import METRICS, MetricKey, region_mask
from monai_xai.metrics.per_sample import CurveMetric, MetricCurve

__all__ = ["SaliencyMetricHandler", "XAIMetricHandler"]

logger = logging.getLogger(__name__)


def _explained_classes(engine: Engine) -> torch.Tensor:
    """The iteration's explained classes: (B,), or (B, K) when a segmenter explained K classes together."""
    classes = stack_values(engine, XAIKeys.CLASS)
    return classes.reshape(classes.shape[0], -1) if classes.ndim > 1 and classes[0].numel() > 1 else classes.reshape(-1)


class SaliencyMetricHandler(IgniteMetricHandler):
    """Cumulative metric over one method's maps (or any per-case output value), read from the engine each iteration.

    Args:
        metric_fn: a ``CumulativeIterationMetric``, called as ``metric_fn(y_pred, y, **kwargs)`` on batch-first tensors.
        name: key in ``engine.state.metrics`` / ``metric_details``, e.g. ``"ehr_auc_gradcam"``.
        pred_key: engine-output key of ``y_pred``, e.g. ``"saliency_gradcam"`` (B, 1, *spatial).
        compares_with: what ``y`` is (:class:`~monai_xai.enums.MetricInput`): ``"region"`` (binary ground truth from
            ``region_key``, see :func:`region_mask`), ``"image"`` (the input images (B, C, *spatial); the metric also
            gets ``class_idx``, the explained class, and ``pixel_set``, the explained pixel set of a segmentation
            network) or ``"none"`` (no ``y``).
        region_key: output or batch key of the region (default ``"label"``).
        region_value: which region of ``region_key``: None (foreground), an int, or ``"class"`` (the explained class).
        save_details: keep per-case values in ``engine.state.metric_details[name]``.
        key: the metric and method the values belong to; registered in ``engine.state.xai_metric_keys`` under
            ``name`` when the run starts, so that readers of ``engine.state.metrics`` need not parse ``name``.
    """

    def __init__(
        self,
        metric_fn: CumulativeIterationMetric,
        name: str,
        pred_key: str,
        compares_with: MetricInput | str = MetricInput.REGION,
        region_key: str = CommonKeys.LABEL,
        region_value: int | str | None = None,
        save_details: bool = True,
        key: MetricKey | None = None,
    ) -> None:
        super().__init__(metric_fn=metric_fn, save_details=save_details)
        self.name = name
        self.key = key
        self.pred_key = pred_key
        self.compares_with = as_choice(MetricInput, compares_with, "compares_with")
        self.region_key = region_key
        self.region_value = region_value
        self.curves: dict[str, MetricCurve] = {}
        # cases scored / without a ground-truth region (NaN values), of a region metric
        self.cases_seen = 0
        self.cases_without_region = 0

    def attach(self, engine: Engine, name: str | None = None) -> None:  # type: ignore[override]
        """Attach under ``name`` (default: the name given at construction), so a bundle's ``handlers`` list works."""
        super().attach(engine, self.name if name is None else name)
        if self.key is not None:
            engine.add_event_handler(Events.STARTED, partial(register_metric_key, key=self.key))

    def iteration_completed(self, engine: Engine) -> None:
        """Feed the current iteration's cases to the metric (ignite's ``output_transform`` sees only the output, and
        a region may be in the batch only). An iteration without cases (every case unreadable) adds nothing."""
        cases = engine_cases(engine.state.output)
        if not cases:
            return
        if self.compares_with == MetricInput.REGION:
            self._update_regions(engine, len(cases))
        else:
            self.update(self._metric_inputs(engine))

    def _update_regions(self, engine: Engine, num_cases: int) -> None:
        """A region metric's values of the iteration's cases: NaN for a case without a ground-truth region (its
        ``region_key`` absent or None, as MONAI's evaluator stores it for an image-only datalist), so that the
        values stay one per case and the mean is over the cases that have one."""
        regions = [self._case_region(engine, index) for index in range(num_cases)]
        present = [index for index, region in enumerate(regions) if region is not None]
        self.cases_seen += num_cases
        self.cases_without_region += num_cases - len(present)
        if len(present) == num_cases:
            self.update(self._metric_inputs(engine))
            return
        y_pred = stack_values(engine, self.pred_key)
        # the (B, 1) rows PerSampleMetric buffers, NaN where a case has no region
        values = torch.full((num_cases, 1), math.nan, dtype=y_pred.dtype, device=y_pred.device)
        if present:
            rows = torch.tensor(present, device=y_pred.device)
            label = torch.stack([torch.as_tensor(regions[index]) for index in present]).to(y_pred.device)
            class_idx = _explained_classes(engine)[rows] if self.region_value == "class" else None
            scored = self.metric_fn._compute_tensor(y_pred[rows], region_mask(label, class_idx, self.region_value))
            values[rows] = torch.as_tensor(scored).reshape(len(present), 1).to(values)
        self.metric_fn.extend(values)

    def _case_region(self, engine: Engine, index: int) -> Any:
        """Case ``index``'s ground truth under ``region_key``, None when it has none."""
        try:
            region = case_value(engine, index, self.region_key)
        except KeyError:
            return None
        return None if region is None else region.as_tensor() if isinstance(region, MetaTensor) else region

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]) -> None:
        """``metric_fn(y_pred, y, **kwargs)`` for ``output = (y_pred, y, kwargs)``."""
        y_pred, y, kwargs = output
        self.metric_fn(y_pred, y, **kwargs)

    def _metric_inputs(self, engine: Engine) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        y_pred = stack_values(engine, self.pred_key)
        if self.compares_with == MetricInput.NONE:
            return y_pred, None, {}
        if self.compares_with == MetricInput.REGION:
            label = stack_values(engine, self.region_key).to(y_pred.device)
            class_idx = _explained_classes(engine) if self.region_value == EXPLAINED_CLASS else None
            return y_pred, region_mask(label, class_idx, self.region_value), {}
        explained = {
            "class_idx": _explained_classes(engine),
            "pixel_set": output_value(engine, XAIKeys.PIXEL_SET),  # None for a classifier
        }
        return y_pred, stack_values(engine, CommonKeys.IMAGE), explained

    def compute(self) -> Any:
        """The reduced metric; a curve-valued metric (:class:`~monai_xai.metrics.CurveMetric`, e.g. ROAD) is
        reported by its headline (last) column and its curves are kept in :attr:`curves`. NaN when no case was
        scored (every case of the run unreadable)."""
        if self.metric_fn.get_buffer() is None:
            return math.nan
        result = super().compute()
        if not isinstance(self.metric_fn, CurveMetric):
            return result
        self.curves = self.metric_fn.curves(result)
        return float(result[-1])

    def completed(self, engine: Engine, name: str) -> None:
        """Store the metric; for a curve-valued one also its curves in ``engine.state.metric_curves[name]``."""
        super().completed(engine, name)
        if self.curves:
            if not hasattr(engine.state, "metric_curves"):
                engine.state.metric_curves = {}
            engine.state.metric_curves[name] = self.curves


class XAIMetricHandler:
    """Attach one :class:`SaliencyMetricHandler` per metric of :data:`XAI_METRICS` and per method.

    Args:
        metrics: names in the catalogue (:data:`~monai_xai.metrics.METRICS`), or none (``[]``: no metric, e.g.
            for an image-only datalist): ``ehr_auc``, ``heat_diff``,
            ``pointing_game``, ``relevance_mass``, ``iou`` (at each map's Otsu threshold unless ``threshold`` or
            ``top_fraction`` is given), ``auprc`` (need a ground-truth region), ``deletion``, ``insertion``,
            ``road_morf``, ``road_lerf``, ``road_combined``, ``confidence_increase`` (the class score of the image
            times its map minus that of the image) (re-run the engine's network on perturbed inputs and score the
            explained class: of a classifier, or of a segmentation network summed over the explained pixel set).
            A case without a ground-truth region (an image-only datalist) gets NaN from the region metrics, which
            say so (``engine.state.xai_skipped_metrics``, a warning, ``summary.md``); the other metrics are computed.
        methods: the CAM methods whose maps are scored (the ``XAIInferer``'s methods); metric names become
            ``"<metric>_<method>"``.
        network: the evaluated network, required by the metrics that re-run it (in a bundle: ``"@network"``; the
            engine's ``network`` attribute does not exist yet when MONAI attaches handlers).
        metric_args: keyword arguments per metric class, e.g. ``{"road_combined": {"percentiles": [10, 50, 90]}}``.
        score: the score the maps explain (the ``XAIInferer``'s ``score``, in a bundle ``"@xai_score"``): ``"logit"``
            or ``"probability"``. The ROAD metrics score it unless their ``metric_args`` set ``score``; deletion and
            insertion score the class probability (RISE) unless theirs set ``score``.
        region_key, region_value: the ground-truth region (see :func:`region_mask`); used by region metrics only.
        save_details: keep per-case values in ``engine.state.metric_details``.

    Example (bundle config)::

        {"_target_": "monai_xai.handlers.XAIMetricHandler", "metrics": ["ehr_auc"], "methods": "@xai_methods"}
    """

    def __init__(
        self,
        metrics: str | Sequence[str],
        methods: str | Sequence[str],
        network: nn.Module | None = None,
        metric_args: dict[str, dict] | None = None,
        score: Score | str = Score.LOGIT,
        region_key: str = CommonKeys.LABEL,
        region_value: int | str | None = None,
        save_details: bool = True,
    ) -> None:
        self.metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [metric for metric in self.metrics if metric not in METRICS]
        if unknown:
            raise ValueError(f"unknown XAI metrics {unknown}; available: {sorted(METRICS)}.")
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not self.methods:
            raise ValueError("methods is empty; give the CAM methods whose maps are scored, e.g. ['gradcam'].")
        self.metric_args = {name: dict(args) for name, args in (metric_args or {}).items()}
        stray = sorted(set(self.metric_args) - set(METRICS))
        if stray:
            raise ValueError(f"metric_args has keys {stray} that are not metrics; available: {sorted(METRICS)}.")
        rerun = [metric for metric in self.metrics if METRICS[metric].reruns_network]
        if rerun and not isinstance(network, nn.Module):
            raise ValueError(
                f"metrics {rerun} re-run the model on perturbed images: pass network= the evaluated network "
                '(in a bundle config: "network": "@network").'
            )
        self.score = as_choice(Score, score, "score")
        self.network = network
        self.region_key = region_key
        self.region_value = region_value
        self.save_details = save_details
        self.handlers: dict[MetricKey, SaliencyMetricHandler] = {}

    def attach(self, engine: Engine) -> None:
        """Build each metric for each method and attach it to ``engine``."""
        for metric in self.metrics:
            spec = METRICS[metric]
            for method in self.methods:
                key = MetricKey.of(metric, method)
                handler = SaliencyMetricHandler(
                    metric_fn=spec.create(
                        self.network, self.score, config_id="xai_metric_args", **self.metric_args.get(metric, {})
                    ),
                    name=key.name,
                    pred_key=saliency_key(method),
                    compares_with=spec.compares_with,
                    region_key=self.region_key,
                    region_value=self.region_value,
                    save_details=self.save_details,
                    key=key,
                )
                handler.attach(engine)
                self.handlers[key] = handler
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._note_skipped)

    def _note_skipped(self, engine: Engine) -> None:
        """Say which region metrics had cases without a ground-truth region (``engine.state.xai_skipped_metrics``
        and one warning)."""
        skipped = {}
        for key, handler in self.handlers.items():
            if handler.cases_without_region and key.metric not in skipped:
                skipped[key.metric] = (
                    f"{handler.cases_without_region} of {handler.cases_seen} case(s) have no ground-truth region under "
                    f"{self.region_key!r} (an image-only datalist?): their values are NaN, left out of the mean"
                )
        if skipped:
            setattr(engine.state, XAIKeys.SKIPPED_METRICS, skipped)
            logger.warning(
                "xai: the region metrics %s were skipped where cases have no ground truth under %r (%d of %d); the "
                "other metrics were computed",
                sorted(skipped),
                self.region_key,
                max(handler.cases_without_region for handler in self.handlers.values()),
                max(handler.cases_seen for handler in self.handlers.values()),
            )
