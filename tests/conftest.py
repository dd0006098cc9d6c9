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


# Environment variables that others set for themselves: pytest's own, and blosc2's (imported with nnU-Net), which
# names its compiler's library on first import.
_OWNED_BY_OTHERS = frozenset({"PYTEST_CURRENT_TEST", "ME_DSL_JIT_LIBTCC_PATH"})
_ENVIRONMENT = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[_ENVIRONMENT] = dict(os.environ)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """A test whose code (or fixtures, once ``monkeypatch`` has restored its own changes) leaves the process
    environment changed fails here: every later test and every program they start would inherit the change (a study
    once set ``MLFLOW_TRACKING_URI`` this way, and later runs tracked into its store)."""
    result = yield
    before, after = item.stash[_ENVIRONMENT], dict(os.environ)
    keys = (before.keys() | after.keys()) - _OWNED_BY_OTHERS
    changed = sorted(key for key in keys if before.get(key) != after.get(key))
    assert not changed, f"the test left the environment variables {changed} changed: library code must not set them"
    return result
