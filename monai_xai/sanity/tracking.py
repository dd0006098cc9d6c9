"""Sanity checks in MLflow: one run per ``monai-xai sanity`` call (or per bundle of the demo).

The run logs the call's settings as parameters; per method the top-down Spearman (``sanity_spearman.<method>``), the
localisation figures where a ground truth exists (``ehr_auc.<method>``, ``localisation_ratio.<method>``) and, per
further check, its statistic, bootstrap CI and verdict (``sanity.<check>.<method>``, ``sanity_ci_low...``,
``sanity_ci_high...``, ``sanity_passed.<check>.<method>`` as 1 / 0); and as artifacts the Markdown tables
(``sanity.md``), the verdicts a bundle's ``xai_sanity`` takes (``sanity_verdicts.json``) and any pictures. Tracking
is best effort (:func:`~monai_xai.mlflow_client.track_best_effort`): the tables printed and written are complete
whatever the server does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monai_xai.mlflow_client import client_run, experiment_id, log_metrics, log_params, metric_key, track_best_effort
from monai_xai.sanity.report import sanity_markdown
from monai_xai.sanity.results import MethodSanity, sanity_verdicts
from monai_xai.sanity.trust import non_discriminating

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["DEFAULT_SANITY_EXPERIMENT", "sanity_metrics", "track_sanity"]

DEFAULT_SANITY_EXPERIMENT = "monai_xai_sanity"
# the most seconds logging one sanity run may take (tables and a few pictures)
TRACKING_TIMEOUT = 60.0


def sanity_metrics(summary: Sequence[MethodSanity]) -> dict[str, float]:
    """The MLflow metrics of a sanity run (see the module docstring), NaN left out."""
    values: dict[str, float] = {}
    for row in summary:
        values[metric_key("sanity_spearman", row.method)] = row.spearman
        values[metric_key("ehr_auc", row.method)] = row.ehr_auc
        values[metric_key("localisation_ratio", row.method)] = row.localisation_ratio
        for check, verdict in row.checks.items():
            values[metric_key("sanity", check.value, row.method)] = verdict.statistic
            values[metric_key("sanity_ci_low", check.value, row.method)] = verdict.ci_low
            values[metric_key("sanity_ci_high", check.value, row.method)] = verdict.ci_high
            values[metric_key("sanity_passed", check.value, row.method)] = float(verdict.passed)
    return {key: float(value) for key, value in values.items() if not math.isnan(value)}


def track_sanity(
    summary: Sequence[MethodSanity],
    tracking_uri: str,
    params: Mapping[str, object],
    run_name: str,
    experiment_name: str = DEFAULT_SANITY_EXPERIMENT,
    pictures: Sequence[str | Path] = (),
) -> str | None:
    """Log a sanity run to MLflow; returns the run id, or None (with one warning) when it could not be logged.

    Args:
        summary: :func:`~monai_xai.sanity.bundle_sanity_checks` rows.
        tracking_uri: e.g. ``sqlite:///mlruns.db`` or ``http://127.0.0.1:5000``.
        params: the run's settings (bundle, cases, checks, ...), logged as strings.
        run_name: the MLflow run's name (e.g. the bundle's folder name).
        experiment_name: created when missing.
        pictures: PNGs the run drew (``--figure``, ``--cascade_figure``), logged as artifacts when they exist.
    """
    passed_by = non_discriminating({row.method: row.checks for row in summary})
    passed = "; ".join(f"{check.value} ({', '.join(controls)})" for check, controls in passed_by.items())
    params = dict(params) | {"non_discriminating": passed or "none"}

    def log(client: MlflowClient) -> str:
        experiment = experiment_id(client, experiment_name, tracking_uri)
        with client_run(client, experiment, run_name) as run_id:
            log_params(client, run_id, params)
            log_metrics(client, run_id, sanity_metrics(summary))
            client.log_text(run_id, sanity_markdown(summary) + "\n", "sanity.md")
            client.log_dict(run_id, sanity_verdicts(summary), "sanity_verdicts.json")
            for picture in pictures:
                if Path(picture).is_file():
                    client.log_artifact(run_id, str(picture))
            return run_id

    return track_best_effort(
        tracking_uri, log, f"the sanity checks of {run_name}", "the tables above are complete", TRACKING_TIMEOUT
    )
