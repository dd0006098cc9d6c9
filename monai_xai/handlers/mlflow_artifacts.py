"""``XAIMLflowHandler``: MONAI's ``MLFlowHandler`` for explanation runs, that never fails the run it tracks.

On top of ``MLFlowHandler`` (metrics of ``engine.state.metrics`` per epoch, parameters at start) it logs the explanation
settings as parameters and the whole results folder (NIfTI maps, PNG overlays, plots, ``cases.csv``, ``summary.csv``,
``summary.md``) as artifacts under ``xai/``, keeping its sub-folders (``MLFlowHandler`` flattens them).

Tracking is best effort: an unreachable server (checked with a short request before the MLflow client's long retry
loop) or any MLflow error turns the handler off with one warning naming the folder where every result still is, and the
evaluation finishes normally. Every tracking call is bounded (:func:`bounded_call`: the handler waits ``server_timeout``
seconds at most, without changing MLflow's process-wide settings), so a server that answers ``/health`` but hangs on
its API costs one timeout, not minutes. A run that ends with an error is marked ``FAILED`` in MLflow, one stopped with
Ctrl-C ``KILLED`` (also when another handler re-raises the error first, or the exception reaches the top of the
program: the run is ended when the interpreter exits). Only rank 0 logs in a distributed run.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ignite import distributed as idist
from ignite.engine import Events
from monai.handlers import MLFlowHandler

__all__ = ["XAIMLflowHandler", "bounded_call", "tracking_server_error"]

T = TypeVar("T")

# MLflow's environment variable naming the tracking store; when set, MONAI's MLFlowHandler uses it instead of its
# ``tracking_uri`` argument
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def bounded_call(step: Callable[[], T], timeout: float) -> T:
    """``step()``, run in a daemon thread that the caller waits for at most ``timeout`` seconds: MLflow's own HTTP
    settings (120 s and 7 retries with backoff by default) would stall a run for minutes on a hanging server, and
    they are process-wide environment variables, which a library must not change.

    Raises:
        TimeoutError: ``step`` did not finish in time (it goes on in the background, and its result is dropped).
        Exception: whatever ``step`` raised.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = step()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name="monai-xai-mlflow", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"the tracking server did not answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def tracking_server_error(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """Why an http(s) MLflow server cannot be reached (None when it answers, or for non-http URIs such as sqlite).

    Args:
        tracking_uri: e.g. ``"http://127.0.0.1:5000"``.
        timeout: seconds to wait for the server's ``/health`` endpoint.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return None
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


class XAIMLflowHandler(MLFlowHandler):
    """Log an explanation run to MLflow: metrics per method, explanation parameters, the results folder as artifacts.

    Args:
        output_dir: the results folder (the ``SaliencyWriter``'s ``output_dir``), logged under ``xai/`` when the
            engine completes and named in the warning when tracking fails.
        tracking_uri: ``sqlite:///<path>/mlruns.db`` (embedded; default ``<output_dir>/mlflow/mlruns.db``, with the
            run artifacts in ``<output_dir>/mlflow/mlruns``; that folder is not logged as an artifact) or
            ``http://host:port`` of an ``mlflow server``. MLflow 3.x refuses the plain file store. The environment
            variable ``MLFLOW_TRACKING_URI``, when set, wins over this argument (as in MONAI's ``MLFlowHandler``).
        params: explanation settings to log as run parameters, e.g. ``{"xai_methods": ["gradcam"],
            "xai_target_layer": "layer4", "road_percentiles": [10, 50, 90]}`` (values are logged as strings).
        experiment_name: MLflow experiment.
        run_name: run name; None gives a unique ``xai_<date>_<time>_<id>`` so every evaluation is a new run.
        server_timeout: seconds any tracking request may take before tracking is turned off.
        kwargs: other ``MLFlowHandler`` arguments.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tracking_uri: str | None = None,
        params: Mapping[str, Any] | None = None,
        experiment_name: str = "monai_xai",
        run_name: str | None = None,
        server_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.tracking_dir = self.output_dir / "mlflow"
        environment_uri = os.environ.get(TRACKING_URI_ENV) or None  # MLFlowHandler prefers it to its argument
        if tracking_uri is None and environment_uri is None:
            self.tracking_dir.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{(self.tracking_dir / 'mlruns.db').resolve()}"
        # MLFlowHandler reuses the newest unfinished run when run_name is None (e.g. one left by a crash on a
        # long-running server); a unique name always starts a fresh run
        run_name = run_name or f"xai_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
        kwargs.setdefault("iteration_log", False)
        kwargs.setdefault("close_on_complete", True)
        super().__init__(
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=run_name,
            experiment_param={key: str(value) for key, value in (params or {}).items()},
            **kwargs,
        )
        self.tracking_uri: str = environment_uri or tracking_uri  # the store this run goes to, named in warnings
        self.server_timeout = server_timeout
        self.active = idist.get_rank() == 0

    def attach(self, engine: Any) -> None:
        """``MLFlowHandler``'s events, and ``EXCEPTION_RAISED`` to end the run ``FAILED`` / ``KILLED``.

        The run starts at ``STARTED``; the metric and artifact logging (``EPOCH_COMPLETED``, ``COMPLETED``) is
        attached when the engine starts, after every other handler (:mod:`monai_xai.handlers.ordering`), so that a
        bundle's own metric handler listed after this one (the gaze bundle's) is logged too, and the results folder
        is logged after every writer has finished."""
        if not engine.has_event_handler(self.start, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.start)
        if not engine.has_event_handler(self._attach_logging, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._attach_logging)
        if not engine.has_event_handler(self.exception_raised, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def _attach_logging(self, engine: Any) -> None:
        super().attach(engine)  # MLFlowHandler checks each of its handlers before adding it

    def exception_raised(self, engine: Any, error: BaseException) -> None:
        """End the run ``KILLED`` (Ctrl-C) or ``FAILED``, then let the error go on."""
        self.end_unfinished(type(error))
        raise error

    def end_unfinished(self, error_type: type[BaseException] | None = None) -> None:
        """End a run that did not complete: ``KILLED`` after a ``KeyboardInterrupt``, else ``FAILED``."""
        if self.cur_run is None:
            return
        self.run_finish_status = "KILLED" if error_type and issubclass(error_type, KeyboardInterrupt) else "FAILED"
        try:
            bounded_call(lambda: MLFlowHandler.close(self), self.server_timeout)
        except Exception as error:  # the run's own error matters more than its tracking
            warnings.warn(f"could not end the MLflow run: {type(error).__name__}: {error}", stacklevel=2)
        finally:
            self._stop_watching()

    def _end_at_exit(self) -> None:
        # the interpreter records an uncaught error in sys.last_type before it runs the exit functions
        self.end_unfinished(getattr(sys, "last_type", None))

    def _watch(self) -> None:
        """Until the run closes, end it at interpreter exit if nothing else did (e.g. an error re-raised by another
        handler before this one saw it): the one process-wide hook, registered only while a run is open."""
        atexit.register(self._end_at_exit)

    def _stop_watching(self) -> None:
        atexit.unregister(self._end_at_exit)

    def _disable(self, reason: str) -> None:
        self.active = False
        warnings.warn(
            f"MLflow tracking at {self.tracking_uri} is off for this run ({reason}); the evaluation continues and "
            f"all results are on disk in {self.output_dir.resolve()}.",
            stacklevel=2,
        )

    def _guarded(self, step: Callable[[], None]) -> None:
        if not self.active:
            return
        try:
            bounded_call(step, self.server_timeout)
        except Exception as error:  # tracking must never fail the evaluation it records
            self._disable(f"{type(error).__name__}: {error}")

    def start(self, engine: Any) -> None:
        if self.active:
            unreachable = tracking_server_error(self.tracking_uri, self.server_timeout)
            if unreachable is not None:
                self._disable(f"server unreachable: {unreachable}")
        self._guarded(lambda: MLFlowHandler.start(self, engine))
        if self.cur_run is not None:
            self._watch()

    def epoch_completed(self, engine: Any) -> None:
        """Log ``engine.state.metrics``, and each curve of ``engine.state.metric_curves`` (e.g. ROAD's MoRF curve of
        a method) as the metric ``"<name>_<curve>"`` with the curve's x (e.g. the percentile) as step, so MLflow plots
        it."""

        def log() -> None:
            MLFlowHandler.epoch_completed(self, engine)
            run_id = self.cur_run.info.run_id
            for name, curves in getattr(engine.state, "metric_curves", {}).items():
                for curve_name, curve in curves.items():
                    for x, y in zip(curve.x, curve.y):
                        self.client.log_metric(run_id, f"{name}_{curve_name}", y, step=int(x))

        self._guarded(log)

    def iteration_completed(self, engine: Any) -> None:
        self._guarded(lambda: MLFlowHandler.iteration_completed(self, engine))

    def complete(self) -> None:
        """Log the results folder under ``xai/`` keeping its layout, then any ``artifacts`` given to the handler."""

        def log_folder() -> None:
            if self.cur_run is not None and self.output_dir.is_dir():
                for path in sorted(self.output_dir.rglob("*")):
                    if path.is_file() and self.tracking_dir not in path.parents:
                        folder = Path("xai", path.parent.relative_to(self.output_dir)).as_posix()
                        self.client.log_artifact(self.cur_run.info.run_id, str(path), artifact_path=folder)
            MLFlowHandler.complete(self)

        self._guarded(log_folder)

    def close(self) -> None:
        if self.cur_run is None:
            return
        self._guarded(lambda: MLFlowHandler.close(self))
        self._stop_watching()
