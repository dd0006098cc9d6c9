"""XAIMLflowHandler against a real ``mlflow server`` (sqlite backend, 127.0.0.1), read back with MlflowClient."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from monai_xai.handlers import tracking_server_error
from tests.helpers.runs import TRACKED_METHODS, explain_with_tracking
from tests.helpers.servers import free_port

pytestmark = pytest.mark.slow


METHODS = TRACKED_METHODS


def test_metrics_params_and_artifacts_reach_the_server(mlflow_server, tmp_path):
    # a generous timeout: on a busy machine a live server may take seconds to answer, and this test is about content
    metrics = ("heat_diff", "road_combined")
    evaluator = explain_with_tracking(tmp_path / "xai", mlflow_server, "served", metrics=metrics, server_timeout=60.0)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("xai_test")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'served'")
    assert run.info.status == "FINISHED"
    for method in METHODS:
        for metric in ("heat_diff", "road_combined"):
            name = f"{metric}_{method}"
            assert run.data.metrics[name] == pytest.approx(evaluator.state.metrics[name], rel=1e-6, abs=1e-9)
        # ROAD curves are logged with the percentile as step
        history = client.get_metric_history(run.info.run_id, f"road_combined_{method}_morf")
        assert sorted(point.step for point in history) == [20, 80]
    assert run.data.params["xai_methods"] == str(list(METHODS))
    assert run.data.params["road_percentiles"] == "[20, 80]"
    top = {item.path for item in client.list_artifacts(run.info.run_id, "xai")}
    assert {"xai/cases.csv", "xai/descriptions.csv", "xai/summary.csv", "xai/summary.md", "xai/metrics.png"} <= top
    assert "xai/c0" in top
    case_files = {item.path for item in client.list_artifacts(run.info.run_id, "xai/c0")}
    assert {"xai/c0/c0_gradcam.nii.gz", "xai/c0/c0_gradcam.png", "xai/c0/c0_description.md"} <= case_files


def test_unreachable_server_warns_and_the_run_finishes(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    assert tracking_server_error(closed, timeout=1.0) is not None
    output_dir = tmp_path / "xai"
    with pytest.warns(UserWarning, match=f"all results are on disk in {output_dir.resolve()}"):
        evaluator = explain_with_tracking(output_dir, closed, run_name="offline")
    assert "heat_diff_gradcam" in evaluator.state.metrics
    assert (output_dir / "summary.csv").exists() and (output_dir / "c1" / "c1_layercam.nii.gz").exists()


def test_embedded_sqlite_default(tmp_path):
    output_dir = tmp_path / "xai"
    explain_with_tracking(output_dir, tracking_uri=None, run_name="embedded")
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("xai_test").experiment_id])
    assert "heat_diff_layercam" in run.data.metrics
    # the tracking folder itself is not logged as an artifact of the run it stores
    assert "xai/mlflow" not in {item.path for item in client.list_artifacts(run.info.run_id, "xai")}


def test_the_environment_variable_names_the_store_as_in_monai(tmp_path, monkeypatch):
    """``MLFLOW_TRACKING_URI`` wins over the argument (MONAI's ``MLFlowHandler`` rule): the run goes there, no
    embedded store is made, and a warning names the store actually tried."""
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    output_dir = tmp_path / "xai"
    explain_with_tracking(output_dir, tracking_uri=None, run_name="from_environment")
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("xai_test").experiment_id])
    assert run.info.run_name == "from_environment" and "heat_diff_layercam" in run.data.metrics
    assert not (output_dir / "mlflow").exists()

    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    with pytest.warns(UserWarning, match=f"MLflow tracking at {closed} is off"):
        explain_with_tracking(tmp_path / "xai2", f"sqlite:///{tmp_path / 'argument.db'}", run_name="offline")
    assert not (tmp_path / "argument.db").exists()
