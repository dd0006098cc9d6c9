"""The results of an explanation run as records in memory: per case and method its class, time, metric values,
description and files, and per metric the summary over cases.

The :class:`~monai_xai.handlers.XAIRecorder` fills them (``engine.state.xai_results``); every writer (files, tables,
the HTML report), the MLflow handler and the callers of a run (``monai-xai explain``, the demo) read them, so no part
of a run reads back a file another part wrote a moment before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_xai.describe import CaseDescription
from monai_xai.enums import XAIKeys
from monai_xai.metrics.catalogue import SECONDS
from monai_xai.metrics.per_sample import MetricCurve
from monai_xai.metrics.stats import MethodSummary

__all__ = ["CaseRecord", "ExplainedLayers", "MethodRecord", "RunRecords", "run_records"]


@dataclass(frozen=True)
class ExplainedLayers:
    """The layers a run's maps explain.

    Attributes:
        layers: ``{method: layer name}`` (several layers joined by ``", "``).
        reason: why the layer was chosen when the run chose it (:func:`~monai_xai.cams.choose_target_layer`); None
            when the config named it.
    """

    layers: dict[str, str]
    reason: str | None = None

    def text(self) -> str:
        """One line: the layer (or each method's), and how it was chosen."""
        names = set(self.layers.values())
        if len(names) == 1:
            shown = f"`{names.pop()}`"
        else:
            shown = ", ".join(f"{method}: `{layer}`" for method, layer in self.layers.items())
        return f"{shown} ({f'chosen: {self.reason}' if self.reason else 'as configured'})"


@dataclass
class MethodRecord:
    """One case's map of one method.

    Attributes:
        seconds: the method's time on the case (its batch's time divided by the batch size); NaN when unknown.
        description: the map in words (:func:`~monai_xai.describe.describe`), None when it could not be described.
        metrics: ``{metric: value}`` of the case (the headline value of curve metrics; NaN where undefined), filled
            when the run completes.
        files: ``{kind: path}`` of the files written for it (``"nifti"``, ``"png"``, ...).
        channel_shares: an input attribution's share of each input channel, ``{region: (channel 0's, ...)}`` (the
            whole image as ``"image"``, the explained and ground-truth regions by name); empty for a CAM.
    """

    seconds: float = math.nan
    description: CaseDescription | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    channel_shares: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The description's text ("" when the map could not be described)."""
        return self.description.text if self.description is not None else ""


@dataclass
class CaseRecord:
    """One explained case.

    Attributes:
        name: its name in the results folder (unique in the run).
        classes: the class its maps explain, or the classes explained together.
        methods: ``{method: MethodRecord}``, in the run's method order.
    """

    name: str
    classes: tuple[int, ...]
    methods: dict[str, MethodRecord]

    @property
    def class_label(self) -> int | str:
        """The explained class as the tables write it: the int, ``"1+2"`` for classes explained together, ``""``
        when none is known."""
        if not self.classes:
            return ""
        return self.classes[0] if len(self.classes) == 1 else "+".join(str(k) for k in self.classes)

    @property
    def prediction(self) -> str | None:
        """A classifier's prediction and confidence, e.g. ``"lesion, 93.74% (calibrated)"``; None without class
        probabilities (a segmenter)."""
        for record in self.methods.values():
            description = record.description
            if description is not None and description.confidence is not None:
                calibrated = "calibrated" if description.calibrated else "uncalibrated"
                return f"{description.predicted_name or '?'}, {description.confidence:.2%} ({calibrated})"
        return None


@dataclass
class RunRecords:
    """Everything an explanation run produced (see the module docstring).

    Attributes:
        output_dir: the run's results folder.
        methods: the explanation methods, in order.
        cases: the explained cases, in the order all ranks gathered them.
        iteration: the cases of the current iteration, in the engine's case order (what the per-case writers
            write).
        unreadable: the cases that could not be read (``{"case", "files", "reason"}``).
        metrics: the per-method metric names, in first-seen order (the time, ``"seconds"``, included).
        summary: ``{metric: [MethodSummary per method]}`` over the cases (filled when the run completes).
        curves: ``{metric: {method: {curve name: MetricCurve}}}`` of curve-valued metrics (mean over cases).
        complete: whether the run completed (metrics, summary and curves are filled).
        class_names: the classes' names in index order, when known.
        layers: the layers the maps explain (``engine.state.xai_layers``), when the ``XAIInferer`` said.
        skipped_metrics: ``{metric: why}`` of the metrics some cases could not be scored with (no ground-truth
            region), when any.
    """

    output_dir: Path
    methods: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    cases: list[CaseRecord] = field(default_factory=list)
    iteration: list[CaseRecord] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    summary: dict[str, list[MethodSummary]] = field(default_factory=dict)
    curves: dict[str, dict[str, dict[str, MetricCurve]]] = field(default_factory=dict)
    complete: bool = False
    layers: ExplainedLayers | None = None
    skipped_metrics: dict[str, str] = field(default_factory=dict)

    def case(self, name: str) -> CaseRecord:
        """The case named ``name``."""
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(f"no case named {name!r} in the run's records.")

    def class_name(self, case: CaseRecord) -> str:
        """The class(es) a case's maps explain, by name when the names are known (``"kidney+tumour"``), else by index
        (``"1"``, ``"1+2"``); ``""`` when none is known."""
        if self.class_names is None or any(k >= len(self.class_names) for k in case.classes):
            return str(case.class_label)
        return "+".join(self.class_names[k] for k in case.classes)

    def explained_classes(self) -> str:
        """The classes the run's maps explain, each by index and name (``"1 (Thalamus)"``), in first-seen order."""
        seen = dict.fromkeys(case.classes for case in self.cases if case.classes)
        shown = []
        for classes in seen:
            label = "+".join(str(k) for k in classes)
            names = [self.class_names[k] for k in classes if self.class_names and k < len(self.class_names)]
            shown.append(f"{label} ({'+'.join(names)})" if len(names) == len(classes) else label)
        return ", ".join(shown)

    def means(self) -> dict[str, dict[str, float]]:
        """``{method: {metric: mean over cases}}`` of the summary (the time as ``"seconds"``)."""
        table: dict[str, dict[str, float]] = {method: {} for method in self.methods}
        for metric, rows in self.summary.items():
            for row in rows:
                table.setdefault(row.method, {})[metric] = row.mean
        return table

    def score_metrics(self) -> list[str]:
        """The metric names other than the time, in order."""
        return [metric for metric in self.metrics if metric != SECONDS]


def run_records(engine: Any, reader: str) -> RunRecords:
    """The run's records on ``engine`` (``engine.state.xai_results``).

    Raises:
        RuntimeError: no :class:`~monai_xai.handlers.XAIRecorder` is attached before ``reader``.
    """
    records = getattr(engine.state, XAIKeys.RESULTS, None)
    if not isinstance(records, RunRecords):
        raise RuntimeError(
            f"{reader} reads the run's records: attach a monai_xai.handlers.XAIRecorder before it (in a bundle config, "
            '"@xai_recorder" in the handlers before the writers, as configs/explain.json does).'
        )
    return records
