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
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from monai_xai.handlers.mlflow_artifacts import TRACKING_URI_ENV
from monai_xai.mlflow_client import client_run, experiment_id, log_metrics, log_params, metric_key, track_best_effort
from monai_xai.study.fingerprint import study_fingerprint
from monai_xai.study.report import StudyReport
from monai_xai.study.spec import StudySpec
from monai_xai.study.store import RELIABILITY_COLUMNS

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["DEFAULT_EXPERIMENT", "tracking_uri", "track_study"]

DEFAULT_EXPERIMENT = "monai_xai_studies"
# the most seconds logging a whole study may take (a report folder of plots and tables)
TRACKING_TIMEOUT = 120.0


def tracking_uri(spec: StudySpec) -> str:
    """The study's MLflow URI: its ``mlflow.tracking_uri``, else the environment's ``MLFLOW_TRACKING_URI`` (MLflow's
    own default, as the bundles' tracking handler reads it), else ``sqlite:///<output_dir>/mlflow/mlruns.db``."""
    uri = (spec.mlflow or {}).get("tracking_uri") or os.environ.get(TRACKING_URI_ENV)
    if uri:
        return str(uri)
    return f"sqlite:///{(Path(spec.output_dir) / 'mlflow' / 'mlruns.db').resolve()}"


def track_study(spec: StudySpec, report: StudyReport) -> str | None:
    """Log the study (see the module docstring); returns the parent run id, or None when not tracked.

    Args:
        spec: the study.
        report: its written report (:func:`~monai_xai.study.report.write_report`): the folder logged as artifacts,
            the tables the metrics come from.
    """
    if spec.mlflow is None:
        return None
    uri = tracking_uri(spec)
    return track_best_effort(
        uri,
        lambda client: _log(client, spec, report, uri),
        "this study",
        f"the report is complete in {report.folder}",
        TRACKING_TIMEOUT,
    )


def _log(client: MlflowClient, spec: StudySpec, report: StudyReport, uri: str) -> str:
    """Log the study with ``client`` of ``uri`` (see :mod:`monai_xai.mlflow_client` for why a client of its own)."""
    experiment = experiment_id(client, (spec.mlflow or {}).get("experiment") or DEFAULT_EXPERIMENT, uri)
    summary, sanity = report.tables["summary"], report.tables["sanity"]
    reliability, concordance = report.tables["reliability"], report.tables["concordance"]
    with client_run(client, experiment, spec.name) as parent_id:
        log_params(
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
            with client_run(client, experiment, bundle.name, parent_id) as run_id:
                log_params(
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
                    metric_key(r.metric, r.layer, r.method): float(r.mean)
                    for r in rows.itertuples()
                    if not math.isnan(r.mean)
                }
                if len(sanity):
                    for r in sanity[sanity["bundle"] == bundle.name].itertuples():
                        if not math.isnan(r.spearman):
                            metrics[metric_key("sanity_spearman", r.layer, r.method)] = float(r.spearman)
                metrics |= _trust_metrics(bundle.name, reliability, concordance)
                log_metrics(client, run_id, metrics)
        return parent_id


def _trust_metrics(bundle: str, reliability: pd.DataFrame, concordance: pd.DataFrame) -> dict[str, float]:
    """The metrics' reliability check (``reliability_<perturbation>_change.<metric>.<layer>`` for the pooled minor
    ``noise`` and each perturbation, ``reliability_reliable`` as 1 / 0, left out when undecided) and Kendall's W
    (``kendalls_w.<all|reliable>.<layer>``) of one bundle, NaN left out."""
    values: dict[str, float] = {}
    rows = reliability[reliability["bundle"] == bundle].itertuples() if len(reliability) else ()
    for r in rows:
        for name in ("noise", *RELIABILITY_COLUMNS):
            values[metric_key(f"reliability_{name}_change", r.metric, r.layer)] = getattr(r, f"{name}_change")
        if isinstance(r.reliable, bool | np.bool_):
            values[metric_key("reliability_reliable", r.metric, r.layer)] = float(r.reliable)
    rows = concordance[concordance["bundle"] == bundle].itertuples() if len(concordance) else ()
    for r in rows:
        values[metric_key("kendalls_w", r.metrics, r.layer)] = r.kendalls_w
        values[metric_key("kendalls_w_pvalue", r.metrics, r.layer)] = r.pvalue
    return {key: float(value) for key, value in values.items() if not math.isnan(value)}
