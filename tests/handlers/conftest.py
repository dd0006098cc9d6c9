"""What the handler tests share: the evaluator run of the metric-handler and writer tests, and one real MLflow
tracking server (both built once per test session)."""

import sys

import pytest

from tests.helpers.runs import explain_classification_cases
from tests.helpers.servers import free_port, running_server


@pytest.fixture(scope="package")
def classification_run(tmp_path_factory):
    return explain_classification_cases(tmp_path_factory.mktemp("cls_run"))


@pytest.fixture(scope="package")
def mlflow_server(tmp_path_factory):
    """A real tracking server on a free port; yields its URI, killed at teardown."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    with running_server(command, f"{uri}/health", root / "server.log"):
        yield uri
