"""Kaggle Brain Tumor MRI datalists from a tiny copy of the published layout, real JPEGs written by PIL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, load_decathlon_datalist
from monai.transforms import LoadImaged
from PIL import Image

from monai_xai.data.brain_tumor_mri import (
    BRAIN_TUMOR_CLASSES,
    brain_tumor_mri_datalist,
    write_brain_tumor_mri_datalist,
)
from monai_xai.data.class_folders import ToRGB, ToRGBd, list_class_folders

# (split, class, file name, PIL mode, (width, height)); the data set mixes L and RGB JPEGs of different sizes
_FILES = [
    ("Training", "glioma", "Tr-gl_0010.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0011.jpg", "RGB", (40, 32)),
    ("Training", "glioma", "Tr-gl_0012.JPG", "L", (36, 30)),
    ("Training", "glioma", "Tr-gl_0013.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0014.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0015.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0016.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0017.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0018.jpg", "L", (40, 32)),
    ("Training", "glioma", "Tr-gl_0019.jpg", "L", (40, 32)),
    ("Training", "meningioma", "Tr-me_0010.jpg", "RGB", (40, 32)),
    ("Training", "meningioma", "Tr-me_0011.jpg", "L", (40, 32)),
    ("Training", "meningioma", "Tr-me_0012.jpg", "L", (40, 32)),
    ("Training", "meningioma", "Tr-me_0013.jpg", "L", (40, 32)),
    ("Training", "meningioma", "Tr-me_0014.jpg", "L", (40, 32)),
    ("Training", "notumor", "Tr-no_0010.jpg", "L", (32, 40)),
    ("Training", "notumor", "Tr-no_0011.jpg", "L", (40, 32)),
    ("Training", "notumor", "Tr-no_0012.jpg", "L", (40, 32)),
    ("Training", "notumor", "Tr-no_0013.jpg", "RGB", (40, 32)),
    ("Training", "notumor", "Tr-no_0014.jpg", "L", (40, 32)),
    ("Training", "pituitary", "Tr-pi_0010.jpg", "L", (40, 32)),
    ("Training", "pituitary", "Tr-pi_0011.jpg", "L", (40, 32)),
    ("Training", "pituitary", "Tr-pi_0012.jpg", "L", (40, 32)),
    ("Training", "pituitary", "Tr-pi_0013.jpg", "L", (40, 32)),
    ("Training", "pituitary", "Tr-pi_0014.JPG", "RGB", (40, 32)),
    ("Testing", "glioma", "Te-gl_0010.jpg", "L", (40, 32)),
    ("Testing", "meningioma", "Te-me_0010.jpg", "RGB", (40, 32)),
    ("Testing", "meningioma", "Te-me_0011.jpg", "L", (40, 32)),
    ("Testing", "notumor", "Te-no_0010.jpg", "L", (40, 32)),
    ("Testing", "pituitary", "Te-pi_0010.jpg", "L", (40, 32)),
]


def _jpeg(path: Path, mode: str, size: tuple[int, int], seed: int = 0) -> None:
    width, height = size
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def _dataset(root: Path) -> Path:
    for index, (split, name, file_name, mode, size) in enumerate(_FILES):
        _jpeg(root / split / name / file_name, mode, size, seed=index)
    # what macOS and archives add: none of it is data
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Training" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Training" / "glioma" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Training" / "glioma" / "._Tr-gl_0010.jpg").write_bytes(b"\0\5\26\7 resource fork")
    (root / "Training" / "glioma" / "Thumbs.db").write_bytes(b"not an image")
    (root / "Training" / "__MACOSX" / "glioma").mkdir(parents=True)
    return root


def _expected(split: str, root: Path) -> list[dict]:
    return [
        {"image": str(root / s / name / file_name), "label": BRAIN_TUMOR_CLASSES.index(name)}
        for s, name, file_name, _, _ in _FILES
        if s == split
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("brain") / "archive")


def test_classes_and_test_list_are_as_published(root: Path) -> None:
    assert BRAIN_TUMOR_CLASSES == ("glioma", "meningioma", "notumor", "pituitary")
    datalist = brain_tumor_mri_datalist(root)
    assert list(datalist) == ["training", "validation", "test"]
    assert datalist["test"] == [
        {"image": str(root / "Testing/glioma/Te-gl_0010.jpg"), "label": 0},
        {"image": str(root / "Testing/meningioma/Te-me_0010.jpg"), "label": 1},
        {"image": str(root / "Testing/meningioma/Te-me_0011.jpg"), "label": 1},
        {"image": str(root / "Testing/notumor/Te-no_0010.jpg"), "label": 2},
        {"image": str(root / "Testing/pituitary/Te-pi_0010.jpg"), "label": 3},
    ]
    assert all(Path(entry["image"]).is_absolute() for entries in datalist.values() for entry in entries)


def test_training_and_validation_are_a_stratified_split_of_training(root: Path) -> None:
    datalist = brain_tumor_mri_datalist(root, validation_fraction=0.2, seed=0)
    expected = _expected("Training", root)
    together = datalist["training"] + datalist["validation"]
    assert sorted(together, key=lambda e: e["image"]) == sorted(expected, key=lambda e: e["image"])
    assert Counter(e["label"] for e in datalist["validation"]) == Counter({0: 2, 1: 1, 2: 1, 3: 1})
    assert Counter(e["label"] for e in datalist["training"]) == Counter({0: 8, 1: 4, 2: 4, 3: 4})
    for entries in (datalist["training"], datalist["validation"]):  # published order kept within each list
        assert entries == [e for e in expected if e in entries]
    # .JPG counts, .DS_Store / ._ forks / Thumbs.db / __MACOSX do not
    assert {"image": str(root / "Training/glioma/Tr-gl_0012.JPG"), "label": 0} in together

    larger = brain_tumor_mri_datalist(root, validation_fraction=0.4, seed=0)
    assert Counter(e["label"] for e in larger["validation"]) == Counter({0: 4, 1: 2, 2: 2, 3: 2})


def test_the_seed_fixes_the_split(root: Path) -> None:
    first = brain_tumor_mri_datalist(root, seed=1)
    assert first == brain_tumor_mri_datalist(root, seed=1)
    others = [brain_tumor_mri_datalist(root, seed=seed)["validation"] for seed in (2, 3, 4)]
    assert any(validation != first["validation"] for validation in others)
    assert all(brain_tumor_mri_datalist(root, seed=seed)["test"] == first["test"] for seed in (2, 3))


def test_write_round_trips_through_monai_and_summarises(root: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "lists" / "brain_tumor_mri.json"
    summary = write_brain_tumor_mri_datalist(str(root), str(out_file), validation_fraction=0.2, seed=0)
    assert summary == (
        f"wrote {out_file}: training 20 (glioma 8, meningioma 4, notumor 4, pituitary 4); "
        "validation 5 (glioma 2, meningioma 1, notumor 1, pituitary 1); "
        "test 5 (glioma 1, meningioma 2, notumor 1, pituitary 1)"
    )
    assert "\n" not in summary
    datalist = brain_tumor_mri_datalist(root)
    assert json.loads(out_file.read_text()) == datalist
    for key in ("training", "validation", "test"):
        assert load_decathlon_datalist(out_file, data_list_key=key) == datalist[key]


def test_missing_root_and_split_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root .*nowhere does not exist.*published layout is <root>/Training"):
        brain_tumor_mri_datalist(tmp_path / "nowhere")
    (tmp_path / "file.zip").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"file\.zip is a file, not a folder.*unpack"):
        brain_tumor_mri_datalist(tmp_path / "file.zip")
    root = _dataset(tmp_path / "archive")
    shutil.rmtree(root / "Testing")
    with pytest.raises(FileNotFoundError, match=r"split folder .*archive/Testing is missing.*published layout"):
        brain_tumor_mri_datalist(root)


def test_missing_empty_and_unknown_class_folders_are_named(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "archive")
    shutil.rmtree(root / "Testing" / "pituitary")
    with pytest.raises(FileNotFoundError, match=r"class folder .*Testing/pituitary is missing.*unpack the original"):
        brain_tumor_mri_datalist(root)

    root = _dataset(tmp_path / "empty")
    for path in (root / "Testing" / "notumor").iterdir():
        path.unlink()
    (root / "Testing" / "notumor" / ".DS_Store").write_bytes(b"\0")
    (root / "Testing" / "notumor" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"class folder .*Testing/notumor holds no image.*\.jpg, \.jpeg, \.png"):
        brain_tumor_mri_datalist(root)

    root = _dataset(tmp_path / "extra")
    _jpeg(root / "Training" / "no_tumor" / "x.jpg", "L", (40, 32))
    with pytest.raises(ValueError, match=r"Training holds folders \['no_tumor'\] that are not classes.*'notumor'"):
        brain_tumor_mri_datalist(root)


def test_bad_validation_fractions_are_refused(root: Path) -> None:
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"validation_fraction must be in \(0, 1\)"):
            brain_tumor_mri_datalist(root, validation_fraction=fraction)
    with pytest.raises(ValueError, match=r"validation_fraction=0.01 leaves validation empty with 25 training images"):
        brain_tumor_mri_datalist(root, validation_fraction=0.01)


def test_png_in_any_case_is_an_image(tmp_path: Path) -> None:
    for file_name in ("b.PNG", "a.png", "c.JPEG", "d.gif"):
        _jpeg(tmp_path / "split" / "one" / file_name, "L", (8, 8))
    entries = list_class_folders(tmp_path / "split", ["one"], "test set", "<root>/split/one/*")
    assert [Path(entry["image"]).name for entry in entries] == ["a.png", "b.PNG", "c.JPEG"]


def test_loaded_images_become_three_channels(root: Path) -> None:
    load = LoadImaged(keys="image", ensure_channel_first=True)
    grey_path = root / "Training/glioma/Tr-gl_0012.JPG"  # grayscale, 36 wide, 30 high
    rgb_path = root / "Training/glioma/Tr-gl_0011.jpg"  # RGB, 40 wide, 32 high
    grey_loaded = load({"image": str(grey_path)})["image"]
    rgb_loaded = load({"image": str(rgb_path)})["image"]
    assert grey_loaded.shape == (1, 36, 30) and rgb_loaded.shape == (3, 40, 32)  # PILReader: (C, W, H)

    grey = ToRGBd(keys="image")({"image": grey_loaded, "label": 0})["image"]
    rgb = ToRGBd(keys="image")({"image": rgb_loaded})["image"]
    assert grey.shape == (3, 36, 30) and rgb.shape == (3, 40, 32)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    assert np.array_equal(grey[0].numpy(), np.asarray(Image.open(grey_path)).T)  # the pixels, (W, H)
    assert torch.equal(rgb, rgb_loaded)
    assert isinstance(grey, MetaTensor) and grey.meta["filename_or_obj"] == str(grey_path)


def test_to_rgb_channel_rules() -> None:
    image = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    assert np.array_equal(ToRGB()(image), np.repeat(image[:1], 3, axis=0))  # grey + alpha
    rgba = torch.arange(4 * 4 * 5).reshape(4, 4, 5)
    assert torch.equal(ToRGB()(rgba), rgba[:3])
    with pytest.raises(ValueError, match=r"1, 2, 3 or 4 channels, got shape \(5, 4, 5\)"):
        ToRGB()(torch.zeros(5, 4, 5))


def test_monai_xai_datalist_command_writes_the_same_lists(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "brain.json"
    result = subprocess.run(
        [sys.executable, "-m", "monai_xai.cli", "datalist", "brain_tumor_mri", str(root), str(out), "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out}" in result.stdout
    assert json.loads(out.read_text()) == brain_tumor_mri_datalist(root, seed=3)
    unknown = subprocess.run(
        [sys.executable, "-m", "monai_xai.cli", "datalist", "brain_mri", str(root), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode != 0 and "unknown data set 'brain_mri'" in unknown.stderr
