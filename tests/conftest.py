"""Shared test set-up: deterministic, single-threaded, small enough for a 2-core CPU."""

import os

import pytest
import torch

# fixtures shared by several test folders
pytest_plugins = ["tests.helpers.label_fixtures"]

# MLflow's usage telemetry, on by default and imported before pytest marks the run as a test, unsets an environment
# variable from a background thread; a client request copying os.environ at that moment fails with
# KeyError('_MLFLOW_TELEMETRY_SESSION_ID') and tracking turns off for the run (seen once in a clean-clone CI run).
# There is no network here for it anyway.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# One thread: tiny test networks gain nothing from more, and oversubscribed threads are 10-100x slower under load.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
