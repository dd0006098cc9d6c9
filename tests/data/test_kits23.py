"""The KiTS23 reader on a tiny copy in the published layout, and the same reader on an MSD-style dataset.json copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_xai.cli import datalist as datalist_command
from monai_xai.data import (
    KITS23_CLASSES,
    foreground_hu_range,
    kits23_datalist,
    msd_class_names,
    msd_datalist,
)
from tests.helpers.fixture_kits23 import KITS_AFFINE, KITS_SHAPE, write_kits23, write_msd_copy


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kits23(tmp_path_factory.mktemp("kits23"))


def _cases(entries: list[dict]) -> list[str]:
    return [Path(entry["image"]).parent.name for entry in entries]


def test_cases_are_split_per_case_and_fixed_by_the_seed(kits: Path) -> None:
    datalist = kits23_datalist(kits)
    assert {name: len(entries) for name, entries in datalist.items()} == {"training": 4, "validation": 1, "test": 1}
    every = [case for entries in datalist.values() for case in _cases(entries)]
    assert sorted(every) == [f"case_{index:05d}" for index in range(6)]  # each case in exactly one list
    for entries in datalist.values():
        assert _cases(entries) == sorted(_cases(entries))
        for entry in entries:
            assert set(entry) == {"image", "label"} and Path(entry["image"]).is_absolute()
            assert Path(entry["image"]).name == "imaging.nii.gz"
            assert Path(entry["label"]) == Path(entry["image"]).parent / "segmentation.nii.gz"
    assert kits23_datalist(kits) == datalist
    assert any(kits23_datalist(kits, seed=seed) != datalist for seed in range(1, 6))


def test_the_fixture_is_stored_as_kits23_stores_it(kits: Path) -> None:
    image = nib.load(kits / "case_00000" / "imaging.nii.gz")
    label = nib.load(kits / "case_00000" / "segmentation.nii.gz")
    assert image.shape == label.shape == KITS_SHAPE and np.allclose(image.affine, KITS_AFFINE)
    assert nib.aff2axcodes(image.affine) == ("I", "P", "L")  # slices first, not RAS: the bundle must reorient
    values = np.asarray(label.dataobj)
    assert set(np.unique(values)) == {0, 1, 2, 3}
    hu = np.asarray(image.dataobj)
    assert hu.min() == -1000 and 120 < np.median(hu[values == 1]) < 200 and np.median(hu[values == 3]) < 30


def test_test_fraction_zero_and_fractions_that_leave_a_list_empty(kits: Path) -> None:
    datalist = kits23_datalist(kits, validation_fraction=0.25, test_fraction=0.0)
    assert datalist["test"] == [] and len(datalist["training"]) + len(datalist["validation"]) == 6
    with pytest.raises(ValueError, match="leave validation empty"):
        kits23_datalist(kits, validation_fraction=0.01, test_fraction=0.01)
    with pytest.raises(ValueError, match="must leave cases for training"):
        kits23_datalist(kits, validation_fraction=0.5, test_fraction=0.5)


def test_layout_errors_say_what_is_missing(kits: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kits23_datalist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no case_XXXXX folders .* pass .*dataset"):
        kits23_datalist(kits.parent)  # the repository root instead of its dataset/ folder
    copy = shutil.copytree(kits, tmp_path / "dataset")
    (copy / "case_00003" / "imaging.nii.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 of 6 cases .* no imaging.nii.gz .*case_00003.*kits23_download_data"
    ):
        kits23_datalist(copy)
    shutil.rmtree(copy / "case_00003")
    (copy / "case_00004" / "segmentation.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no segmentation.nii.gz .*case_00004"):
        kits23_datalist(copy)


def test_an_msd_dataset_json_layout_is_read_by_the_same_reader(kits: Path, tmp_path: Path) -> None:
    task = write_msd_copy(kits, tmp_path / "Task99_Kits")
    datalist = kits23_datalist(task)
    assert datalist == msd_datalist(task)
    entries = [entry for listed in datalist.values() for entry in listed]
    # the five labelled cases, absolute; neither the unlabelled imagesTs/ case nor the macOS ._ file
    assert sorted(Path(entry["image"]).name for entry in entries) == [f"kits_{index:03d}.nii.gz" for index in range(5)]
    for entry in entries:
        assert Path(entry["image"]).parent == task / "imagesTr" and Path(entry["label"]).parent == task / "labelsTr"
    assert msd_class_names(task) == KITS23_CLASSES

    content = json.loads((task / "dataset.json").read_text())
    content["training"][1]["label"] = "./labelsTr/missing.nii.gz"
    (task / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match=r"1 files listed in .*dataset.json do not exist .*missing.nii.gz"):
        kits23_datalist(task)
    (task / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "2": "spleen"}, "training": []}))
    with pytest.raises(ValueError, match="no 'training' list"):
        kits23_datalist(task)
    (task / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "2": "spleen"}, "training": [{}]}))
    with pytest.raises(ValueError, match="label value 0..n-1"):
        msd_class_names(task)


def test_foreground_hu_range_is_the_percentiles_inside_the_labels(kits: Path) -> None:
    entries = kits23_datalist(kits)["training"]
    pooled = []
    for entry in entries:
        image = np.asarray(nib.load(entry["image"]).dataobj, dtype=np.float32)
        pooled.append(image[np.asarray(nib.load(entry["label"]).dataobj) > 0])
    expected = tuple(np.percentile(np.concatenate(pooled), [0.5, 99.5]))
    assert foreground_hu_range(entries) == pytest.approx(expected)
    low, high = foreground_hu_range(entries, voxels_per_case=200)  # a sample of each case: close, not equal
    assert abs(low - expected[0]) < 15 and abs(high - expected[1]) < 15
    with pytest.raises(ValueError, match="percentiles"):
        foreground_hu_range(entries, percentiles=(99.5, 0.5))


def test_datalist_command_writes_the_kits23_datalist(kits: Path, tmp_path: Path) -> None:
    out = tmp_path / "lists" / "kits23.json"
    line = datalist_command("kits23", str(kits), str(out), seed=1, test_fraction=0.0)
    assert line == f"wrote {out}: training 5, validation 1, test 0 cases"
    assert json.loads(out.read_text()) == kits23_datalist(kits, seed=1, test_fraction=0.0)
