"""SIIM-ACR Pneumothorax reader: relative RLE against hand-made masks, labels, orphans, balanced subset, errors, and
mask PNGs that land on the image's bright pixels when both are loaded by MONAI (a non-square DICOM catches
transposes), MONOCHROME1 inverted like MONOCHROME2."""

from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from monai.transforms import Compose, LoadImage, LoadImaged, SqueezeDimd
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from monai_xai.data.siim_pneumothorax import (
    PNEUMOTHORAX_CLASSES,
    InvertMonochrome1d,
    rle_decode,
    rle_encode,
    siim_pneumothorax_datalist,
    write_siim_pneumothorax_datalist,
)

pytestmark = [  # MONAI noise: SIIM-like files have no patient orientation; no nvImageCodec on a CPU machine
    pytest.mark.filterwarnings("ignore:PydicomReader. ImageOrientationPatient"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader"),
]

ROWS, COLUMNS = 32, 24  # non-square: a transposed mask cannot land on the bright pixels
BRIGHT, DARK = 200, 30
UID = "1.2.276.0.7230010.3.1.4.8323329"  # SIIM ImageIds hold dots; the .dcm suffix alone is dropped


def _box(rows: slice, columns: slice) -> np.ndarray:
    mask = np.zeros((ROWS, COLUMNS), dtype=bool)
    mask[rows, columns] = True
    return mask


# rows 4-9 of columns 15-19: column 15 starts at flat pixel 15 * 32 + 4 = 484, each column ends 26 pixels before the
# next one starts (32 - 6). Written by hand, not by rle_encode.
BOX_1 = _box(slice(4, 10), slice(15, 20))
BOX_1_RLE = "484 6 26 6 26 6 26 6 26 6"
# a run crossing a column boundary: rows 28-31 of column 3 and rows 0-3 of column 4 are flat pixels 124-131
ACROSS = _box(slice(28, 32), slice(3, 4)) | _box(slice(0, 4), slice(4, 5))
ACROSS_RLE = "124 8"

_BOX_2A, _BOX_2B = _box(slice(20, 26), slice(2, 5)), _box(slice(0, 3), slice(10, 12))
_BOX_3A, _BOX_3B = _box(slice(10, 20), slice(5, 10)), _box(slice(15, 25), slice(8, 14))  # overlapping
POSITIVES = {  # ImageId -> (regions, one per CSV row; photometric; JPEG-compressed like the published files)
    f"{UID}.1.1": ([BOX_1_RLE, BOX_1_RLE], "MONOCHROME2", False),  # the same region twice (duplicate row)
    f"{UID}.2.1": ([rle_encode(_BOX_2A), rle_encode(_BOX_2B)], "MONOCHROME2", False),
    f"{UID}.3.1": ([rle_encode(_BOX_3A), rle_encode(_BOX_3B)], "MONOCHROME2", False),
    f"{UID}.4.1": ([BOX_1_RLE], "MONOCHROME1", False),  # the pixels of .1.1, stored MONOCHROME1
    f"{UID}.5.1": ([ACROSS_RLE], "MONOCHROME2", True),
}
NEGATIVES = [f"{UID}.{k}.1" for k in range(6, 13)]
MISSING_DICOM = f"{UID}.99.1"  # in the CSV, no file
NO_ROW = f"{UID}.98.1"  # a file, not in the CSV


def _union(image_id: str) -> np.ndarray:
    if image_id in NEGATIVES:
        return np.zeros((ROWS, COLUMNS), dtype=bool)
    return np.logical_or.reduce([rle_decode(rle, ROWS, COLUMNS) for rle in POSITIVES[image_id][0]])


def _pixels(mask: np.ndarray, seed: int) -> np.ndarray:
    """Dark textured background (< 100), BRIGHT where the mask is."""
    pixels = np.random.default_rng(seed).integers(DARK - 20, DARK + 20, size=mask.shape).astype(np.uint8)
    pixels[mask] = BRIGHT
    return pixels


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", jpeg: bool = False) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture, as published
    meta.MediaStorageSOPInstanceUID = path.stem
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, path.stem
    ds.StudyInstanceUID, ds.SeriesInstanceUID = path.parent.parent.name, path.parent.name
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.168, 0.168]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    else:
        ds.PixelData = pixels.tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, write_like_original=False)


def _dicom_path(root: Path, index: int, image_id: str) -> Path:
    study, series = f"1.2.276.0.7230010.3.1.2.{index}", f"1.2.276.0.7230010.3.1.3.{index}"
    return root / "dicom-images-train" / study / series / f"{image_id}.dcm"


def _make_dataset(root: Path, header: str = "ImageId, EncodedPixels") -> Path:
    """The published layout: nested DICOMs and train-rle.csv with its header, ' -1' rows and multi-row images."""
    rows = [header]
    for index, (image_id, (regions, photometric, jpeg)) in enumerate(POSITIVES.items()):
        pixels = _pixels(_union(image_id), index)
        if photometric == "MONOCHROME1":
            pixels = _pixels(_union(f"{UID}.1.1"), 0)  # the very pixels of .1.1
            pixels = 255 - pixels
        _write_dicom(_dicom_path(root, index, image_id), pixels, photometric, jpeg)
        rows += [f"{image_id}, {rle}" for rle in regions]
    for index, image_id in enumerate(NEGATIVES, start=len(POSITIVES)):
        _write_dicom(_dicom_path(root, index, image_id), _pixels(_union(image_id), index))
        rows.append(f"{image_id}, -1")
    rows.append(f"{MISSING_DICOM}, {BOX_1_RLE}")
    _write_dicom(_dicom_path(root, 98, NO_ROW), _pixels(_union(NEGATIVES[0]), 98))
    (root / "train-rle.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_dataset(tmp_path_factory.mktemp("siim"))


# the fixture's 12 images are too few for the default 80/10/10 split (it leaves validation empty, refused below)
FRACTIONS = {"training": 0.6, "validation": 0.2, "test": 0.2}


def _datalist(dataset: Path, mask_dir: Path, **kwargs) -> dict[str, list[dict]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return siim_pneumothorax_datalist(dataset, mask_dir, **{"fractions": FRACTIONS, **kwargs})


def _entries(datalist: dict[str, list[dict]]) -> dict[str, dict]:
    return {entry["image_id"]: entry for entries in datalist.values() for entry in entries}


# --- RLE ---------------------------------------------------------------------------------------------------------


def test_rle_decodes_a_hand_made_mask_column_by_column() -> None:
    # 5 rows x 4 columns; runs (start, length) (3, 4) and (14, 4) in column-major order, each crossing a column
    mask = np.array(
        [
            [0, 1, 0, 1],
            [0, 1, 0, 1],
            [0, 0, 0, 1],
            [1, 0, 0, 0],
            [1, 0, 1, 0],
        ],
        dtype=bool,
    )
    assert rle_decode("3 4 7 4", height=5, width=4).tolist() == mask.tolist()  # gap 14 - (3 + 4) = 7
    assert rle_encode(mask) == "3 4 7 4"
    docstring_example = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    assert rle_decode("0 1 1 1 1 2", 3, 2).tolist() == docstring_example.tolist()
    assert rle_encode(docstring_example) == "0 1 1 1 1 2"
    assert np.array_equal(rle_decode(BOX_1_RLE, ROWS, COLUMNS), BOX_1)
    assert np.array_equal(rle_decode(ACROSS_RLE, ROWS, COLUMNS), ACROSS)
    assert rle_decode("  -1 ", 5, 4).shape == (5, 4) and not rle_decode(" -1", 5, 4).any()
    assert rle_encode(np.zeros((5, 4))) == "-1"
    assert rle_decode(" 0 20 ", 5, 4).all() and rle_encode(np.ones((5, 4))) == "0 20"  # first and last pixel


def test_rle_round_trips_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((ROWS, COLUMNS)) < rng.uniform(0.05, 0.9)
        decoded = rle_decode(rle_encode(mask), ROWS, COLUMNS)
        assert decoded.dtype == bool and decoded.shape == (ROWS, COLUMNS) and np.array_equal(decoded, mask)


@pytest.mark.parametrize(
    ("rle", "match"),
    [
        ("3 4 7", "odd number of values"),
        ("3 4 7 40", "past the end of the 5 x 4 image"),
        ("3 -4", "negative value .-4."),
        ("-1 -1", "negative value"),
        ("3 4.5", "not an integer"),
        ("", "is empty"),
        ("3 0", "length 0"),
    ],
)
def test_malformed_rle_is_refused_naming_the_image(rle: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"ImageId 1.2.3.*{match}"):
        rle_decode(rle, 5, 4, image_id="1.2.3")


# --- datalist ----------------------------------------------------------------------------------------------------


def test_labels_masks_and_orphans(dataset: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=f"1 ImageId.*no DICOM file .e.g. {MISSING_DICOM}.*1 DICOM file.*{NO_ROW}"):
        datalist = siim_pneumothorax_datalist(dataset, tmp_path / "masks", fractions=FRACTIONS)
    assert list(datalist) == ["training", "validation", "test"]
    entries = _entries(datalist)
    assert sum(len(entries) for entries in datalist.values()) == len(entries) == 12  # each image once
    assert {i: e["label"] for i, e in entries.items()} == {**dict.fromkeys(POSITIVES, 1), **dict.fromkeys(NEGATIVES, 0)}
    assert PNEUMOTHORAX_CLASSES[1] == "pneumothorax"
    for image_id, entry in entries.items():
        assert set(entry) == {"image", "label", "mask", "image_id"}
        assert Path(entry["image"]).is_absolute() and Path(entry["image"]).name == f"{image_id}.dcm"
        assert Path(entry["image"]).parent.parent.parent.name == "dicom-images-train"
        assert Path(entry["mask"]).is_absolute() and Path(entry["mask"]).parent == (tmp_path / "masks").resolve()
        with Image.open(entry["mask"]) as png:
            assert png.mode == "L"
            stored = np.asarray(png)
        assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 1}
        assert np.array_equal(stored.astype(bool), _union(image_id)), image_id
    # hand-made unions: duplicate rows, two regions, overlapping regions
    assert np.array_equal(_union(f"{UID}.1.1"), BOX_1)
    two = np.asarray(Image.open(entries[f"{UID}.2.1"]["mask"]))
    assert two.sum() == 6 * 3 + 3 * 2 and two[20:26, 2:5].all() and two[0:3, 10:12].all()
    three = np.asarray(Image.open(entries[f"{UID}.3.1"]["mask"]))
    assert three.sum() == 10 * 5 + 10 * 6 - 5 * 2
    negatives = {entries[i]["mask"] for i in NEGATIVES}  # one shared all-zero mask of the image size
    assert len(negatives) == 1 and Path(negatives.pop()).name == f"empty_{ROWS}x{COLUMNS}.png"


def test_splits_are_stratified_and_fixed_by_the_seed(dataset: Path, tmp_path: Path) -> None:
    fractions = {"training": 0.6, "validation": 0.2, "test": 0.2}
    first = _datalist(dataset, tmp_path / "a", fractions=fractions, seed=4)
    assert first == _datalist(dataset, tmp_path / "a", fractions=fractions, seed=4)
    assert any(_datalist(dataset, tmp_path / "a", fractions=fractions, seed=s) != first for s in range(5, 8))
    counts = {name: Counter(e["label"] for e in entries) for name, entries in first.items()}
    assert counts == {
        "training": Counter({0: 4, 1: 3}),
        "validation": Counter({0: 2, 1: 1}),
        "test": Counter({0: 1, 1: 1}),
    }


def test_balanced_subset_keeps_all_positives_and_as_many_negatives(dataset: Path, tmp_path: Path) -> None:
    subsets = []
    for seed in range(6):
        entries = _entries(_datalist(dataset, tmp_path / "m", balanced=True, seed=seed))
        assert Counter(e["label"] for e in entries.values()) == Counter({0: 5, 1: 5})
        assert set(POSITIVES) <= set(entries)
        subsets.append(frozenset(entries))
    assert subsets[0] == frozenset(_entries(_datalist(dataset, tmp_path / "m", balanced=True, seed=0)))
    assert len(set(subsets)) > 1  # the negatives drawn depend on the seed


def test_existing_mask_files_are_kept(dataset: Path, tmp_path: Path) -> None:
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    kept = mask_dir / f"{UID}.1.1.png"
    Image.fromarray(np.zeros((ROWS, COLUMNS), dtype=np.uint8)).save(kept)
    entries = _entries(_datalist(dataset, mask_dir))
    assert not np.asarray(Image.open(kept)).any()  # not rewritten
    assert np.asarray(Image.open(entries[f"{UID}.2.1"]["mask"])).any()
    assert not list(mask_dir.glob("*.partial"))


def test_a_copy_too_small_for_the_split_is_refused_not_trained_without_validation(
    dataset: Path, tmp_path: Path
) -> None:
    """12 images at the default 80/10/10 leave validation empty: training would skip validation, save no checkpoint
    and exit 0 (issue #29); the loader refuses, naming the empty list, the count and the shares."""
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match=r"lists \['validation'\] received no image out of 12"),
    ):
        warnings.simplefilter("ignore", UserWarning)
        siim_pneumothorax_datalist(dataset, tmp_path / "masks")


def test_write_datalist_defaults_masks_next_to_the_file(dataset: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "lists" / "siim.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        summary = write_siim_pneumothorax_datalist(dataset, out_file, balanced=True, fractions=FRACTIONS)
    assert summary.startswith(f"wrote {out_file}") and "siim_pneumothorax_masks" in summary
    assert "training 6 (no_pneumothorax 3, pneumothorax 3)" in summary and "\n" not in summary
    assert sum(len(v) for v in json.loads(out_file.read_text()).values()) == 10
    training = load_decathlon_datalist(out_file, data_list_key="training")
    assert all(Path(e["mask"]).parent == (tmp_path / "lists" / "siim_pneumothorax_masks").resolve() for e in training)
    assert all(Path(e["mask"]).is_file() and Path(e["image"]).is_file() for e in training)


# --- orientation and MONOCHROME1 through MONAI loading -----------------------------------------------------------


def test_mask_lands_on_the_bright_pixels_through_monai_loading(dataset: Path, tmp_path: Path) -> None:
    entries = [e for e in _entries(_datalist(dataset, tmp_path / "m")).values() if e["image_id"] != f"{UID}.4.1"]
    pydicom_load = LoadImaged(keys=["image", "mask"], reader="PydicomReader", ensure_channel_first=True)
    default_load = Compose(
        [LoadImaged(keys=["image", "mask"], ensure_channel_first=True), SqueezeDimd(keys="image", dim=-1)]
    )
    for entry in entries:
        # pydicom's pixel_array is (Rows, Columns); every MONAI reader gives (x, y) = (Columns, Rows)
        assert pydicom.dcmread(entry["image"]).pixel_array.shape == (ROWS, COLUMNS)
        for name, load in (("PydicomReader", pydicom_load), ("default", default_load)):
            loaded = load(entry)
            image, mask = np.asarray(loaded["image"]), np.asarray(loaded["mask"])
            assert image.shape == mask.shape == (1, COLUMNS, ROWS), name
            assert np.array_equal(image > 100, mask > 0), (name, entry["image_id"])
            assert np.array_equal(mask[0] > 0, _union(entry["image_id"]).T), name
    assert LoadImage(image_only=True)(entries[0]["image"]).shape == (COLUMNS, ROWS, 1)  # ITK: trailing axis


def test_invert_monochrome1_matches_the_monochrome2_pixels(dataset: Path, tmp_path: Path) -> None:
    entries = _entries(_datalist(dataset, tmp_path / "m"))
    monochrome2, monochrome1 = entries[f"{UID}.1.1"], entries[f"{UID}.4.1"]
    assert pydicom.dcmread(monochrome1["image"]).PhotometricInterpretation == "MONOCHROME1"
    load = LoadImaged(keys=["image", "mask"], reader="PydicomReader", ensure_channel_first=True)
    stored = np.asarray(load(monochrome1)["image"])
    reference = np.asarray(load(monochrome2)["image"])
    assert np.array_equal(stored, 255 - reference)  # PydicomReader does not invert MONOCHROME1
    invert = InvertMonochrome1d(keys="image")
    inverted = invert(load(monochrome1))
    assert np.array_equal(np.asarray(inverted["image"]), reference)
    assert inverted["image"].meta["monochrome1_inverted"] is True
    assert np.array_equal(np.asarray(invert(inverted)["image"]), reference)  # twice: no change
    unchanged = invert(load(monochrome2))
    assert (
        np.array_equal(np.asarray(unchanged["image"]), reference)
        and not unchanged["image"].meta["monochrome1_inverted"]
    )
    assert np.array_equal(np.asarray(inverted["image"]) > 100, np.asarray(inverted["mask"]) > 0)
    # the default ITKReader (GDCM) has already inverted it: the transform leaves it
    itk = LoadImaged(keys="image", ensure_channel_first=True)
    itk_inverted = invert(itk({"image": monochrome1["image"]}))
    assert np.array_equal(np.asarray(itk_inverted["image"])[..., 0], reference)
    assert itk_inverted["image"].meta["monochrome1_inverted"] is False
    # a batch of MONOCHROME1 and MONOCHROME2 images collates (the metadata keys agree)
    pipeline = Compose([load, invert])
    batch = next(iter(DataLoader(Dataset([monochrome1, monochrome2], pipeline), batch_size=2)))
    assert np.array_equal(np.asarray(batch["image"][0]), np.asarray(batch["image"][1]))
    with pytest.raises(ValueError, match="no metadata"):
        invert({"image": np.zeros((1, 4, 4))})


# --- errors ------------------------------------------------------------------------------------------------------


def test_header_without_the_space_is_accepted(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path / "root", header="ImageId,EncodedPixels")
    assert len(_entries(_datalist(root, tmp_path / "m"))) == 12


def test_missing_layout_parts_are_named(dataset: Path, tmp_path: Path) -> None:
    layout = "published layout is .*train-rle.csv.*dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>"
    with pytest.raises(FileNotFoundError, match=f"root folder .*nowhere does not exist. The {layout}.*unpacked"):
        siim_pneumothorax_datalist(tmp_path / "nowhere", tmp_path / "m")
    root = tmp_path / "root"
    (root / "dicom-images-train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"root.train-rle.csv does not exist. The {layout}"):
        siim_pneumothorax_datalist(root, tmp_path / "m")
    (root / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{NEGATIVES[0]}, -1\n")
    with pytest.raises(FileNotFoundError, match=f"root.dicom-images-train holds no .dcm file. The {layout}"):
        siim_pneumothorax_datalist(root, tmp_path / "m")
    (root / "dicom-images-train").rmdir()
    with pytest.raises(FileNotFoundError, match=f"image folder .*dicom-images-train does not exist. The {layout}"):
        siim_pneumothorax_datalist(root, tmp_path / "m")


def test_bad_csv_contents_are_named(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path / "root")
    csv_path = root / "train-rle.csv"
    published = csv_path.read_text()
    csv_path.write_text(published.replace("ImageId, EncodedPixels", "ImageId, Mask"))
    with pytest.raises(ValueError, match=r"train-rle.csv has the columns \['ImageId', 'Mask'\], not .*published"):
        siim_pneumothorax_datalist(root, tmp_path / "m")
    csv_path.write_text("ImageId, EncodedPixels\n")
    with pytest.raises(ValueError, match="train-rle.csv holds no rows"):
        siim_pneumothorax_datalist(root, tmp_path / "m")
    csv_path.write_text("ImageId, EncodedPixels\n1.2.3, -1\n")
    with pytest.raises(ValueError, match="none of the 1 ImageIds .* has a DICOM file among the 13"):
        _datalist(root, tmp_path / "m")
    csv_path.write_text(published + f"{NEGATIVES[1]},\n")
    with pytest.raises(ValueError, match=f"EncodedPixels of ImageId {NEGATIVES[1]} .*line 18.* is empty"):
        siim_pneumothorax_datalist(root, tmp_path / "m")
    csv_path.write_text(published.replace(BOX_1_RLE, BOX_1_RLE + " 5", 1))
    with pytest.raises(ValueError, match=f"ImageId {UID}.1.1 holds an odd number"):
        _datalist(root, tmp_path / "m")
    csv_path.write_text(published.replace(ACROSS_RLE, "124 800"))
    with pytest.raises(ValueError, match=f"ImageId {UID}.5.1 runs to pixel 924, past the end of the 32 x 24"):
        _datalist(root, tmp_path / "m")
    csv_path.write_text(published)
    with pytest.raises(ValueError, match="fractions"):
        _datalist(root, tmp_path / "m", fractions={"training": -1.0})


def test_unreadable_dicoms_are_named(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path / "root")
    broken = next((root / "dicom-images-train").rglob(f"{NEGATIVES[2]}.dcm"))
    broken.write_bytes(b"not a dicom")
    with pytest.raises(ValueError, match=f"cannot read Rows and Columns of .*{NEGATIVES[2]}.dcm"):
        _datalist(root, tmp_path / "m")
    png = tmp_path / "image.png"
    Image.fromarray(np.zeros((4, 3), dtype=np.uint8)).save(png)
    with pytest.raises(ValueError, match="InvertMonochrome1d: cannot read the DICOM header of .*image.png"):
        InvertMonochrome1d(keys="image")(LoadImaged(keys="image")({"image": str(png)}))
