"""Absurd sizes are refused before any work, with their estimate, the cap and how to raise it
(:mod:`monai_xai.budgets`); metric arguments that cannot mean anything (NaN noise, a blur of sigma <= 0, a temperature
no data can fit) are refused naming the argument, what it got and what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_xai import budgets
from monai_xai.budgets import BudgetExceeded
from monai_xai.cams.attributions import AttributionBudgetExceeded
from tests.helpers.region_nets import RegionLinearClassifier


class CountingNetwork(nn.Module):
    """Counts its forward passes: a refusal "before any work" leaves the count at zero."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.network(images)


def _classifier(size: int = 4) -> CountingNetwork:
    return CountingNetwork(RegionLinearClassifier(torch.ones(1, size, size)))


# --- the budgets themselves


def test_a_cap_is_raised_by_its_environment_variable_and_a_bad_value_is_named(monkeypatch):
    assert budgets.CURVE_STEPS.cap() == budgets.CURVE_STEPS.default == 1000
    monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", "5000")
    assert budgets.CURVE_STEPS.cap() == 5000
    budgets.check_curve_steps(5000)
    monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", "inf")
    budgets.check_curve_steps(10**9)
    for bad in ("many", "0", "-3", "nan"):
        monkeypatch.setenv("MONAI_XAI_MAX_CURVE_STEPS", bad)
        with pytest.raises(ValueError, match=rf"MONAI_XAI_MAX_CURVE_STEPS='{bad}' must be a number > 0"):
            budgets.check_curve_steps(10)


def test_the_attribution_budget_is_one_of_the_family():
    assert issubclass(AttributionBudgetExceeded, BudgetExceeded) and issubclass(BudgetExceeded, ValueError)
