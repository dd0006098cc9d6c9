"""Stratified splits fixed by a seed, and datalists written for MONAI (``load_decathlon_datalist`` layout)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_xai.atomic import atomic_write_text

__all__ = ["datalist_summary", "stratified_split", "write_datalist"]


def stratified_split(
    items: Sequence[Mapping[str, Any]],
    fractions: Mapping[str, float],
    seed: int = 0,
    key: str = "label",
    group_key: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split ``items`` into named lists with the class proportions of ``key`` kept in each, the same for a seed.

    Args:
        items: datalist entries (dicts), each with ``key`` (the class, an int).
        fractions: list name -> share of each class, e.g. ``{"training": 0.8, "validation": 0.2}``; the shares are
            normalised; the last list takes what rounding leaves.
        seed: shuffling seed.
        key: entry key of the class.
        group_key: entries sharing this key's value (e.g. HAM10000's ``lesion_id``: several images of one lesion) go
            to the same list, so that no lesion is in two lists; the group's class is its first entry's.

    Returns:
        ``{name: entries}`` in the order of ``fractions``; within a list, entries keep their input order.

    Raises:
        ValueError: no fractions, a negative or all-zero fraction, or an entry without ``key``.
    """
    if not fractions or any(value < 0 for value in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative shares with a positive sum, got {dict(fractions)}.")
    missing = [index for index, item in enumerate(items) if key not in item]
    if missing:
        raise ValueError(f"entries {missing[:5]} have no {key!r}; a stratified split needs each entry's class.")
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item[group_key] if group_key else index, []).append(index)
    by_class: dict[Any, list[Any]] = {}
    for group, members in groups.items():
        by_class.setdefault(items[members[0]][key], []).append(group)
    names = list(fractions)
    shares = np.array([fractions[name] for name in names], dtype=float)
    shares /= shares.sum()
    rng = np.random.default_rng(seed)
    chosen: dict[str, set[int]] = {name: set() for name in names}
    for label in sorted(by_class, key=repr):
        members = by_class[label]
        order = rng.permutation(len(members))
        bounds = np.round(np.cumsum(shares) * len(members)).astype(int)
        bounds[-1] = len(members)
        start = 0
        for name, stop in zip(names, bounds):
            for position in order[start:stop]:
                chosen[name].update(groups[members[position]])
            start = stop
    return {name: [dict(items[index]) for index in sorted(chosen[name])] for name in names}


def write_datalist(datalist: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Write ``datalist`` as JSON (MONAI's ``load_decathlon_datalist`` reads it; image paths stay as given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({name: list(entries) for name, entries in datalist.items()}, indent=1))
    return path


def datalist_summary(datalist: Mapping[str, Sequence[Mapping[str, Any]]], classes: Sequence[str]) -> str:
    """One line with the number of images of each list, in total and per class.

    E.g. ``"training 8 (glioma 2, meningioma 2, notumor 2, pituitary 2); validation 4 (...); test 4 (...)"``.
    """
    parts = []
    for name, entries in datalist.items():
        counts = Counter(entry["label"] for entry in entries)
        per_class = ", ".join(f"{class_name} {counts[label]}" for label, class_name in enumerate(classes))
        parts.append(f"{name} {len(entries)} ({per_class})")
    return "; ".join(parts)
