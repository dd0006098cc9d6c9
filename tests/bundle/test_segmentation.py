"""Dice per class and per union of classes, as MONAI ``MeanDice`` handlers on an evaluator's one-hot output."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.metrics import compute_dice

from monai_xai.apps import class_dice_metrics


def _one_hot(labels: torch.Tensor, classes: int = 4) -> torch.Tensor:
    """(1, *spatial) label map -> (classes, *spatial) one-hot."""
    return torch.nn.functional.one_hot(labels[0].long(), classes).movedim(-1, 0).float()


def test_each_class_and_region_gets_its_own_dice() -> None:
    torch.manual_seed(0)
    cases = []
    for _ in range(3):
        label = torch.randint(0, 4, (1, 6, 6, 4))
        pred = torch.where(torch.rand(1, 6, 6, 4) < 0.7, label, torch.randint(0, 4, (1, 6, 6, 4)))
        cases.append({"pred": _one_hot(pred), "label": _one_hot(label)})
    cases[2]["label"][3] = 0  # no cyst in the last case's ground truth: left out of the cyst mean
    cases[2]["label"][0] += cases[2]["label"][3]
    metrics = class_dice_metrics(["background", "kidney", "tumour", "cyst"], {"masses": [2, 3]})
    assert list(metrics) == ["val_dice_kidney", "val_dice_tumour", "val_dice_cyst", "val_dice_masses"]

    engine = Engine(lambda engine, batch: batch)
    for name, handler in metrics.items():
        handler.attach(engine, name)
    state = engine.run([cases], max_epochs=1)

    def expected(channels: list[int], used: list[int]) -> float:
        values = [
            compute_dice(
                cases[i]["pred"][channels].sum(0, keepdim=True)[None].clamp(max=1),
                cases[i]["label"][channels].sum(0, keepdim=True)[None].clamp(max=1),
            )
            for i in used
        ]
        return float(torch.stack(values).mean())

    assert state.metrics["val_dice_kidney"] == pytest.approx(expected([1], [0, 1, 2]))
    assert state.metrics["val_dice_cyst"] == pytest.approx(expected([3], [0, 1]))
    assert state.metrics["val_dice_masses"] == pytest.approx(expected([2, 3], [0, 1, 2]))


def test_regions_must_be_new_names_of_foreground_channels() -> None:
    with pytest.raises(ValueError, match="background and at least one class"):
        class_dice_metrics(["background"])
    with pytest.raises(ValueError, match=r"region 'tumour' must be a new name"):
        class_dice_metrics(["background", "kidney", "tumour"], {"tumour": [2]})
    with pytest.raises(ValueError, match=r"foreground channels in 1..2, got \[0, 1\]"):
        class_dice_metrics(["background", "kidney", "tumour"], {"all": [0, 1]})
