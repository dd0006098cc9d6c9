"""A study in MLflow: one run holding the whole report, with one nested run per bundle holding its mean metrics.

The parent run (named after the study) logs the study's settings as parameters and the report folder (Markdown, CSV,
plots, ``study.json``) as artifacts; each nested run logs its bundle's settings and, per layer and method, the mean of
every metric as ``<metric>.<layer>.<method>`` (and ``seconds.<layer>.<method>``, ``sanity_spearman.<layer>.<method>``).
Tracking is best effort like :class:`~monai_xai.handlers.XAIMLflowHandler`: an unreachable or failing server gives one
warning naming the report folder, which is complete whatever happens here.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

from monai_xai.handlers.mlflow_artifacts import bounded_call, tracking_server_error
from monai_xai.study.fingerprint import study_fingerprint
from monai_xai.study.report import StudyReport
from monai_xai.study.spec import StudySpec

__all__ = ["DEFAULT_EXPERIMENT", "tracking_uri", "track_study"]

DEFAULT_EXPERIMENT = "monai_xai_studies"
SERVER_TIMEOUT = 5.0
# the most seconds logging a whole study may take (a report folder of plots and tables)
TRACKING_TIMEOUT = 120.0


def tracking_uri(spec: StudySpec) -> str:
    """The study's MLflow URI: its ``mlflow.tracking_uri``, else ``sqlite:///<output_dir>/mlflow/mlruns.db``."""
    uri = (spec.mlflow or {}).get("tracking_uri")
    if uri:
        return str(uri)
    return f"sqlite:///{(Path(spec.output_dir) / 'mlflow' / 'mlruns.db').resolve()}"


def _key(*parts: str) -> str:
    """An MLflow metric name (letters, digits, ``_ - . /`` and spaces only)."""
    return ".".join(re.sub(r"[^\w\-./ ]", "_", part) for part in parts)


def _experiment_id(client_module, name: str, uri: str) -> str:
    experiment = client_module.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # keep the artifacts next to the database, not in the working directory
        location = (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
    return client_module.create_experiment(name, artifact_location=location)


def track_study(spec: StudySpec, report: StudyReport) -> str | None:
    """Log the study (see the module docstring); returns the parent run id, or None when not tracked.

    Args:
        spec: the study.
        report: its written report (:func:`~monai_xai.study.report.write_report`): the folder logged as artifacts,
            the tables the metrics come from.
    """
    report_dir = report.folder
    if spec.mlflow is None:
        return None
    uri = tracking_uri(spec)
    unreachable = tracking_server_error(uri, SERVER_TIMEOUT)
    if unreachable:
        warnings.warn(
            f"MLflow tracking at {uri} is off for this study ({unreachable}); the report is complete in {report_dir}.",
            stacklevel=2,
        )
        return None
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return bounded_call(lambda: _log(spec, report, uri), TRACKING_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - tracking must never lose the computed study
        warnings.warn(
            f"MLflow tracking at {uri} failed for this study ({type(error).__name__}: {error}); the report is "
            f"complete in {report_dir}.",
            stacklevel=2,
        )
        return None


def _log(spec: StudySpec, report: StudyReport, uri: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(mlflow, (spec.mlflow or {}).get("experiment") or DEFAULT_EXPERIMENT, uri)
    summary, sanity = report.tables["summary"], report.tables["sanity"]
    with mlflow.start_run(experiment_id=experiment_id, run_name=spec.name) as parent:
        mlflow.log_params(
            {
                "study": spec.name,
                "study_file": str(spec.source),
                "bundles": ",".join(b.name for b in spec.bundles),
                "methods": ",".join(spec.methods),
                "metrics": ",".join(spec.metrics),
                "iou_threshold": spec.iou_mode,
                "alpha": spec.alpha,
                "fingerprint": study_fingerprint(spec),
            }
        )
        mlflow.log_artifacts(str(report.folder), artifact_path="report")
        for bundle in spec.bundles:
            with mlflow.start_run(experiment_id=experiment_id, run_name=bundle.name, nested=True):
                mlflow.log_params(
                    {
                        "bundle_path": str(bundle.path),
                        "weights": str(bundle.weights),
                        "overrides": json.dumps(dict(bundle.overrides)),
                        "layers": ",".join(bundle.layers),
                        "class": str(bundle.class_idx),
                        "pixel_set": str(bundle.pixel_set),
                        "score": bundle.score,
                    }
                )
                rows = summary[summary["bundle"] == bundle.name]
                metrics = {
                    _key(r.metric, r.layer, r.method): float(r.mean)
                    for r in rows.itertuples()
                    if not math.isnan(r.mean)
                }
                if len(sanity):
                    for r in sanity[sanity["bundle"] == bundle.name].itertuples():
                        if not math.isnan(r.spearman):
                            metrics[_key("sanity_spearman", r.layer, r.method)] = float(r.spearman)
                mlflow.log_metrics(metrics)
        return parent.info.run_id
