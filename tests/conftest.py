"""Shared test set-up: deterministic, single-threaded, small enough for a 2-core CPU."""

import pytest
import torch

# One thread: tiny test networks gain nothing from more, and oversubscribed threads are 10-100x slower under load.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
