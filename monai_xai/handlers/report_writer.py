"""``XAIReportWriter``: an interactive HTML report per case and an index page per run, from the run's records.

Files under the run's results folder (the :class:`~monai_xai.handlers.XAIRecorder`'s ``output_dir``):

- ``<case>/<case>_report.html``: the case's self-contained NiiVue page (:mod:`monai_xai.visualize.report`): the image,
  each method's map as a switchable overlay (colour map, opacity, threshold), the ground-truth and predicted outlines,
  three orthogonal views and a 3D render, the case's metrics (an input attribution's per-channel shares among them),
  each map's description and, for a classifier, the prediction with its confidence (calibrated or not).
- ``index.html``: a link to each case's page, its explained class and prediction, and the run's summary table.

Per case it reads, from the engine, the image (``image_key``), the maps (``saliency_<method>``), the explained class,
the ground-truth region (``region_key`` / ``region_value``, as the recorder reads it) and the predicted region
(``pred_key`` on the image's grid: a segmenter's output, argmax over channels when there are several, its voxels of
the explained class). A case's metrics are known only at the end of the epoch, so each iteration's cases are encoded
at once into their compact page payload (uint8 volumes, gzipped NIfTI, a few hundred kB per map) and kept in
``<output_dir>/.report-parts/`` until ``Events.COMPLETED``, when rank 0 writes the pages from the records (names,
metrics, descriptions, summary) and removes the parts.

Attach it after the ``XAIRecorder`` (it completes the records first) and before an MLflow handler, which then logs
the pages with the results folder. ``configs/explain.json`` does both; ``xai_report: false`` turns it off.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite import distributed as idist
from ignite.engine import Events
from monai.data import MetaTensor
from monai.utils import CommonKeys

from monai_xai.atomic import atomic_write_text
from monai_xai.describe import WHOLE_IMAGE
from monai_xai.enums import EXPLAINED_CLASS, XAIKeys, saliency_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.handlers.recorder import explained_classes, gather_rows, ground_truth_mask
from monai_xai.handlers.records import MethodRecord, run_records
from monai_xai.metrics.catalogue import SECONDS
from monai_xai.visualize.report import REPORT_SUFFIX, encode_case_volumes, render_case_report, write_index

__all__ = ["XAIReportWriter", "GROUND_TRUTH", "PREDICTION", "PARTS_FOLDER"]

# the outlines' names on the page
GROUND_TRUTH = "ground truth"
PREDICTION = "prediction"
# where each case's encoded volumes wait for the end of the epoch (removed when the pages are written)
PARTS_FOLDER = ".report-parts"
# cases.csv columns that are not metrics
_CASE_COLUMNS = ("case", "method", "class", "nifti", "png")


def predicted_region(pred: Any, explained: Sequence[int], spatial_shape: tuple[int, ...]) -> torch.Tensor | None:
    """(1, *spatial) bool predicted region of the explained class(es) from one case's ``pred``, or None when ``pred``
    is not on the image's grid (a classifier's class scores).

    Args:
        pred: (C, *spatial) segmenter output: a label map (C = 1, class index per voxel), a single probability or
            logit channel (C = 1, non-integer values: > 0.5 is the region), or per-class scores or one-hot (C > 1:
            argmax over channels).
        explained: the explained classes (:func:`~monai_xai.handlers.saliency_writer.explained_classes`; several
            for classes explained together, whose regions are joined; none: any foreground class).
        spatial_shape: the image's spatial shape.
    """
    values = torch.as_tensor(pred.as_tensor() if isinstance(pred, MetaTensor) else pred).detach().cpu()
    if values.ndim != len(spatial_shape) + 1 or tuple(values.shape[1:]) != spatial_shape:
        return None
    if values.shape[0] > 1:
        labels = values.argmax(dim=0, keepdim=True)
    elif values.is_floating_point() and not torch.equal(values, values.round()):
        labels = (values > 0.5).long()
    else:
        labels = values.long()
    return torch.isin(labels, torch.tensor(list(explained))) if explained else labels > 0


def _share_columns(record: MethodRecord) -> dict[str, float]:
    """An input attribution's per-channel shares over the whole image as metrics-table columns, ``"share channel
    <c>"`` (the description's text gives them per region, by the channels' names)."""
    shares = record.channel_shares.get(WHOLE_IMAGE, ())
    return {f"share channel {channel}": share for channel, share in enumerate(shares)}


class XAIReportWriter:
    """Write an interactive HTML report per case and an index page (see the module docstring).

    Args:
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image.
        region_key: output or batch key of the ground-truth region (``xai_region_key``); None: no ground-truth
            outline. A value that is not a map on the image's grid (a classifier's class label) is ignored.
        region_value: which region of ``region_key``: None (any foreground), an int, or ``"class"`` (the explained
            class), as ``xai_region_value``.
        pred_key: output key of the prediction; a segmenter's, on the image's grid, gives the predicted outline.
    """

    def __init__(
        self,
        methods: str | Sequence[str],
        image_key: str = CommonKeys.IMAGE,
        region_key: str | None = None,
        region_value: int | str | None = EXPLAINED_CLASS,
        pred_key: str = CommonKeys.PRED,
    ) -> None:
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.region_key = region_key
        self.region_value = region_value
        self.pred_key = pred_key
        self.parts: list[tuple[str, str]] = []

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.encode_cases)
        engine.add_event_handler(Events.COMPLETED, self.write_reports)

    def _reset(self, engine: Any) -> None:
        self.parts = []

    def _masks(self, engine: Any, index: int, case: dict, spatial: tuple[int, ...]) -> dict[str, torch.Tensor | None]:
        explained = explained_classes(case.get(XAIKeys.CLASS))
        masks: dict[str, torch.Tensor | None] = {}
        if self.region_key is not None:
            try:
                label = case_value(engine, index, self.region_key)
            except KeyError:  # this case has no ground truth
                label = None
            if label is not None:
                masks[GROUND_TRUTH] = ground_truth_mask(label, explained, self.region_value, spatial)
        if self.pred_key in case:
            masks[PREDICTION] = predicted_region(case[self.pred_key], explained, spatial)
        return masks

    def encode_cases(self, engine: Any) -> None:
        """Encode the current iteration's cases (image, maps, outlines) into their page payloads, kept on disk."""
        records = run_records(engine, type(self).__name__)
        parts_dir = records.output_dir / PARTS_FOLDER
        parts_dir.mkdir(parents=True, exist_ok=True)
        for index, (case, record) in enumerate(zip(engine_cases(engine.state.output), records.iteration)):
            image = case_value(engine, index, self.image_key)
            maps = {method: case_value(engine, index, saliency_key(method)) for method in self.methods}
            masks = self._masks(engine, index, case, tuple(image.shape[1:]))
            volumes = encode_case_volumes(image, maps, masks=masks)
            part = parts_dir / f"rank{idist.get_rank()}_{len(self.parts):06d}.json"
            atomic_write_text(part, json.dumps(volumes))
            self.parts.append((record.name, str(part)))

    def write_reports(self, engine: Any) -> None:
        """Write each case's page and ``index.html`` (rank 0), from the parts and the run's records."""
        records = run_records(engine, type(self).__name__)
        parts = dict(gather_rows(self.parts))
        if idist.get_rank() > 0:
            return
        index_rows = []
        for case in records.cases:
            if case.name not in parts:
                raise RuntimeError(
                    f"XAIReportWriter has no page payload of case {case.name!r}: attach it to the same evaluator as "
                    "the XAIRecorder, after it."
                )
            page = records.output_dir / case.name / f"{case.name}{REPORT_SUFFIX}"
            render_case_report(
                page,
                json.loads(Path(parts[case.name]).read_text()),
                metrics={
                    method: {SECONDS: record.seconds, **record.metrics, **_share_columns(record)}
                    for method, record in case.methods.items()
                },
                descriptions={method: record.text for method, record in case.methods.items()},
                confidence=case.prediction,
                title=case.name,
                index_href="../index.html",
            )
            case.methods[next(iter(case.methods))].files["report"] = page
            index_rows.append(
                {
                    "case": case.name,
                    "href": f"{case.name}/{page.name}",
                    "class": records.class_name(case),
                    "prediction": case.prediction,
                }
            )
        shutil.rmtree(records.output_dir / PARTS_FOLDER, ignore_errors=True)
        summary = {metric: {row.method: row.mean for row in table} for metric, table in records.summary.items()}
        title = f"Explanations: {records.output_dir.name}"
        write_index(records.output_dir / "index.html", index_rows, summary, title=title)
