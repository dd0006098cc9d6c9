"""HAM10000 and ISIC 2019 readers on tiny copies of the published layouts (real JPEGs, real 0/255 PNG masks)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_xai.data.skin_lesions import (
    HAM10000_CLASSES,
    ISIC2019_CLASSES,
    class_weights,
    ham10000_datalist,
    isic2019_datalist,
    skin_lesion_datalist,
    write_skin_lesion_datalist,
)

WIDTH, HEIGHT = 8, 6
THREE_LISTS = ("training", "validation", "test")

# (lesion_id, image count, dx): 20 images of 7 classes; lesions of 1 to 3 images
_HAM_LESIONS = [
    ("HAM_0000001", 2, "nv"),
    ("HAM_0000002", 2, "nv"),
    ("HAM_0000003", 3, "nv"),
    ("HAM_0000004", 1, "nv"),
    ("HAM_0000005", 1, "nv"),
    ("HAM_0000006", 2, "mel"),
    ("HAM_0000007", 1, "mel"),
    ("HAM_0000008", 2, "bkl"),
    ("HAM_0000009", 1, "bkl"),
    ("HAM_0000010", 2, "bcc"),
    ("HAM_0000011", 1, "akiec"),
    ("HAM_0000012", 1, "df"),
    ("HAM_0000013", 1, "vasc"),
]
# image -> class, with the one-hot columns of the published ground truth; one "_downsampled" name as published
_ISIC_IMAGES = [
    ("ISIC_0000000", "NV"),
    ("ISIC_0000001", "NV"),
    ("ISIC_0000002", "MEL"),
    ("ISIC_0000003", "NV"),
    ("ISIC_0000004_downsampled", "MEL"),
    ("ISIC_0000005", "NV"),
    ("ISIC_0000006", "MEL"),
    ("ISIC_0000007", "BCC"),
    ("ISIC_0000008", "BCC"),
    ("ISIC_0000009", "AK"),
    ("ISIC_0000010", "AK"),
    ("ISIC_0000011", "BKL"),
    ("ISIC_0000012", "DF"),
    ("ISIC_0000013", "VASC"),
    ("ISIC_0000014", "SCC"),
    ("ISIC_0000015", "SCC"),
]
_ISIC_MASKED = ["ISIC_0000000", "ISIC_0000002", "ISIC_0000004_downsampled", "ISIC_0000007", "ISIC_0000014"]


def _jpeg(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _mask(path: Path) -> None:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[1:4, 2:6] = 255
    Image.fromarray(mask).save(path, format="PNG")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _ham_rows() -> list[list[str]]:
    rows, number = [], 24306
    for lesion_id, count, dx in _HAM_LESIONS:
        for _ in range(count):
            rows.append([lesion_id, f"ISIC_{number:07d}", dx, "histo", "45.0", "male", "back", "vidir_modern"])
            number += 1
    return rows


@pytest.fixture
def ham_root(tmp_path: Path) -> Path:
    """HAM10000 as published on Harvard Dataverse (with its extra ``dataset`` column), images over both parts."""
    root = tmp_path / "HAM10000"
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (root / part).mkdir(parents=True)
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    rows = _ham_rows()
    _write_csv(root / "HAM10000_metadata.csv", header, rows)
    for index, row in enumerate(rows):
        part = "HAM10000_images_part_1" if index % 2 == 0 else "HAM10000_images_part_2"
        _jpeg(root / part / f"{row[1]}.jpg", index)
    return root


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    """ISIC 2019 training files as published: ground truth, metadata (ignored), input folder with its text files."""
    root = tmp_path / "ISIC2019"
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    header = ["image", *ISIC2019_CLASSES]
    rows = [[name] + ["1.0" if c == dx else "0.0" for c in ISIC2019_CLASSES] for name, dx in _ISIC_IMAGES]
    _write_csv(root / "ISIC_2019_Training_GroundTruth.csv", header, rows)
    _write_csv(
        root / "ISIC_2019_Training_Metadata.csv",
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
        [[name, "55.0", "anterior torso", "", "female"] for name, _ in _ISIC_IMAGES],
    )
    (images / "LICENSE.txt").write_text("CC-BY-NC\n")
    (images / "ATTRIBUTION.txt").write_text("ISIC\n")
    for index, (name, _) in enumerate(_ISIC_IMAGES):
        _jpeg(images / f"{name}.jpg", 100 + index)
    return root


@pytest.fixture
def isic_masks(tmp_path: Path) -> Path:
    masks = tmp_path / "ISIC2018_Task1_Training_GroundTruth"
    masks.mkdir()
    for name in _ISIC_MASKED:
        _mask(masks / f"{name}_segmentation.png")
    (masks / "LICENSE.txt").write_text("CC-BY-NC\n")
    return masks


def _all(datalist: dict[str, list[dict]]) -> list[dict]:
    return [entry for entries in datalist.values() for entry in entries]


def _by_id(datalist: dict[str, list[dict]]) -> dict[str, dict]:
    return {entry["image_id"]: entry for entry in _all(datalist)}


# --- HAM10000 ------------------------------------------------------------------------------------------------------


def test_ham10000_labels_paths_and_lesions(ham_root: Path) -> None:
    datalist = ham10000_datalist(ham_root)
    assert list(datalist) == list(THREE_LISTS)
    entries = _by_id(datalist)
    assert len(_all(datalist)) == len(entries) == 20
    assert entries["ISIC_0024306"] == {
        "image": str(ham_root / "HAM10000_images_part_1" / "ISIC_0024306.jpg"),
        "label": 5,
        "image_id": "ISIC_0024306",
        "lesion_id": "HAM_0000001",
    }
    assert entries["ISIC_0024307"]["image"] == str(ham_root / "HAM10000_images_part_2" / "ISIC_0024307.jpg")
    hand = {"ISIC_0024316": 4, "ISIC_0024319": 2, "ISIC_0024322": 1, "ISIC_0024323": 0, "ISIC_0024324": 3}
    hand["ISIC_0024325"] = 6
    assert {image_id: entries[image_id]["label"] for image_id in hand} == hand
    assert Counter(HAM10000_CLASSES[e["label"]] for e in entries.values()) == Counter(
        {"nv": 9, "mel": 3, "bkl": 3, "bcc": 2, "akiec": 1, "df": 1, "vasc": 1}
    )
    assert all(Path(e["image"]).is_absolute() and Path(e["image"]).is_file() for e in entries.values())


def test_ham10000_lesions_stay_in_one_list_and_the_seed_fixes_the_split(ham_root: Path) -> None:
    first = ham10000_datalist(ham_root, seed=4)
    assert first == ham10000_datalist(ham_root, seed=4)
    assert any(first != ham10000_datalist(ham_root, seed=seed) for seed in range(5))
    for seed in range(5):
        datalist = ham10000_datalist(ham_root, seed=seed)
        lists_of_lesion: dict[str, set[str]] = {}
        for name, entries in datalist.items():
            for entry in entries:
                lists_of_lesion.setdefault(entry["lesion_id"], set()).add(name)
        assert all(len(names) == 1 for names in lists_of_lesion.values())
        assert all(datalist[name] for name in THREE_LISTS)
    two = ham10000_datalist(ham_root, fractions={"train": 0.5, "holdout": 0.5})
    assert list(two) == ["train", "holdout"] and len(_all(two)) == 20


def test_ham10000_kaggle_copy_with_lower_case_duplicates_lists_each_image_once(ham_root: Path) -> None:
    reference = ham10000_datalist(ham_root)
    for part in ("1", "2"):
        shutil.copytree(ham_root / f"HAM10000_images_part_{part}", ham_root / f"ham10000_images_part_{part}")
    assert ham10000_datalist(ham_root) == reference  # the published folders win, nothing is listed twice
    for part in ("1", "2"):
        shutil.rmtree(ham_root / f"HAM10000_images_part_{part}")
    lower = ham10000_datalist(ham_root)
    assert len(_all(lower)) == 20
    assert _by_id(lower)["ISIC_0024307"]["image"] == str(ham_root / "ham10000_images_part_2" / "ISIC_0024307.jpg")


def test_ham10000_masks_attached_and_required(ham_root: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    masked = ["ISIC_0024306", "ISIC_0024307", "ISIC_0024316", "ISIC_0024325"]
    for image_id in masked:
        _mask(masks / f"{image_id}_segmentation.png")
    entries = _by_id(ham10000_datalist(ham_root, mask_dir=masks))
    assert len(entries) == 20
    assert {i for i, e in entries.items() if "mask" in e} == set(masked)
    assert entries["ISIC_0024316"]["mask"] == str(masks / "ISIC_0024316_segmentation.png")
    required = ham10000_datalist(ham_root, {"training": 1.0}, mask_dir=masks, require_masks=True)
    assert sorted(e["image_id"] for e in required["training"]) == masked


# --- ISIC 2019 -----------------------------------------------------------------------------------------------------


def test_isic2019_labels_follow_the_csv_columns(isic_root: Path) -> None:
    datalist = isic2019_datalist(isic_root)
    entries = _by_id(datalist)
    assert len(_all(datalist)) == len(entries) == len(_ISIC_IMAGES)
    assert {image_id: e["label"] for image_id, e in entries.items()} == {
        name: ISIC2019_CLASSES.index(dx) for name, dx in _ISIC_IMAGES
    }
    assert entries["ISIC_0000004_downsampled"] == {
        "image": str(isic_root / "ISIC_2019_Training_Input" / "ISIC_0000004_downsampled.jpg"),
        "label": 0,
        "image_id": "ISIC_0000004_downsampled",
    }
    assert entries["ISIC_0000014"]["label"] == 7  # SCC, 8th column
    assert all(datalist[name] for name in THREE_LISTS)
    assert datalist == isic2019_datalist(isic_root)
    assert skin_lesion_datalist("isic2019", isic_root, seed=2) == isic2019_datalist(isic_root, seed=2)


def test_isic2019_masks_attached_required_and_loaded_by_monai(isic_root: Path, isic_masks: Path) -> None:
    from monai.transforms import LoadImaged

    entries = _by_id(isic2019_datalist(isic_root, mask_dir=isic_masks))
    assert {i for i, e in entries.items() if "mask" in e} == set(_ISIC_MASKED)
    assert entries["ISIC_0000004_downsampled"]["mask"] == str(isic_masks / "ISIC_0000004_downsampled_segmentation.png")
    required = isic2019_datalist(isic_root, {"training": 1.0}, mask_dir=isic_masks, require_masks=True)
    assert sorted(e["image_id"] for e in required["training"]) == sorted(_ISIC_MASKED)

    loaded = LoadImaged(keys=["image", "mask"], ensure_channel_first=True)(dict(entries["ISIC_0000002"]))
    # MONAI's PIL reader indexes (W, H) spatially, like every MONAI reader: the two keys agree
    assert tuple(loaded["image"].shape) == (3, WIDTH, HEIGHT)
    assert tuple(loaded["mask"].shape) == (1, WIDTH, HEIGHT)
    assert set(np.unique(np.asarray(loaded["mask"]))) == {0, 255}
    assert loaded["label"] == 0


# --- class weights and writing -------------------------------------------------------------------------------------


def test_class_weights_by_hand() -> None:
    entries = [{"label": label} for label in (0, 0, 0, 1, 2, 2)]
    # 1/count = 1/3, 1, 1/2 (mean 11/18) for the present classes; class 3 is absent: 0
    assert class_weights(entries, 4) == pytest.approx([6 / 11, 18 / 11, 9 / 11, 0.0])
    assert class_weights([{"label": 1}, {"label": 0}], 2) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="empty list"):
        class_weights([], 3)
    with pytest.raises(ValueError, match=r"entries \[1\] \(1 in all\) have no int 'label' in \[0, 3\)"):
        class_weights([{"label": 0}, {"label": 3}], 3)
    with pytest.raises(ValueError, match="no int 'label'"):
        class_weights([{"image": "a.jpg"}], 3)
    with pytest.raises(ValueError, match="num_classes"):
        class_weights([{"label": 0}], 0)


def test_class_weights_of_a_real_training_list(isic_root: Path) -> None:
    training = isic2019_datalist(isic_root, {"training": 1.0})["training"]
    weights = class_weights(training, len(ISIC2019_CLASSES))
    assert weights[-1] == 0.0  # UNK is never positive
    assert np.mean(weights[:-1]) == pytest.approx(1.0)
    assert weights[1] < weights[0] < weights[4]  # NV (4 images) < MEL (3) < BKL (1)


def test_write_round_trips_and_summarises(ham_root: Path, isic_root: Path, isic_masks: Path, tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    out = tmp_path / "lists" / "ham.json"
    summary = write_skin_lesion_datalist("ham10000", ham_root, out, seed=1)
    assert json.loads(out.read_text()) == ham10000_datalist(ham_root, seed=1)
    assert "\n" not in summary and summary.startswith(f"wrote {out} (ham10000): training ")
    training = ham10000_datalist(ham_root, seed=1)["training"]
    assert f"training {len(training)} (akiec " in summary and summary.endswith("masks 0/20")
    assert load_decathlon_datalist(out, data_list_key="test")[0]["image"].startswith(str(ham_root))

    summary = write_skin_lesion_datalist(
        "isic2019", isic_root, tmp_path / "isic.json", fractions={"training": 1.0}, mask_dir=isic_masks
    )
    assert summary == (
        f"wrote {tmp_path / 'isic.json'} (isic2019): "
        "training 16 (MEL 3, NV 4, BCC 2, AK 2, BKL 1, DF 1, VASC 1, SCC 2, UNK 0); masks 5/16"
    )


# --- errors --------------------------------------------------------------------------------------------------------


def test_missing_root_csv_and_image_folders(ham_root: Path, isic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root .*nowhere not found.*HAM10000_metadata.csv"):
        ham10000_datalist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"root .*nowhere not found.*ISIC_2019_Training_GroundTruth.csv"):
        isic2019_datalist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"ISIC_2019_Training_GroundTruth.csv not found.*challenge.isic"):
        isic2019_datalist(ham_root)
    shutil.rmtree(ham_root / "HAM10000_images_part_2")
    with pytest.raises(FileNotFoundError, match=r"image folder .*HAM10000_images_part_2 not found; the published"):
        ham10000_datalist(ham_root)
    (ham_root / "HAM10000_metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"HAM10000_metadata.csv not found.*Dataverse"):
        ham10000_datalist(ham_root)
    shutil.rmtree(isic_root / "ISIC_2019_Training_Input")
    with pytest.raises(FileNotFoundError, match=r"image folder .*ISIC_2019_Training_Input not found"):
        isic2019_datalist(isic_root)


def test_missing_images_are_collected_and_named(ham_root: Path, isic_root: Path) -> None:
    for image_id in ("ISIC_0024306", "ISIC_0024308", "ISIC_0024310", "ISIC_0024312", "ISIC_0024314", "ISIC_0024316"):
        (ham_root / "HAM10000_images_part_1" / f"{image_id}.jpg").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"6 of 20 images listed in the CSV are not in HAM10000_images_part_1/ or HAM10000_images_part_2/ under "
        r".*, e\.g\. ISIC_0024306\.jpg, ISIC_0024308\.jpg, ISIC_0024310\.jpg, ISIC_0024312\.jpg, ISIC_0024314\.jpg;",
    ):
        ham10000_datalist(ham_root)
    (isic_root / "ISIC_2019_Training_Input" / "ISIC_0000004_downsampled.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 16 images .*e\.g\. ISIC_0000004_downsampled\.jpg"):
        isic2019_datalist(isic_root)


def test_bad_ham10000_csv(ham_root: Path) -> None:
    path = ham_root / "HAM10000_metadata.csv"
    rows = _ham_rows()
    _write_csv(path, ["lesion_id", "image_id", "diagnosis"], [row[:3] for row in rows])
    with pytest.raises(ValueError, match=r"lacks the columns \['dx'\] \(header: lesion_id,image_id,diagnosis\)"):
        ham10000_datalist(ham_root)
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    _write_csv(path, header, [])
    with pytest.raises(ValueError, match="has a header but no rows"):
        ham10000_datalist(ham_root)
    bad = [list(row) for row in rows]
    bad[3][2] = "melanoma"
    _write_csv(path, header, [row[:7] for row in bad])
    with pytest.raises(ValueError, match=r"1 rows have a dx .*line 5 \(ISIC_0024309\): dx 'melanoma'"):
        ham10000_datalist(ham_root)
    _write_csv(path, header, [row[:7] for row in rows] + [rows[0][:7]])
    with pytest.raises(ValueError, match=r"lists 1 images more than once, e\.g\. \['ISIC_0024306'\]"):
        ham10000_datalist(ham_root)


@pytest.mark.parametrize(
    ("values", "found"),
    [
        (["1.0", "1.0"] + ["0.0"] * 7, r"1\.0,1\.0,0\.0"),
        (["0.0"] * 9, r"0\.0,0\.0"),
        (["0.5", "0.5"] + ["0.0"] * 7, r"0\.5,0\.5"),
        (["yes"] + ["0.0"] * 8, r"yes,0\.0"),
    ],
)
def test_a_row_that_is_not_one_hot_names_the_image(isic_root: Path, values: list[str], found: str) -> None:
    path = isic_root / "ISIC_2019_Training_GroundTruth.csv"
    rows = [[name] + ["1.0" if c == dx else "0.0" for c in ISIC2019_CLASSES] for name, dx in _ISIC_IMAGES]
    rows[2] = [rows[2][0], *values]
    _write_csv(path, ["image", *ISIC2019_CLASSES], rows)
    with pytest.raises(ValueError, match=rf"line 4: image ISIC_0000002 is not exactly one-hot .*\(found {found}"):
        isic2019_datalist(isic_root)


def test_isic2019_csv_without_the_class_columns(isic_root: Path) -> None:
    path = isic_root / "ISIC_2019_Training_GroundTruth.csv"
    _write_csv(path, ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"], [["ISIC_0000000"] + ["0.0"] * 8])
    with pytest.raises(ValueError, match=r"lacks the columns \['UNK'\].*header image,MEL,NV"):
        isic2019_datalist(isic_root)
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000000,0.0,1.0\n")
    with pytest.raises(ValueError, match=r"line 2 is short: no value for \['BCC'"):
        isic2019_datalist(isic_root)


def test_mask_errors(isic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mask_dir .*no_masks not found"):
        isic2019_datalist(isic_root, mask_dir=tmp_path / "no_masks")
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    _mask(empty / "ISIC_9999999_segmentation.png")
    with pytest.raises(ValueError, match=r"no image has a mask in .*empty_masks \(looked for names such as "):
        isic2019_datalist(isic_root, mask_dir=empty)
    with pytest.raises(ValueError, match="require_masks=True needs mask_dir"):
        isic2019_datalist(isic_root, require_masks=True)


def test_unknown_data_set_and_empty_lists(ham_root: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown skin-lesion data set 'isic2020'; choose one of ham10000, isic2019"):
        skin_lesion_datalist("isic2020", ham_root)
    with pytest.raises(ValueError, match=r"unknown skin-lesion data set"):
        write_skin_lesion_datalist("derm7pt", ham_root, ham_root / "out.json")
    with pytest.raises(ValueError, match=r"lists \['b', 'c'\] received no image out of 20"):
        ham10000_datalist(ham_root, fractions={"a": 0.98, "b": 0.01, "c": 0.01})
    assert skin_lesion_datalist("HAM10000", ham_root) == ham10000_datalist(ham_root)
