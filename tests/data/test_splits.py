"""Stratified splits: class shares kept per list, groups never split, the same for a seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from monai_xai.data.splits import stratified_split, write_datalist


def _items() -> list[dict]:
    # 50 of class 0, 30 of class 1, 20 of class 2; lesions of 2 images each
    labels = [0] * 50 + [1] * 30 + [2] * 20
    return [{"image": f"{i}.jpg", "label": label, "lesion": f"L{i // 2}"} for i, label in enumerate(labels)]


def test_each_list_keeps_the_class_shares_and_every_entry_once() -> None:
    split = stratified_split(_items(), {"training": 0.8, "validation": 0.2}, seed=3)
    assert [Counter(e["label"] for e in split[name]) for name in ("training", "validation")] == [
        Counter({0: 40, 1: 24, 2: 16}),
        Counter({0: 10, 1: 6, 2: 4}),
    ]
    images = [e["image"] for entries in split.values() for e in entries]
    assert sorted(images) == sorted(e["image"] for e in _items())


def test_the_seed_fixes_the_split_and_groups_stay_together() -> None:
    fractions = {"training": 0.7, "validation": 0.1, "test": 0.2}
    first = stratified_split(_items(), fractions, seed=1, group_key="lesion")
    assert first == stratified_split(_items(), fractions, seed=1, group_key="lesion")
    assert first != stratified_split(_items(), fractions, seed=2, group_key="lesion")
    lists = {e["lesion"]: name for name, entries in first.items() for e in entries}
    for name, entries in first.items():
        assert all(lists[e["lesion"]] == name for e in entries)  # no lesion in two lists


def test_bad_fractions_and_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(_items(), {"training": 0.0})
    with pytest.raises(ValueError, match=r"entries \[1\] have no 'label'"):
        stratified_split([{"label": 0}, {"image": "x"}], {"training": 1.0})
    path = write_datalist({"training": [{"image": "a.jpg", "label": 1}]}, tmp_path / "sub" / "datalist.json")
    assert json.loads(path.read_text()) == {"training": [{"image": "a.jpg", "label": 1}]}
