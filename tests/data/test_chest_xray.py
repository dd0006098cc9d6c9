"""Kermany chest X-ray datalists from a tiny copy of the Kaggle archive's layout, real JPEGs written by PIL."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, LoadImaged, Resized
from PIL import Image

from monai_xai.data.chest_xray import CHEST_XRAY_CLASSES, chest_xray_datalist, write_chest_xray_datalist
from monai_xai.data.class_folders import ToRGBd

# (split, class, file name, PIL mode); mostly grayscale, a few RGB, some upper-case extensions
_FILES = [
    ("train", "NORMAL", "IM-0115-0001.jpeg", "L"),
    ("train", "NORMAL", "IM-0117-0001.jpeg", "RGB"),
    ("train", "NORMAL", "NORMAL2-IM-0007-0001.jpeg", "L"),
    ("train", "NORMAL", "NORMAL2-IM-1427-0001.JPEG", "L"),
    ("train", "PNEUMONIA", "person10_virus_35.jpeg", "L"),
    ("train", "PNEUMONIA", "person1_bacteria_1.jpeg", "L"),
    ("train", "PNEUMONIA", "person1_bacteria_2.jpeg", "RGB"),
    ("train", "PNEUMONIA", "person1_virus_6.jpeg", "L"),
    ("train", "PNEUMONIA", "person2_bacteria_3.jpeg", "L"),
    ("train", "PNEUMONIA", "person3_virus_15.JPEG", "L"),
    ("val", "NORMAL", "NORMAL2-IM-1427-0001.jpeg", "L"),
    ("val", "NORMAL", "NORMAL2-IM-1430-0001.jpeg", "L"),
    ("val", "PNEUMONIA", "person1946_bacteria_4874.jpeg", "L"),
    ("val", "PNEUMONIA", "person1946_bacteria_4875.jpeg", "L"),
    ("test", "NORMAL", "IM-0001-0001.jpeg", "L"),
    ("test", "NORMAL", "NORMAL2-IM-0086-0001.JPEG", "RGB"),
    ("test", "PNEUMONIA", "person100_bacteria_475.jpeg", "L"),
    ("test", "PNEUMONIA", "person101_bacteria_484.jpeg", "L"),
    ("test", "PNEUMONIA", "person1_virus_11.jpeg", "L"),
]


def _jpeg(path: Path, mode: str, seed: int = 0, size: tuple[int, int] = (40, 32)) -> None:
    width, height = size
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def _splits(folder: Path, files: list[tuple[str, str, str, str]]) -> None:
    for index, (split, name, file_name, mode) in enumerate(files):
        _jpeg(folder / split / name / file_name, mode, seed=index)
    for path in (folder / "train", folder / "train" / "NORMAL", folder / "val" / "PNEUMONIA"):
        (path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def _archive(parent: Path) -> Path:
    """The unpacked Kaggle archive: ``parent/chest_xray/`` with the splits, their duplicate and ``__MACOSX``."""
    folder = parent / "chest_xray"
    _splits(folder, _FILES)
    # the nested duplicate, abridged to one image per split and class
    _splits(folder / "chest_xray", [_FILES[index] for index in (0, 4, 10, 12, 14, 16)])
    macosx = folder / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    macosx.mkdir(parents=True)
    (macosx / "._IM-0115-0001.jpeg").write_bytes(b"\0\5\26\7 resource fork")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return parent


def _entries(folder: Path, split: str) -> list[dict]:
    return [
        {"image": str(folder / s / name / file_name), "label": CHEST_XRAY_CLASSES.index(name)}
        for s, name, file_name, _ in _FILES
        if s == split
    ]


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _archive(tmp_path_factory.mktemp("kermany") / "archive")


def test_published_lists_and_labels(parent: Path) -> None:
    assert CHEST_XRAY_CLASSES == ("NORMAL", "PNEUMONIA")
    folder = parent / "chest_xray"
    datalist = chest_xray_datalist(folder)
    assert list(datalist) == ["training", "validation", "test"]
    assert datalist["validation"] == [
        {"image": str(folder / "val/NORMAL/NORMAL2-IM-1427-0001.jpeg"), "label": 0},
        {"image": str(folder / "val/NORMAL/NORMAL2-IM-1430-0001.jpeg"), "label": 0},
        {"image": str(folder / "val/PNEUMONIA/person1946_bacteria_4874.jpeg"), "label": 1},
        {"image": str(folder / "val/PNEUMONIA/person1946_bacteria_4875.jpeg"), "label": 1},
    ]
    assert datalist["test"] == [
        {"image": str(folder / "test/NORMAL/IM-0001-0001.jpeg"), "label": 0},
        {"image": str(folder / "test/NORMAL/NORMAL2-IM-0086-0001.JPEG"), "label": 0},
        {"image": str(folder / "test/PNEUMONIA/person100_bacteria_475.jpeg"), "label": 1},
        {"image": str(folder / "test/PNEUMONIA/person101_bacteria_484.jpeg"), "label": 1},
        {"image": str(folder / "test/PNEUMONIA/person1_virus_11.jpeg"), "label": 1},
    ]
    # file names sorted as strings: person10_ before person1_; .JPEG counts, .DS_Store does not
    assert [Path(e["image"]).name for e in datalist["training"]] == [
        "IM-0115-0001.jpeg",
        "IM-0117-0001.jpeg",
        "NORMAL2-IM-0007-0001.jpeg",
        "NORMAL2-IM-1427-0001.JPEG",
        "person10_virus_35.jpeg",
        "person1_bacteria_1.jpeg",
        "person1_bacteria_2.jpeg",
        "person1_virus_6.jpeg",
        "person2_bacteria_3.jpeg",
        "person3_virus_15.JPEG",
    ]
    assert datalist["training"] == _entries(folder, "train")
    assert all("chest_xray/chest_xray" not in e["image"] for entries in datalist.values() for e in entries)


def test_the_parent_of_chest_xray_gives_the_same_lists(parent: Path) -> None:
    assert chest_xray_datalist(parent) == chest_xray_datalist(parent / "chest_xray")


def test_a_validation_fraction_resplits_train_and_val_stratified(parent: Path) -> None:
    folder = parent / "chest_xray"
    datalist = chest_xray_datalist(parent, validation_fraction=0.5, seed=0)
    pooled = _entries(folder, "train") + _entries(folder, "val")
    together = datalist["training"] + datalist["validation"]
    assert sorted(together, key=lambda e: e["image"]) == sorted(pooled, key=lambda e: e["image"])
    assert Counter(e["label"] for e in datalist["validation"]) == Counter({0: 3, 1: 4})
    assert Counter(e["label"] for e in datalist["training"]) == Counter({0: 3, 1: 4})
    assert datalist["test"] == _entries(folder, "test")
    quarter = chest_xray_datalist(parent, validation_fraction=0.25, seed=0)
    assert Counter(e["label"] for e in quarter["validation"]) == Counter({0: 2, 1: 2})

    assert datalist == chest_xray_datalist(parent, validation_fraction=0.5, seed=0)
    others = [chest_xray_datalist(parent, validation_fraction=0.5, seed=seed)["validation"] for seed in (1, 2, 3)]
    assert any(validation != datalist["validation"] for validation in others)
    # without a fraction the seed changes nothing: the published val/ is kept
    assert chest_xray_datalist(parent, seed=1) == chest_xray_datalist(parent, seed=2)


def test_write_round_trips_through_monai_and_summarises(parent: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "chest_xray.json"
    summary = write_chest_xray_datalist(str(parent), str(out_file))
    assert summary == (
        f"wrote {out_file}: training 10 (NORMAL 4, PNEUMONIA 6); validation 4 (NORMAL 2, PNEUMONIA 2); "
        "test 5 (NORMAL 2, PNEUMONIA 3)"
    )
    datalist = chest_xray_datalist(parent)
    assert json.loads(out_file.read_text()) == datalist
    for key in ("training", "validation", "test"):
        assert load_decathlon_datalist(out_file, data_list_key=key) == datalist[key]
    summary = write_chest_xray_datalist(str(parent), str(out_file), validation_fraction=0.5, seed=0)
    assert "training 7 (NORMAL 3, PNEUMONIA 4); validation 7 (NORMAL 3, PNEUMONIA 4)" in summary


def test_missing_root_and_split_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root .*nowhere does not exist.*published layout is <root>/\{train"):
        chest_xray_datalist(tmp_path / "nowhere")
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither .*unrelated nor .*unrelated/chest_xray holds the split"):
        chest_xray_datalist(tmp_path / "unrelated")
    parent = _archive(tmp_path / "archive")
    shutil.rmtree(parent / "chest_xray" / "val")
    with pytest.raises(FileNotFoundError, match=r"split folder .*chest_xray/val is missing.*published layout"):
        chest_xray_datalist(parent)


def test_missing_empty_and_unknown_class_folders_are_named(tmp_path: Path) -> None:
    folder = _archive(tmp_path / "missing") / "chest_xray"
    shutil.rmtree(folder / "test" / "PNEUMONIA")
    with pytest.raises(FileNotFoundError, match=r"class folder .*test/PNEUMONIA is missing.*unpack the original"):
        chest_xray_datalist(folder)

    folder = _archive(tmp_path / "empty") / "chest_xray"
    for path in (folder / "val" / "PNEUMONIA").iterdir():
        if path.name != ".DS_Store":
            path.unlink()
    (folder / "val" / "PNEUMONIA" / "list.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match=r"class folder .*val/PNEUMONIA holds no image.*published layout"):
        chest_xray_datalist(folder)

    folder = _archive(tmp_path / "extra") / "chest_xray"
    _jpeg(folder / "train" / "COVID19" / "covid_1.jpeg", "L")
    with pytest.raises(ValueError, match=r"train holds folders \['COVID19'\] that are not classes.*'NORMAL'"):
        chest_xray_datalist(folder)


def test_bad_validation_fractions_are_refused(parent: Path) -> None:
    for fraction in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"validation_fraction must be None \(the published val/\) or in \(0, 1\)"):
            chest_xray_datalist(parent, validation_fraction=fraction)
    with pytest.raises(ValueError, match=r"validation_fraction=0.01 leaves validation empty with 14 train \+ val"):
        chest_xray_datalist(parent, validation_fraction=0.01)


def test_grey_and_rgb_xrays_load_as_three_channels_and_batch(parent: Path) -> None:
    folder = parent / "chest_xray"
    grey_path = folder / "train/NORMAL/NORMAL2-IM-1427-0001.JPEG"
    rgb_path = folder / "train/NORMAL/IM-0117-0001.jpeg"
    load = Compose([LoadImaged(keys="image", ensure_channel_first=True), ToRGBd(keys="image")])
    grey = load({"image": str(grey_path), "label": 0})["image"]
    rgb = load({"image": str(rgb_path), "label": 0})["image"]
    assert grey.shape == rgb.shape == (3, 40, 32)  # (C, W, H) as MONAI's PILReader gives
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert not torch.equal(rgb[0], rgb[1])
    resized = Resized(keys="image", spatial_size=(16, 16))
    batch = torch.stack([resized({"image": image})["image"] for image in (grey, rgb)])
    assert batch.shape == (2, 3, 16, 16)
