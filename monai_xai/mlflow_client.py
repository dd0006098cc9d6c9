"""Logging finished results to MLflow with a client of its own, best effort: what the study and the sanity checks
share.

A client of its own, because ``mlflow.set_tracking_uri`` would set ``MLFLOW_TRACKING_URI`` for the whole process and
every program it starts (and MONAI's ``MLFlowHandler`` prefers that variable to its own argument): logging from a
Python session would redirect the tracking of every later run. Best effort like
:class:`~monai_xai.handlers.XAIMLflowHandler`: an unreachable, hanging or failing server gives one warning saying
where the results are kept, never an error that loses them.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from monai_xai.handlers.mlflow_artifacts import bounded_call, tracking_server_error

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["client_run", "experiment_id", "log_metrics", "log_params", "metric_key", "track_best_effort"]

T = TypeVar("T")

# seconds to wait for an http(s) server's health endpoint before tracking is given up
SERVER_TIMEOUT = 5.0


def metric_key(*parts: str) -> str:
    """An MLflow metric or parameter name from ``parts`` joined by dots (letters, digits, ``_ - . /`` and spaces only:
    any other character, e.g. from a crafted method or layer name, becomes ``_``)."""
    return ".".join(re.sub(r"[^\w\-./ ]", "_", part) for part in parts)


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The id of the experiment ``name``, created when missing; a sqlite store keeps its artifacts next to the
    database, not in the working directory."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlruns").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextmanager
def client_run(client: MlflowClient, experiment: str, name: str, parent_id: str | None = None) -> Iterator[str]:
    """A run of ``client`` in the experiment of id ``experiment`` (nested under ``parent_id`` when given) that ends
    ``FINISHED``, or ``FAILED`` on an error; yields its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {MLFLOW_PARENT_RUN_ID: parent_id} if parent_id else None
    run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Log ``params`` as strings in one request."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` at step 0 in one request."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])


def track_best_effort(uri: str, log: Callable[[MlflowClient], T], what: str, kept: str, timeout: float) -> T | None:
    """``log(client)`` with a client of ``uri``, or None with one warning when the server cannot be reached, does not
    answer within ``timeout`` seconds, or fails.

    Args:
        uri: MLflow tracking URI (a sqlite store's folder is created).
        log: logs everything with the client it is given; its result is returned.
        what: what is tracked, for the warning (e.g. ``"this study"``).
        kept: where the results are whatever happens here, for the warning (e.g. ``"the report is complete in ..."``).
        timeout: the most seconds the whole logging may take.
    """
    from mlflow.tracking import MlflowClient

    unreachable = tracking_server_error(uri, SERVER_TIMEOUT)
    if unreachable:
        warnings.warn(f"MLflow tracking at {uri} is off for {what} ({unreachable}); {kept}.", stacklevel=2)
        return None
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return bounded_call(lambda: log(MlflowClient(tracking_uri=uri)), timeout)
    except Exception as error:  # noqa: BLE001 - tracking must never lose the computed results
        why = f"{type(error).__name__}: {error}"
        warnings.warn(f"MLflow tracking at {uri} failed for {what} ({why}); {kept}.", stacklevel=2)
        return None
