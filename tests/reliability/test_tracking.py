"""MLflow tracking never costs results: runs that fail are marked FAILED or KILLED, and a server that accepts
connections but never answers its API is given up on after one short timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.engines import REPO
from tests.helpers.runs import explain_with_tracking

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind, status", [("error", "FAILED"), ("interrupt", "KILLED")])
@pytest.mark.parametrize("stats_first", [False, True])
def test_a_run_that_fails_is_not_left_running(tmp_path, kind, status, stats_first):
    tracking_uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    script = REPO / "tests" / "helpers" / "tracked_run.py"
    command = [sys.executable, str(script), tracking_uri, str(tmp_path / "xai"), kind, str(int(stats_first))]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0 and "the network failed on purpose" in finished.stderr
    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("monai_xai").experiment_id])
    assert run.info.status == status, finished.stderr[-2000:]
    assert (tmp_path / "xai" / "c0" / "c0_gradcam.nii.gz").exists()  # the first batch's maps were kept


class HangingTrackingServer:
    """Answers ``GET /health`` with 200 and accepts every other request without ever answering it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            request = connection.recv(65536)
            if request.startswith(b"GET /health"):
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
                connection.close()
            else:
                self.held.append(connection)  # never answered

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def test_a_hanging_tracking_server_costs_one_timeout(tmp_path):
    server = HangingTrackingServer()
    try:
        started = time.monotonic()
        with pytest.warns(UserWarning, match="MLflow tracking at .* is off for this run"):
            evaluator = explain_with_tracking(tmp_path / "xai", server.url, run_name="hanging")
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 30, f"the run waited {elapsed:.0f} s for the tracking server"
    assert server.held, "the stub never saw an API request"
    assert "heat_diff_gradcam" in evaluator.state.metrics
    assert (tmp_path / "xai" / "summary.csv").exists()
