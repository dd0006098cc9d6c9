"""Shared test set-up: deterministic, and small enough for a 2-core CPU."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
