"""``SaliencyWriter``: each case's maps as NIfTI (input affine kept) and PNG overlays, plus per-case and summary tables.

Files under ``output_dir``:

- ``<case>/<case>_<method>.nii.gz``: the (1, *spatial) map written by MONAI's ``SaveImage`` from the map's MetaTensor
  meta, i.e. with the affine (and so the spacing and orientation) of the preprocessed input: it overlays the input in
  3D Slicer or ITK-SNAP. ``Invertd`` in a bundle's postprocessing only inverts ``pred``, so the map stays in the
  preprocessed space, which its affine describes.
- ``<case>/<case>_<method>.png``: the map over the image (for 3D the three orthogonal slices through the map's peak).
- ``cases.csv``: one row per case and method: class, seconds, files, and every per-case metric value found in
  ``engine.state.metric_details`` under ``"<metric>_<method>"`` (the headline, last, column of curve-valued metrics).
- ``summary.csv`` / ``summary.md``: per metric and method, mean, std, min, max, n and skipped cases;
  ``metrics.png``: one bar chart per metric; ``<metric>_<curve>_curve.png``: the mean curves of curve-valued metrics
  from ``engine.state.metric_curves`` (e.g. ``road_combined_morf_curve.png``: score change vs pixels kept, one line
  per method).

Per-case rows are gathered from all ranks and the tables are written by rank 0 on ``Events.COMPLETED``, i.e. after
the metric handlers computed their values at the end of the epoch. Attach it before an MLflow handler so the tables
exist when the artifacts are logged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite import distributed as idist
from ignite.engine import Events
from monai.data import MetaTensor
from monai.transforms import SaveImage

from monai_xai.enums import XAIKeys, saliency_key, seconds_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.metrics.per_sample import MetricCurve
from monai_xai.metrics.stats import summary_markdown, summary_table
from monai_xai.visualize import plot_metric_bars, plot_metric_curves, save_overlay_png

__all__ = ["SaliencyWriter", "split_metric_name"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg")


def split_metric_name(name: str, methods: Sequence[str]) -> tuple[str, str] | None:
    """``"ehr_auc_gradcam"`` -> ``("ehr_auc", "gradcam")`` for a known method suffix (longest first), else None."""
    for method in sorted(methods, key=len, reverse=True):
        suffix = f"_{method}"
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], method
    return None


def _case_stem(image: Any) -> str | None:
    meta = image.meta if isinstance(image, MetaTensor) else {}
    source = meta.get("filename_or_obj")
    if not source or not isinstance(source, str):
        return None
    name = Path(source).name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _writable(maps: torch.Tensor) -> MetaTensor:
    """The (1, *spatial) map with the meta MONAI 1.6's writer needs: ``spatial_shape`` and, as ``LoadImage`` +
    ``EnsureChannelFirst`` leave it, ``original_channel_dim="no_channel"``; without them ``SaveImage`` fails on 2D
    maps (it counts one spatial dim after squeezing the channel)."""
    meta = dict(maps.meta) if isinstance(maps, MetaTensor) else {}
    meta.update(spatial_shape=tuple(maps.shape[1:]), original_channel_dim="no_channel")
    return MetaTensor(maps.as_tensor() if isinstance(maps, MetaTensor) else maps, meta=meta)


def _gather(rows: list[dict]) -> list[dict]:
    """All ranks' rows in rank order (the order MONAI's metric buffers are gathered in)."""
    if idist.get_world_size() == 1:
        return rows
    gathered: list[list[dict]] = [[] for _ in range(idist.get_world_size())]
    dist.all_gather_object(gathered, rows)
    return [row for rank_rows in gathered for row in rank_rows]


class SaliencyWriter:
    """Write maps, overlays and tables of an explaining evaluator (see the module docstring for the files).

    Args:
        output_dir: folder for all files (created).
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image, drawn under the overlays and naming the cases.
        nifti: write the maps as NIfTI.
        png: write the PNG overlays.
        output_ext: extension of the map files (``".nii.gz"``; any ``SaveImage`` extension, e.g. ``".nrrd"``).
    """

    def __init__(
        self,
        output_dir: str | Path,
        methods: str | Sequence[str],
        image_key: str = "image",
        nifti: bool = True,
        png: bool = True,
        output_ext: str = ".nii.gz",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.nifti = nifti
        self.png = png
        self.saver = SaveImage(
            output_ext=output_ext, resample=False, separate_folder=False, print_log=False, output_dtype=torch.float32
        )
        self.rows: list[dict] = []
        self._names: set[str] = set()

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_cases)
        engine.add_event_handler(Events.COMPLETED, self.write_tables)

    def _reset(self, engine: Any) -> None:
        self.rows, self._names = [], set()

    def _case_name(self, image: Any) -> str:
        stem = _case_stem(image) or f"case_{len(self._names):04d}"
        if idist.get_rank() > 0 and _case_stem(image) is None:
            stem = f"rank{idist.get_rank()}_{stem}"
        name, repeat = stem, 1
        while name in self._names:
            name, repeat = f"{stem}_{repeat}", repeat + 1
        self._names.add(name)
        return name

    def write_cases(self, engine: Any) -> None:
        """Write the current iteration's maps and overlays and remember one row per case and method."""
        for index, case in enumerate(engine_cases(engine.state.output)):
            image = case_value(engine, index, self.image_key)
            name = self._case_name(image)
            case_dir = self.output_dir / name
            case_dir.mkdir(parents=True, exist_ok=True)
            explained = case.get(XAIKeys.CLASS)
            for method in self.methods:
                maps = case_value(engine, index, saliency_key(method))
                row = {
                    "case": name,
                    "method": method,
                    "class": int(explained) if explained is not None else "",
                    "seconds": float(case[seconds_key(method)]) if seconds_key(method) in case else math.nan,
                    "nifti": "",
                    "png": "",
                }
                if self.nifti:
                    self.saver(_writable(maps), filename=case_dir / f"{name}_{method}")
                    row["nifti"] = str(case_dir / f"{name}_{method}{self.saver.output_ext}")
                if self.png:
                    png = save_overlay_png(image, maps, case_dir / f"{name}_{method}.png", title=f"{name}: {method}")
                    row["png"] = str(png)
                self.rows.append(row)

    def _per_case_metrics(self, engine: Any) -> dict[tuple[str, str], list[float]]:
        """{(metric, method): per-case values} from ``engine.state.metric_details`` (all ranks, gathered order)."""
        details = getattr(engine.state, "metric_details", {}) or {}
        values = {}
        for name, buffer in details.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is None or not isinstance(buffer, torch.Tensor):
                continue
            # the last column is the headline value of curve-valued metrics (ROAD's mean or combined score)
            values[parsed] = [float(v) for v in buffer.reshape(buffer.shape[0], -1)[:, -1].tolist()]
        return values

    def write_tables(self, engine: Any) -> None:
        """Write ``cases.csv``, ``summary.csv``, ``summary.md`` and ``metrics.png`` (rank 0)."""
        rows = _gather(self.rows)
        per_case = self._per_case_metrics(engine)
        if idist.get_rank() > 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metric_columns = sorted({metric for metric, _ in per_case if metric != XAIKeys.SECONDS.rstrip("_")})
        for method in self.methods:
            method_rows = [row for row in rows if row["method"] == method]
            for metric in metric_columns:
                case_values = per_case.get((metric, method))
                if case_values is not None and len(case_values) == len(method_rows):
                    for row, value in zip(method_rows, case_values):
                        row[metric] = value
        columns = ["case", "method", "class", "seconds", *metric_columns, "nifti", "png"]
        with open(self.output_dir / "cases.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        self._write_summary(engine, per_case)

    def _write_summary(self, engine: Any, per_case: dict[tuple[str, str], list[float]]) -> None:
        metrics: dict[str, dict[str, float]] = {}
        for name, value in engine.state.metrics.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is not None and isinstance(value, (int, float)):
                metrics.setdefault(parsed[0], {})[parsed[1]] = float(value)
        lines = ["# XAI summary", ""]
        with open(self.output_dir / "summary.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["metric", "method", "mean", "std", "min", "max", "n", "n_skipped"])
            for metric, per_method in metrics.items():
                scores = {m: per_case.get((metric, m), [per_method[m]]) for m in per_method}
                table = summary_table(scores)
                for row in table:
                    writer.writerow([metric, row.method, row.mean, row.std, row.min, row.max, row.n, row.n_skipped])
                lines += [f"## {metric}", "", summary_markdown(table), ""]
        (self.output_dir / "summary.md").write_text("\n".join(lines))
        if metrics:
            plot_metric_bars(metrics, self.output_dir / "metrics.png", title="XAI metrics per method")
        self._plot_curves(getattr(engine.state, "metric_curves", {}) or {})

    def _plot_curves(self, metric_curves: dict[str, dict[str, MetricCurve]]) -> None:
        """One plot per metric and curve (e.g. ROAD MoRF), one line per method."""
        figures: dict[tuple[str, str], dict[str, MetricCurve]] = {}
        for name, curves in metric_curves.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is None:
                continue
            metric, method = parsed
            for curve_name, curve in curves.items():
                figures.setdefault((metric, curve_name), {})[method] = curve
        for (metric, curve_name), per_method in figures.items():
            first = next(iter(per_method.values()))
            plot_metric_curves(
                {method: (curve.x, curve.y) for method, curve in per_method.items()},
                self.output_dir / f"{metric}_{curve_name}_curve.png",
                xlabel=first.x_label,
                ylabel=first.y_label,
                title=f"{metric}: {curve_name}",
            )
