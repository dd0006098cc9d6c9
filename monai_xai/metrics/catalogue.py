"""The catalogue of XAI metrics: each metric's name, direction, inputs and how it is built, in one place.

Everything that scores maps by name reads it: the metric handlers of the bundle overlays
(:class:`~monai_xai.handlers.XAIMetricHandler`), the study command, the demo's verdict and every table that says
whether a lower or a higher value is better. A metric of one method's maps is named by a :class:`MetricKey` record,
never by a string parsed back by its suffix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from torch import nn

from monai_xai.enums import EXPLAINED_CLASS, IOU, OTSU, MetricInput, RoadOrder, Score
from monai_xai.metrics.localization import (
    EHRAUCMetric,
    HeatDiffMetric,
    PointingGameMetric,
    RelevanceMassAccuracyMetric,
    SaliencyAUPRCMetric,
    SaliencyIoUMetric,
    Threshold,
)
from monai_xai.metrics.perturbation_curves import ConfidenceChangeMetric, DeletionInsertionMetric
from monai_xai.metrics.road import ROADMetric
from monai_xai.utils import label_mask

__all__ = ["METRICS", "SECONDS", "MetricKey", "MetricSpec", "get_metric", "higher_is_better", "region_mask"]

# the per-case time of a method, reported next to its metrics (lower is better)
SECONDS = "seconds"


@dataclass(frozen=True)
class MetricSpec:
    """How to build, feed and read one XAI metric.

    Attributes:
        name: the metric's name in configs, tables and MLflow (``"ehr_auc"``).
        build: ``build(**metric_args) -> CumulativeIterationMetric``; a metric that compares with the ``IMAGE``
            re-runs the network and is built as ``build(network, **metric_args)``.
        compares_with: what the maps are compared with (:class:`~monai_xai.enums.MetricInput`): the ground-truth
            ``REGION``, or the ``IMAGE`` (the metric re-runs the network on perturbed copies of it).
        higher_is_better: the direction of a better explanation (deletion AUC and ROAD MoRF: lower).
        uses_explained_score: whether the metric scores the explained score (``xai_score``) unless its arguments set
            ``score`` (ROAD); deletion and insertion score the class probability (RISE) unless theirs set it.
        summary: what it measures, in one line.
    """

    name: str
    build: Callable[..., CumulativeIterationMetric]
    compares_with: MetricInput
    higher_is_better: bool
    uses_explained_score: bool = False
    summary: str = ""

    @property
    def reruns_network(self) -> bool:
        return self.compares_with == MetricInput.IMAGE

    def create(
        self,
        network: nn.Module | None = None,
        explained_score: Score | str = Score.LOGIT,
        *,
        config_id: str = "metric_args",
        **metric_args: Any,
    ) -> CumulativeIterationMetric:
        """The metric object.

        Args:
            network: the explained network (required by the metrics that re-run it).
            explained_score: the score the maps explain (used unless ``metric_args`` set ``score``, by the metrics
                that score the explained score).
            config_id: where ``metric_args`` come from, named in errors as ``<config_id>.<metric>.<argument>``:
                ``"xai_metric_args"`` in a bundle, ``"metric_args"`` in a study.
            metric_args: the metric's own keyword arguments, e.g. ``percentiles=[20, 80]``.

        Raises:
            ValueError: a metric that re-runs the network without one; a wrong argument value
                (:class:`~monai_xai.budgets.BudgetExceeded`: a size above its cap), naming it by its config id.
            TypeError: an argument the metric does not take.
        """
        if self.uses_explained_score:
            metric_args.setdefault("score", explained_score)
        if self.reruns_network and not isinstance(network, nn.Module):
            raise ValueError(
                f"the metric {self.name!r} re-runs the model on perturbed images: pass the explained network "
                '(in a bundle config: "network": "@network").'
            )
        try:
            return self.build(**metric_args) if not self.reruns_network else self.build(network, **metric_args)
        except (TypeError, ValueError) as error:
            renamed = _named(error, f"{config_id}.{self.name}", metric_args)
            if renamed is error:
                raise
            raise renamed from None


def _named(error: TypeError | ValueError, prefix: str, metric_args: dict[str, Any]) -> Exception:
    """``error`` of the same type with its message naming the config id: ``<prefix>.<argument> ...`` when the message
    starts with the name of an argument given, else ``<prefix>: ...``."""
    message = str(error)
    named = message.split(" ", 1)[0].split("=", 1)[0] in metric_args
    try:
        return type(error)(f"{prefix}.{message}" if named else f"{prefix}: {message}")
    except Exception:  # an error type that takes other arguments keeps its own message
        return error


def _iou(threshold: Threshold = None, top_fraction: float | None = None, **kwargs: Any) -> SaliencyIoUMetric:
    """IoU of the binarised map with the region; without a threshold, each map's Otsu threshold binarises it."""
    if threshold is None and top_fraction is None:
        threshold = OTSU
    return SaliencyIoUMetric(threshold=threshold, top_fraction=top_fraction, **kwargs)


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("ehr_auc", EHRAUCMetric, MetricInput.REGION, True, summary="area under the effective heat ratio"),
        MetricSpec("heat_diff", HeatDiffMetric, MetricInput.REGION, True, summary="mean heat inside minus outside"),
        MetricSpec("pointing_game", PointingGameMetric, MetricInput.REGION, True, summary="the peak on the region"),
        MetricSpec("relevance_mass", RelevanceMassAccuracyMetric, MetricInput.REGION, True, summary="heat share in"),
        MetricSpec(IOU, _iou, MetricInput.REGION, True, summary="IoU of the binarised map with the region"),
        MetricSpec("auprc", SaliencyAUPRCMetric, MetricInput.REGION, True, summary="precision-recall of the heat"),
        MetricSpec(
            "confidence_increase",
            ConfidenceChangeMetric,
            MetricInput.IMAGE,
            True,
            summary="class score of the image times its map minus that of the image",
        ),
        MetricSpec(
            "deletion",
            partial(DeletionInsertionMetric, mode="deletion"),
            MetricInput.IMAGE,
            False,
            summary="AUC of the class probability as the hottest voxels are deleted",
        ),
        MetricSpec(
            "insertion",
            partial(DeletionInsertionMetric, mode="insertion"),
            MetricInput.IMAGE,
            True,
            summary="AUC of the class probability as the hottest voxels are inserted",
        ),
        MetricSpec(
            "road_morf",
            partial(ROADMetric, order=RoadOrder.MORF),
            MetricInput.IMAGE,
            False,
            uses_explained_score=True,
            summary="score change as the most relevant voxels are removed (imputed)",
        ),
        MetricSpec(
            "road_lerf",
            partial(ROADMetric, order=RoadOrder.LERF),
            MetricInput.IMAGE,
            True,
            uses_explained_score=True,
            summary="score change as the least relevant voxels are removed (imputed)",
        ),
        MetricSpec(
            "road_combined",
            partial(ROADMetric, order=RoadOrder.COMBINED),
            MetricInput.IMAGE,
            True,
            uses_explained_score=True,
            summary="(LeRF - MoRF) / 2",
        ),
    )
}


def get_metric(name: str) -> MetricSpec:
    """The catalogue entry of ``name``.

    Raises:
        ValueError: an unknown name; the message lists the metrics.
    """
    if name not in METRICS:
        raise ValueError(f"unknown XAI metric {name!r}; available: {sorted(METRICS)}.")
    return METRICS[name]


def higher_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` (a catalogue name, or :data:`SECONDS`) is the better one."""
    return metric != SECONDS and get_metric(metric).higher_is_better


@dataclass(frozen=True)
class MetricKey:
    """One metric of one method's maps, and the name it has in an engine's state (``engine.state.metrics``,
    ``metric_details``, MLflow).

    Attributes:
        metric: the catalogue name (or :data:`SECONDS`).
        method: the explanation method.
        name: the engine's name, e.g. ``"ehr_auc_gradcam"`` (:meth:`of`) or ``"xai_seconds_gradcam"``.
    """

    metric: str
    method: str
    name: str

    @classmethod
    def of(cls, metric: str, method: str) -> MetricKey:
        """The key of a catalogue metric of ``method``'s maps, named ``"<metric>_<method>"`` in the engine."""
        return cls(metric, method, f"{metric}_{method}")


def region_mask(label: torch.Tensor, class_idx: torch.Tensor | None, region_value: int | str | None) -> torch.Tensor:
    """Binary ground-truth region per case from a label batch (:func:`~monai_xai.utils.label_mask`).

    Args:
        label: (B, 1, *spatial) mask or label map, or (B, C, *spatial) one-hot labels.
        class_idx: (B,) explained class per case (used when ``region_value == "class"``); (B, K) for K classes
            explained together, whose regions are joined.
        region_value: None: any foreground; an int: voxels equal to it (one-hot: that channel); ``"class"``
            (:data:`~monai_xai.enums.EXPLAINED_CLASS`): the explained class(es) of each case.

    Returns:
        (B, 1, *spatial) float mask in {0, 1}.
    """
    if region_value == EXPLAINED_CLASS:
        return label_mask(label, class_idx).amax(dim=1, keepdim=True)
    if region_value is None or (isinstance(region_value, int) and not isinstance(region_value, bool)):
        return label_mask(label, region_value)
    raise ValueError(f'region_value must be None, an int or "{EXPLAINED_CLASS}", got {region_value!r}.')
