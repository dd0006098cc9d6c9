"""Dice per class (and per union of classes) for a segmentation bundle's evaluator, as MONAI ``MeanDice`` handlers.

A bundle lists them among its evaluator's ``additional_metrics``::

    "additional_metrics": "$monai_xai.apps.class_dice_metrics(@class_names, @dice_regions)"

so that ``MetricsSaver`` writes ``val_dice_kidney``, ``val_dice_tumour``, ... to ``metrics.csv`` and the per-case values
to ``val_dice_<name>_raw.csv``. The engine output must hold one-hot ``pred`` and ``label`` per case, (C, *spatial)
(``AsDiscreted(argmax=[True, False], to_onehot=C)`` in the postprocessing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from monai.handlers import MeanDice, from_engine
from monai.utils import CommonKeys

__all__ = ["class_dice_metrics", "channel_union"]


def channel_union(output: Sequence[Mapping[str, Any]], channels: Sequence[int]) -> tuple[list, list]:
    """An evaluator's per-case one-hot ``pred`` and ``label`` reduced to the union of ``channels``.

    Args:
        output: the engine output, one dict per case with ``pred`` and ``label`` of shape (C, *spatial) in {0, 1}.
        channels: class channels whose union is kept, e.g. ``[2]`` (tumour) or ``[2, 3]`` (tumour or cyst).

    Returns:
        (preds, labels): lists of (1, *spatial) masks, as ``MeanDice`` takes them.
    """
    preds, labels = from_engine([CommonKeys.PRED, CommonKeys.LABEL])(output)

    def union(one_hot: torch.Tensor) -> torch.Tensor:
        return one_hot[list(channels)].sum(0, keepdim=True).clamp(max=1)

    return [union(pred) for pred in preds], [union(label) for label in labels]


def class_dice_metrics(
    class_names: Sequence[str], regions: Mapping[str, Sequence[int]] | None = None, prefix: str = "val_dice_"
) -> dict[str, MeanDice]:
    """One ``MeanDice`` handler per foreground class and per region (a union of classes).

    A case whose ground truth lacks the class (or region) gives NaN and is left out of the mean (MONAI's
    ``ignore_empty``), so a class absent from most cases (e.g. KiTS23's cysts) is scored where it exists.

    Args:
        class_names: class names in channel order, background first, e.g. ``["background", "kidney", "tumour",
            "cyst"]``; each class from channel 1 on gets ``<prefix><name>``.
        regions: ``{name: [channels]}`` unions scored as one mask, e.g. KiTS23's hierarchical evaluation classes
            ``{"kidney_and_masses": [1, 2, 3], "masses": [2, 3]}``; each gets ``<prefix><name>``.
        prefix: start of every metric name.

    Returns:
        ``{metric name: MeanDice handler}``, classes first, then regions.

    Raises:
        ValueError: fewer than two classes, a region channel out of range, or a region named like a class.
    """
    if len(class_names) < 2:
        raise ValueError(f"class_names must list background and at least one class, got {list(class_names)}.")
    groups = {name: [channel] for channel, name in enumerate(class_names) if channel > 0}
    for name, channels in (regions or {}).items():
        if name in groups or not channels or not all(0 < int(c) < len(class_names) for c in channels):
            raise ValueError(
                f"region {name!r} must be a new name with foreground channels in 1..{len(class_names) - 1}, got "
                f"{list(channels)} (classes {list(class_names)})."
            )
        groups[name] = [int(channel) for channel in channels]
    return {
        f"{prefix}{name}": MeanDice(include_background=True, output_transform=partial(channel_union, channels=channels))
        for name, channels in groups.items()
    }
