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
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from monai_xai.handlers.mlflow_artifacts import bounded_call, tracking_server_error
from monai_xai.study.fingerprint import study_fingerprint
from monai_xai.study.report import StudyReport
from monai_xai.study.spec import StudySpec
from monai_xai.study.store import RELIABILITY_COLUMNS

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


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # keep the artifacts next to the database, not in the working directory
        location = (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextmanager
def _run(client, experiment_id: str, name: str, parent_id: str | None = None) -> Iterator[str]:
    """A run of ``client`` (nested under ``parent_id`` when given) that ends ``FINISHED``, or ``FAILED`` on an error;
    yields its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {MLFLOW_PARENT_RUN_ID: parent_id} if parent_id else None
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)


def _log_params(client, run_id: str, params: dict[str, object]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])


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
    """Log the study with a client of its own: ``mlflow.set_tracking_uri`` would set ``MLFLOW_TRACKING_URI`` for the
    whole process and every program it starts (and MONAI's ``MLFlowHandler`` prefers that variable to its own
    argument), so a study in a Python session would redirect the tracking of every later run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, (spec.mlflow or {}).get("experiment") or DEFAULT_EXPERIMENT, uri)
    summary, sanity = report.tables["summary"], report.tables["sanity"]
    reliability, concordance = report.tables["reliability"], report.tables["concordance"]
    with _run(client, experiment_id, spec.name) as parent_id:
        _log_params(
            client,
            parent_id,
            {
                "study": spec.name,
                "study_file": str(spec.source),
                "bundles": ",".join(b.name for b in spec.bundles),
                "methods": ",".join(spec.methods),
                "metrics": ",".join(spec.metrics),
                "iou_threshold": spec.iou_mode,
                "alpha": spec.alpha,
                "reliability_cases": spec.reliability_cases,
                "reliability_noise": spec.reliability_noise,
                "fingerprint": study_fingerprint(spec),
            },
        )
        client.log_artifacts(parent_id, str(report.folder), artifact_path="report")
        for bundle in spec.bundles:
            with _run(client, experiment_id, bundle.name, parent_id) as run_id:
                _log_params(
                    client,
                    run_id,
                    {
                        "bundle_path": str(bundle.path),
                        "weights": str(bundle.weights),
                        "overrides": json.dumps(dict(bundle.overrides)),
                        "layers": ",".join(bundle.layers),
                        "class": str(bundle.class_idx),
                        "pixel_set": str(bundle.pixel_set),
                        "score": bundle.score,
                    },
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
                metrics |= _trust_metrics(bundle.name, reliability, concordance)
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
        return parent_id


def _trust_metrics(bundle: str, reliability: pd.DataFrame, concordance: pd.DataFrame) -> dict[str, float]:
    """The metrics' reliability check (``reliability_<perturbation>_change.<metric>.<layer>`` for the pooled minor
    ``noise`` and each perturbation, ``reliability_reliable`` as 1 / 0, left out when undecided) and Kendall's W
    (``kendalls_w.<all|reliable>.<layer>``) of one bundle, NaN left out."""
    values: dict[str, float] = {}
    rows = reliability[reliability["bundle"] == bundle].itertuples() if len(reliability) else ()
    for r in rows:
        for name in ("noise", *RELIABILITY_COLUMNS):
            values[_key(f"reliability_{name}_change", r.metric, r.layer)] = getattr(r, f"{name}_change")
        if isinstance(r.reliable, bool | np.bool_):
            values[_key("reliability_reliable", r.metric, r.layer)] = float(r.reliable)
    rows = concordance[concordance["bundle"] == bundle].itertuples() if len(concordance) else ()
    for r in rows:
        values[_key("kendalls_w", r.metrics, r.layer)] = r.kendalls_w
        values[_key("kendalls_w_pvalue", r.metrics, r.layer)] = r.pvalue
    return {key: float(value) for key, value in values.items() if not math.isnan(value)}
