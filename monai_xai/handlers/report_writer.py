"""``XAIReportWriter``: an interactive HTML report per case and an index page per run, next to the
``SaliencyWriter``'s files.

Files under ``output_dir``:

- ``<case>/<case>_report.html``: the case's self-contained NiiVue page (:mod:`monai_xai.visualize.report`): the image,
  each method's map as a switchable overlay (colour map, opacity, threshold), the ground-truth and predicted outlines,
  three orthogonal views and a 3D render, the case's metrics (its rows of ``cases.csv``), each map's description and,
  for a classifier, the prediction with its confidence (calibrated or not), from ``descriptions.csv``.
- ``index.html``: a link to each case's page and the run's summary table (``summary.csv``'s means).

Per case it reads, from the engine, the image (``image_key``), the maps (``saliency_<method>``), the explained class,
the ground-truth region (``region_key`` / ``region_value``, as the ``SaliencyWriter`` reads it) and the predicted
region (``pred_key`` on the image's grid: a segmenter's output, argmax over channels when there are several, its
voxels of the explained class). A case's metrics are known only at the end of the epoch, so each iteration's cases are
encoded at once into their compact page payload (uint8 volumes, gzipped NIfTI, a few hundred kB per map) and kept in
``output_dir/.report-parts/`` until ``Events.COMPLETED``, when rank 0 reads the ``SaliencyWriter``'s ``cases.csv``,
``descriptions.csv`` and ``summary.csv``, writes the pages and removes the parts.

Attach it after the ``SaliencyWriter`` with the same ``output_dir`` (its tables name the cases and hold their metrics:
the ``SaliencyWriter`` writes them on ``COMPLETED`` first) and before an MLflow handler, which then logs the pages
with the results folder. ``configs/explain.json`` does both; ``xai_report: false`` turns it off.
"""

from __future__ import annotations

import csv
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

from monai_xai.enums import XAIKeys, saliency_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.handlers.saliency_writer import explained_classes, gather_rows, ground_truth_mask
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


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _confidence(row: dict[str, str]) -> str | None:
    """``"lesion, 93.74% (calibrated)"`` from a descriptions.csv row of a classifier, None without probabilities."""
    confidence = _number(row.get("confidence"))
    if confidence is None:
        return None
    calibrated = "calibrated" if row.get("calibrated") == "True" else "uncalibrated"
    return f"{row.get('predicted') or '?'}, {confidence:.2%} ({calibrated})"


class XAIReportWriter:
    """Write an interactive HTML report per case and an index page (see the module docstring).

    Args:
        output_dir: the results folder, the ``SaliencyWriter``'s ``output_dir``.
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
        output_dir: str | Path,
        methods: str | Sequence[str],
        image_key: str = "image",
        region_key: str | None = None,
        region_value: int | str | None = "class",
        pred_key: str = CommonKeys.PRED,
    ) -> None:
        if output_dir is None or not str(output_dir).strip():
            raise ValueError("output_dir is empty; set the results folder, e.g. --xai_output_dir eval/xai.")
        self.output_dir = Path(output_dir)
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.region_key = region_key
        self.region_value = region_value
        self.pred_key = pred_key
        self.parts: list[str] = []

    @property
    def parts_dir(self) -> Path:
        return self.output_dir / PARTS_FOLDER

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.encode_cases)
        engine.add_event_handler(Events.COMPLETED, self.write_reports)

    def _reset(self, engine: Any) -> None:
        self.parts = []
        self.parts_dir.mkdir(parents=True, exist_ok=True)

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
        for index, case in enumerate(engine_cases(engine.state.output)):
            image = case_value(engine, index, self.image_key)
            maps = {method: case_value(engine, index, saliency_key(method)) for method in self.methods}
            masks = self._masks(engine, index, case, tuple(image.shape[1:]))
            volumes = encode_case_volumes(image, maps, masks=masks)
            part = self.parts_dir / f"rank{idist.get_rank()}_{len(self.parts):06d}.json"
            part.write_text(json.dumps(volumes))
            self.parts.append(str(part))

    def write_reports(self, engine: Any) -> None:
        """Write each case's page and ``index.html`` (rank 0), from the parts and the ``SaliencyWriter``'s tables."""
        parts = gather_rows(self.parts)
        if idist.get_rank() > 0:
            return
        tables = {name: self.output_dir / name for name in ("cases.csv", "descriptions.csv", "summary.csv")}
        if not tables["cases.csv"].is_file():
            raise RuntimeError(
                f"XAIReportWriter found no cases.csv in {self.output_dir}: attach it after a SaliencyWriter with the "
                "same output_dir (the writer's tables name the cases and hold their metrics)."
            )
        rows = _read_csv(tables["cases.csv"])
        names = list(dict.fromkeys(row["case"] for row in rows))
        if len(names) != len(parts):
            raise RuntimeError(
                f"cases.csv in {self.output_dir} lists {len(names)} case(s) but this writer saw {len(parts)}: attach "
                "XAIReportWriter after the SaliencyWriter of the same evaluator and output_dir."
            )
        metrics: dict[str, dict[str, dict[str, float | None]]] = {}
        classes: dict[str, str] = {}
        for row in rows:
            values = {key: _number(value) for key, value in row.items() if key not in _CASE_COLUMNS}
            metrics.setdefault(row["case"], {})[row["method"]] = values
            classes.setdefault(row["case"], row.get("class", ""))
        texts: dict[str, dict[str, str]] = {}
        confidences: dict[str, str | None] = {}
        if tables["descriptions.csv"].is_file():
            for row in _read_csv(tables["descriptions.csv"]):
                texts.setdefault(row["case"], {})[row["method"]] = row.get("text", "")
                confidences[row["case"]] = confidences.get(row["case"]) or _confidence(row)
        index_rows = []
        for name, part in zip(names, parts):
            page = self.output_dir / name / f"{name}{REPORT_SUFFIX}"
            render_case_report(
                page,
                json.loads(Path(part).read_text()),
                metrics=metrics.get(name),
                descriptions=texts.get(name),
                confidence=confidences.get(name),
                title=name,
                index_href="../index.html",
            )
            Path(part).unlink()
            index_rows.append(
                {
                    "case": name,
                    "href": f"{name}/{page.name}",
                    "class": classes[name],
                    "prediction": confidences.get(name),
                }
            )
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        summary: dict[str, dict[str, float]] = {}
        if tables["summary.csv"].is_file():
            for row in _read_csv(tables["summary.csv"]):
                mean = _number(row.get("mean"))
                if mean is not None:
                    summary.setdefault(row["metric"], {})[row["method"]] = mean
        write_index(self.output_dir / "index.html", index_rows, summary, title=f"Explanations: {self.output_dir.name}")
