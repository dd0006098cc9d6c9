"""``XAITableWriter``: an explanation run's tables and plots, written from its records when the run completes.

Files under the run's results folder:

- ``cases.csv``: one row per case and method: class, seconds, every per-case metric value (the headline, last,
  column of curve-valued metrics) and the written files.
- ``descriptions.csv``: one row per case and method: ``case``, ``method``, then the description's fields
  (:meth:`~monai_xai.describe.CaseDescription.as_dict`: prediction, confidence, the largest hot region's geometry
  and words, ..., ``text``); an empty text for a map that could not be described.
- ``summary.csv`` / ``summary.md``: per metric and method, mean, std, min, max, n and skipped cases;
  ``metrics.png``: one bar chart per metric; ``<metric>_<curve>_curve.png``: the mean curves of curve-valued metrics
  (e.g. ``road_combined_morf_curve.png``: score change vs pixels kept, one line per method).
- ``channel_shares.csv`` (input attributions only): one row per case, method, region (``image``: the whole image;
  the explained region; the ground-truth region) and input channel: the channel's share of the absolute attribution
  there (:func:`~monai_xai.cams.channel_shares`), e.g. which MRI sequence carried the evidence.
- ``failed_cases.csv``: the cases that could not be read (:mod:`monai_xai.data.unreadable`), also listed at the top
  of ``summary.md``.

Attach it after the :class:`~monai_xai.handlers.XAIRecorder` (whose records it writes, on rank 0) and before an
MLflow handler, so the tables exist when the artifacts are logged. The run ends with an error after the tables are
written when no case could be read, or, with ``strict``, when any could not.
"""

from __future__ import annotations

from typing import Any

from ignite import distributed as idist
from ignite.engine import Events

from monai_xai.atomic import atomic_write_csv, atomic_write_text
from monai_xai.handlers.records import RunRecords, run_records
from monai_xai.metrics.catalogue import SECONDS
from monai_xai.metrics.stats import summary_markdown
from monai_xai.visualize import plot_metric_bars, plot_metric_curves

__all__ = ["XAITableWriter"]

# the files of each case and method that cases.csv lists
_FILE_COLUMNS = ("nifti", "png")


class XAITableWriter:
    """Write the tables and plots of a run's records (see the module docstring).

    Args:
        strict: end the run with an error when any case could not be read (else only when none could).
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.COMPLETED, self.write_tables)

    def write_tables(self, engine: Any) -> None:
        """Write every table and plot (rank 0), then fail the run if the cases that could not be read say so."""
        records = run_records(engine, type(self).__name__)
        if idist.get_rank() == 0:
            records.output_dir.mkdir(parents=True, exist_ok=True)
            self._write_cases(records)
            self._write_descriptions(records)
            self._write_channel_shares(records)
            if records.unreadable:
                rows = [{**record, "files": " ".join(record["files"])} for record in records.unreadable]
                atomic_write_csv(records.output_dir / "failed_cases.csv", ["case", "files", "reason"], rows)
            self._write_summary(records)
        if records.unreadable and (self.strict or not records.cases):
            names = [record["case"] for record in records.unreadable]
            raise RuntimeError(
                f"{len(records.unreadable)} case(s) could not be read ({names[:10]}; reasons in "
                f"{records.output_dir / 'failed_cases.csv'}), "
                + (
                    "and no case could be explained."
                    if not records.cases
                    else "and strict=True (xai_strict) was asked."
                )
            )

    @staticmethod
    def _write_cases(records: RunRecords) -> None:
        """``cases.csv``: case, method, class, seconds, the metrics (by name), the files."""
        metrics = sorted(records.score_metrics())
        rows = [
            {
                "case": case.name,
                "method": method,
                "class": case.class_label,
                SECONDS: record.seconds,
                **record.metrics,
                **{kind: str(record.files[kind]) for kind in _FILE_COLUMNS if kind in record.files},
            }
            for case in records.cases
            for method, record in case.methods.items()
        ]
        columns = ["case", "method", "class", SECONDS, *metrics, *_FILE_COLUMNS]
        atomic_write_csv(
            records.output_dir / "cases.csv", columns, [{key: row.get(key, "") for key in columns} for row in rows]
        )

    @staticmethod
    def _write_descriptions(records: RunRecords) -> None:
        """``descriptions.csv``: ``case``, ``method``, then every description field in first-seen order (a
        segmentation's overlap columns, for example, appear only with a pixel set)."""
        rows = [
            {"case": case.name, "method": method, **(record.description.as_dict() if record.description else {})}
            | {"text": record.text}
            for case in records.cases
            for method, record in case.methods.items()
        ]
        columns = list(dict.fromkeys(["case", "method", *(key for row in rows for key in row)]))
        atomic_write_csv(records.output_dir / "descriptions.csv", columns, rows)

    @staticmethod
    def _write_channel_shares(records: RunRecords) -> None:
        """``channel_shares.csv``: case, method, region, channel, share; not written when no method has shares."""
        rows = [
            {"case": case.name, "method": method, "region": region, "channel": channel, "share": share}
            for case in records.cases
            for method, record in case.methods.items()
            for region, shares in record.channel_shares.items()
            for channel, share in enumerate(shares)
        ]
        if rows:
            atomic_write_csv(
                records.output_dir / "channel_shares.csv", ["case", "method", "region", "channel", "share"], rows
            )

    @staticmethod
    def _write_summary(records: RunRecords) -> None:
        """``summary.csv``, ``summary.md``, ``metrics.png`` and the curve plots."""
        lines = ["# XAI summary", ""]
        if records.layers is not None:
            lines += [f"Explained layer: {records.layers.text()}.", ""]
        if records.explained_classes():
            lines += [f"Explained class(es): {records.explained_classes()}.", ""]
        for metric, why in records.skipped_metrics.items():
            lines += [f"**{metric} skipped**: {why}.", ""]
        if records.unreadable:
            lines += [
                f"**{len(records.unreadable)} case(s) could not be read and were skipped** (failed_cases.csv):",
                "",
            ]
            lines += [f"- {record['case']}: {record['reason']}" for record in records.unreadable] + [""]
        rows = []
        for metric, table in records.summary.items():
            rows += [
                {
                    "metric": metric,
                    "method": row.method,
                    "mean": row.mean,
                    "std": row.std,
                    "min": row.min,
                    "max": row.max,
                    "n": row.n,
                    "n_skipped": row.n_skipped,
                }
                for row in table
            ]
            lines += [f"## {metric}", "", summary_markdown(table), ""]
        columns = ["metric", "method", "mean", "std", "min", "max", "n", "n_skipped"]
        atomic_write_csv(records.output_dir / "summary.csv", columns, rows)
        atomic_write_text(records.output_dir / "summary.md", "\n".join(lines))
        means = {metric: {row.method: row.mean for row in table} for metric, table in records.summary.items()}
        if means:
            plot_metric_bars(means, records.output_dir / "metrics.png", title="XAI metrics per method")
        for metric, per_method in records.curves.items():
            names = dict.fromkeys(name for curves in per_method.values() for name in curves)
            for curve_name in names:
                lines_of = {method: curves[curve_name] for method, curves in per_method.items() if curve_name in curves}
                first = next(iter(lines_of.values()))
                plot_metric_curves(
                    {method: (curve.x, curve.y) for method, curve in lines_of.items()},
                    records.output_dir / f"{metric}_{curve_name}_curve.png",
                    xlabel=first.x_label,
                    ylabel=first.y_label,
                    title=f"{metric}: {curve_name}",
                )
