"""Ignite handlers that score the CAMs an :class:`~monai_xai.inferers.XAIInferer` puts into the engine output.

``SaliencyMetricHandler`` is MONAI's ``IgniteMetricHandler`` fed from the engine's per-case dicts: the maps of one
method as ``y_pred``, the ground-truth region, the input images or nothing as ``y``, and, for metrics that re-run the
model, the explained class as ``class_idx`` and, for a segmentation network, the explained pixel set as ``mask`` (see
:func:`explained_pixel_set`), so that they score exactly what the maps explain. Values land in
``engine.state.metrics[name]``, per-case values in ``engine.state.metric_details[name]`` (what MONAI's
``MetricsSaver`` writes) and, for curve-valued metrics such as ROAD, the mean curve in
``engine.state.metric_curves[name]``; the cumulative metrics all-gather their buffers, so a run split over ranks
aggregates to the one-process result.

``XAIMetricHandler`` attaches one such handler per metric and explanation method, named ``"<metric>_<method>"``; it
is what the config overlays use, because a bundle's ``handlers`` list cannot grow with (command-line) lists of metrics
and methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import CommonKeys
from torch import nn

from monai_xai.handlers.engine_data import engine_cases, stack_values
from monai_xai.inferers import CLASS_KEY, XAIInferer, saliency_key

__all__ = [
    "SaliencyMetricHandler",
    "XAIMetricHandler",
    "XAIMetricSpec",
    "XAI_METRICS",
    "explained_pixel_set",
    "region_mask",
]

REFERENCES = ("mask", "image", None)


def region_mask(label: torch.Tensor, class_idx: torch.Tensor, label_value: int | str | None) -> torch.Tensor:
    """Binary ground-truth region per case from a label batch.

    Args:
        label: (B, 1, *spatial) mask or label map, or (B, C, *spatial) one-hot labels.
        class_idx: (B,) explained class per case (used when ``label_value == "class"``).
        label_value: None: ``label > 0`` (any foreground; one-hot labels: any non-background channel); an int: voxels
            equal to it (one-hot: that channel); ``"class"``: the explained class of each case.

    Returns:
        (B, 1, *spatial) float mask in {0, 1}.
    """
    if label.ndim < 3:
        raise ValueError(
            f"the region mask must be (B, 1, *spatial) or one-hot (B, C, *spatial), got shape {tuple(label.shape)}; "
            "a classification label is not a region: set mask_key to the batch key of the lesion/ROI mask."
        )
    if label_value == "class":
        value = class_idx.to(label.device)
    elif label_value is None:
        one_hot = label.shape[1] > 1
        return (label[:, 1:].sum(dim=1, keepdim=True) > 0 if one_hot else label > 0).float()
    elif isinstance(label_value, int):
        value = torch.full((label.shape[0],), label_value, device=label.device)
    else:
        raise ValueError(f'label_value must be None, an int or "class", got {label_value!r}.')
    if label.shape[1] > 1:
        index = value.reshape(-1, 1, *([1] * (label.ndim - 2))).expand(-1, 1, *label.shape[2:])
        return (label.gather(1, index.long()) > 0).float()
    return (label == value.reshape(-1, *([1] * (label.ndim - 1))).to(label.dtype)).float()


def explained_pixel_set(engine: Any, class_idx: torch.Tensor) -> str | torch.Tensor | None:
    """The segmentation pixel set the engine's :class:`~monai_xai.inferers.XAIInferer` explained, as the ``mask`` of
    ``road`` / ``deletion_insertion``.

    Args:
        engine: the evaluator; its ``inferer`` says how the pixel set was chosen.
        class_idx: (B,) class each case explains (the inferer's ``"xai_class"``).

    Returns:
        None for a classifier (per-case ``"pred"`` without spatial dims) or when the engine's inferer is not an
        ``XAIInferer`` (the metrics then take the predicted region); the inferer's ``mask`` (``"pred"``,
        ``"largest_component"`` or ``"image"``, resolved again on the unperturbed images as the inferer did); or,
        with the inferer's ``mask_key``, (B, 1, *spatial) region of each case's class in that label of the batch (the
        inferer reads it from the batch too, before any postprocessing).
    """
    inferer = getattr(engine, "inferer", None)
    prediction = engine_cases(engine.state.output)[0].get(CommonKeys.PRED)
    if not isinstance(inferer, XAIInferer) or getattr(prediction, "ndim", 0) < 2:
        return None
    if inferer.mask_key is None:
        return inferer.mask
    labels = [case[inferer.mask_key] for case in engine_cases(engine.state.batch)]
    label = torch.stack([torch.as_tensor(v.as_tensor() if hasattr(v, "as_tensor") else v) for v in labels])
    return region_mask(label, class_idx, "class")


class SaliencyMetricHandler(IgniteMetricHandler):
    """Cumulative metric over one method's maps (or any per-case output value), read from the engine each iteration.

    Args:
        metric_fn: a ``CumulativeIterationMetric``, called as ``metric_fn(y_pred, y, **kwargs)`` on batch-first tensors.
        name: key in ``engine.state.metrics`` / ``metric_details``, e.g. ``"ehr_auc_gradcam"``.
        pred_key: engine-output key of ``y_pred``, e.g. ``"saliency_gradcam"`` (B, 1, *spatial).
        reference: what ``y`` is: ``"mask"`` (binary region from ``mask_key``, see :func:`region_mask`), ``"image"``
            (the input images (B, C, *spatial)) or None (no ``y``).
        mask_key: output or batch key of the region for ``reference="mask"`` (default ``"label"``).
        label_value: which region of ``mask_key``: None (foreground), an int, or ``"class"`` (the explained class).
        pass_class: pass ``class_idx`` (the explained class per case, ``"xai_class"``) to ``metric_fn``.
        pass_pixel_set: pass ``mask`` (the explained pixel set of a segmentation network, see
            :func:`explained_pixel_set`) to ``metric_fn``; nothing is passed for classifiers.
        save_details: keep per-case values in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        metric_fn: CumulativeIterationMetric,
        name: str,
        pred_key: str,
        reference: str | None = "mask",
        mask_key: str = "label",
        label_value: int | str | None = None,
        pass_class: bool = False,
        pass_pixel_set: bool = False,
        save_details: bool = True,
    ) -> None:
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}.")
        super().__init__(metric_fn=metric_fn, save_details=save_details)
        self.name = name
        self.pred_key = pred_key
        self.reference = reference
        self.mask_key = mask_key
        self.label_value = label_value
        self.pass_class = pass_class
        self.pass_pixel_set = pass_pixel_set

    def attach(self, engine: Any, name: str | None = None) -> None:  # type: ignore[override]
        """Attach under ``name`` (default: the name given at construction), so a bundle's ``handlers`` list works."""
        super().attach(engine, self.name if name is None else name)

    def compute(self) -> Any:
        """The reduced metric; a curve-valued metric (e.g. ``ROADMetric``: one value per named column) is reported by
        its last column (the mean over percentiles, or ROADCombined) and the whole curve goes to
        ``engine.state.metric_curves[name]`` as ``{column name: value}``."""
        result = super().compute()
        columns = getattr(self.metric_fn, "column_names", None)
        if not isinstance(result, torch.Tensor) or result.ndim != 1 or columns is None:
            return result
        curve = dict(zip(columns, (float(v) for v in result.tolist())))
        if not hasattr(self._engine.state, "metric_curves"):
            self._engine.state.metric_curves = {}
        self._engine.state.metric_curves[self._name] = curve
        return curve[columns[-1]]

    def iteration_completed(self, engine: Any) -> None:
        """Feed the current iteration's cases to the metric (the ignite ``output_transform`` sees only the output)."""
        y_pred = stack_values(engine, self.pred_key)
        kwargs: dict[str, torch.Tensor] = {}
        needs_class = self.pass_class or self.pass_pixel_set or self.label_value == "class"
        class_idx = stack_values(engine, CLASS_KEY).reshape(-1) if needs_class else None
        y = None
        if self.reference == "image":
            y = stack_values(engine, "image")
        elif self.reference == "mask":
            y = region_mask(stack_values(engine, self.mask_key).to(y_pred.device), class_idx, self.label_value)
        if self.pass_class:
            kwargs["class_idx"] = class_idx
        if self.pass_pixel_set:
            pixel_set = explained_pixel_set(engine, class_idx)
            if pixel_set is not None:
                kwargs["mask"] = pixel_set
        self._is_reduced = False
        self.metric_fn(y_pred, y, **kwargs)


@dataclass(frozen=True)
class XAIMetricSpec:
    """How to build and feed one XAI metric.

    Attributes:
        build: ``build(network, **metric_args) -> CumulativeIterationMetric`` (only metrics that re-run the model use
            ``network``).
        reference: ``y`` of the metric: ``"mask"``, ``"image"`` or None (see :class:`SaliencyMetricHandler`).
        pass_class: whether the metric takes ``class_idx``.
        pass_pixel_set: whether the metric takes ``mask``, the segmentation pixel set the maps explain.
    """

    build: Callable[..., CumulativeIterationMetric]  # build(network | None, **metric_args)
    reference: str | None
    pass_class: bool = False
    pass_pixel_set: bool = False


def _localization(class_name: str) -> Callable[..., CumulativeIterationMetric]:
    def build(network: nn.Module | None, **metric_args: Any) -> CumulativeIterationMetric:
        from monai_xai.metrics import localization

        return getattr(localization, class_name)(**metric_args)

    return build


def _perturbation_curve(mode: str) -> Callable[..., CumulativeIterationMetric]:
    def build(network: nn.Module, **metric_args: Any) -> CumulativeIterationMetric:
        from monai_xai.metrics.perturbation_curves import DeletionInsertionMetric

        return DeletionInsertionMetric(network, mode=mode, **metric_args)

    return build


def _road(order: str) -> Callable[..., CumulativeIterationMetric]:
    def build(network: nn.Module, **metric_args: Any) -> CumulativeIterationMetric:
        from monai_xai.metrics.road import ROADMetric

        return ROADMetric(network, order=order, **metric_args)

    return build


XAI_METRICS: dict[str, XAIMetricSpec] = {
    "ehr_auc": XAIMetricSpec(_localization("EHRAUCMetric"), "mask"),
    "heat_diff": XAIMetricSpec(_localization("HeatDiffMetric"), "mask"),
    "pointing_game": XAIMetricSpec(_localization("PointingGameMetric"), "mask"),
    "relevance_mass": XAIMetricSpec(_localization("RelevanceMassAccuracyMetric"), "mask"),
    "deletion": XAIMetricSpec(_perturbation_curve("deletion"), "image", pass_class=True, pass_pixel_set=True),
    "insertion": XAIMetricSpec(_perturbation_curve("insertion"), "image", pass_class=True, pass_pixel_set=True),
    "road_morf": XAIMetricSpec(_road("morf"), "image", pass_class=True, pass_pixel_set=True),
    "road_lerf": XAIMetricSpec(_road("lerf"), "image", pass_class=True, pass_pixel_set=True),
    "road_combined": XAIMetricSpec(_road("combined"), "image", pass_class=True, pass_pixel_set=True),
}


class XAIMetricHandler:
    """Attach one :class:`SaliencyMetricHandler` per metric of :data:`XAI_METRICS` and per method.

    Args:
        metrics: names in :data:`XAI_METRICS`: ``ehr_auc``, ``heat_diff``, ``pointing_game``, ``relevance_mass``
            (need a ground-truth region), ``deletion``, ``insertion``, ``road_morf``, ``road_lerf``,
            ``road_combined`` (re-run the engine's network on perturbed inputs and score the explained class: of a
            classifier, or of a segmentation network summed over the explained pixel set).
        methods: the CAM methods whose maps are scored (the ``XAIInferer``'s methods); metric names become
            ``"<metric>_<method>"``.
        network: the evaluated network, required by the metrics that re-run it (in a bundle: ``"@network"``; the
            engine's ``network`` attribute does not exist yet when MONAI attaches handlers).
        metric_args: keyword arguments per metric class, e.g. ``{"road_combined": {"percentiles": [10, 50, 90]}}``.
        score: the score the maps explain (the ``XAIInferer``'s ``score``, in a bundle ``"@xai_score"``): ``"logit"``
            or ``"probability"``. The ROAD metrics score it unless their ``metric_args`` set ``score``; deletion and
            insertion score the class probability (RISE) unless theirs set ``apply_softmax``.
        mask_key, label_value: the ground-truth region (see :func:`region_mask`); used by region metrics only.
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
        score: str = "logit",
        mask_key: str = "label",
        label_value: int | str | None = None,
        save_details: bool = True,
    ) -> None:
        self.metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [metric for metric in self.metrics if metric not in XAI_METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown or no XAI metrics {unknown}; available: {sorted(XAI_METRICS)}.")
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not self.methods:
            raise ValueError("methods is empty; give the CAM methods whose maps are scored, e.g. ['gradcam'].")
        self.metric_args = {name: dict(args) for name, args in (metric_args or {}).items()}
        stray = sorted(set(self.metric_args) - set(XAI_METRICS))
        if stray:
            raise ValueError(f"metric_args has keys {stray} that are not metrics; available: {sorted(XAI_METRICS)}.")
        rerun = [metric for metric in self.metrics if XAI_METRICS[metric].reference == "image"]
        if rerun and not isinstance(network, nn.Module):
            raise ValueError(
                f"metrics {rerun} re-run the model on perturbed images: pass network= the evaluated network "
                '(in a bundle config: "network": "@network").'
            )
        for metric in ("road_morf", "road_lerf", "road_combined"):
            self.metric_args.setdefault(metric, {}).setdefault("score", score)
        self.network = network
        self.mask_key = mask_key
        self.label_value = label_value
        self.save_details = save_details
        self.handlers: dict[str, SaliencyMetricHandler] = {}

    def attach(self, engine: Any) -> None:
        """Build each metric for each method and attach it to ``engine``."""
        for metric in self.metrics:
            spec = XAI_METRICS[metric]
            for method in self.methods:
                name = f"{metric}_{method}"
                handler = SaliencyMetricHandler(
                    metric_fn=spec.build(self.network, **self.metric_args.get(metric, {})),
                    name=name,
                    pred_key=saliency_key(method),
                    reference=spec.reference,
                    mask_key=self.mask_key,
                    label_value=self.label_value,
                    pass_class=spec.pass_class,
                    pass_pixel_set=spec.pass_pixel_set,
                    save_details=self.save_details,
                )
                handler.attach(engine)
                self.handlers[name] = handler
