"""The EGD-CXR reader on a tiny copy in the published layout (master sheet, MIMIC-CXR DICOMs / JPG, the dataset
script's viridis heatmap.png files, fixations.csv): datalist, heatmap decoding, errors, padding and resampling."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.data import MetaTensor  # noqa: E402
from PIL import Image  # noqa: E402

from monai_xai.data import (  # noqa: E402
    EGD_CXR_CLASSES,
    LoadGazeHeatmapd,
    PadResized,
    egd_cxr_datalist,
    read_gaze_heatmap,
)
from tests.helpers.fixture_egd_cxr import (  # noqa: E402
    EGD_COLUMNS,
    EGD_ROWS,
    GAZE_CENTRES,
    JPG_ONLY,
    dicom_id,
    write_egd_cxr,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:PydicomReader. ImageOrientationPatient"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader"),
]
INFERENCE = Path(__file__).resolve().parents[2] / "bundles" / "gaze_saliency_cxr" / "configs" / "inference.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_egd_cxr(tmp_path_factory.mktemp("egd") / "egd-cxr")


def test_datalist_as_published(data: Path, tmp_path: Path) -> None:
    datalist = egd_cxr_datalist(data, fixation_dir=tmp_path / "fix", test_size=3, validation_size=3)
    assert {name: len(entries) for name, entries in datalist.items()} == {"training": 6, "validation": 3, "test": 3}
    entries = [entry for entries in datalist.values() for entry in entries]
    assert sorted(entry["dicom_id"] for entry in entries) == sorted(dicom_id(i) for i in range(12))
    for entry in entries:
        index = int(entry["dicom_id"][:8], 16)
        assert entry["label"] == index % 3  # Normal, CHF, pneumonia columns of the master sheet
        assert entry["image"].endswith(".jpg" if index == JPG_ONLY else ".dcm") and Path(entry["image"]).is_file()
        assert entry["gaze"] == str(data / "fixation_heatmaps" / entry["dicom_id"] / "heatmap.png")
        mask = np.asarray(Image.open(entry["fixations"]))
        assert mask.shape == (EGD_ROWS, EGD_COLUMNS) and mask.sum() == 4
        assert mask[GAZE_CENTRES[index]] == 1
    for name in datalist:  # stratified: one image of each class per validation / test list
        if name != "training":
            assert sorted(entry["label"] for entry in datalist[name]) == [0, 1, 2]
    assert EGD_CXR_CLASSES == ("normal", "heart_failure", "pneumonia")
    assert datalist == egd_cxr_datalist(data, fixation_dir=tmp_path / "fix", test_size=3, validation_size=3)
    with pytest.warns(UserWarning, match="NSS is not computed"):
        copy = shutil.copytree(data, tmp_path / "copy")
        (copy / "fixations.csv").unlink()
        assert (
            "fixations"
            not in egd_cxr_datalist(copy, fixation_dir=tmp_path / "f2", test_size=3, validation_size=3)["test"][0]
        )


def _rewrite_master_sheet(root: Path, change) -> None:
    path = root / "master_sheet.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    change(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_errors_say_what_to_do(data: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="master_sheet.csv"):
        egd_cxr_datalist(tmp_path)
    root = shutil.copytree(data, tmp_path / "no_heatmap")
    shutil.rmtree(root / "fixation_heatmaps" / dicom_id(4))
    with pytest.warns(UserWarning, match=f"1 image.*left out.*{dicom_id(4)}.*create_heatmap_images_and_or_videos.py"):
        datalist = egd_cxr_datalist(root, test_size=3, validation_size=3)
    kept = [entry["dicom_id"] for entries in datalist.values() for entry in entries]
    assert len(kept) == 11 and dicom_id(4) not in kept
    shutil.rmtree(root / "fixation_heatmaps")
    with pytest.raises(FileNotFoundError, match="no image has a gaze heatmap.*heatmap_dir"):
        egd_cxr_datalist(root, test_size=3, validation_size=3)
    root = shutil.copytree(data, tmp_path / "no_image")
    with pytest.raises(FileNotFoundError, match="MIMIC-CXR folder"):
        egd_cxr_datalist(root, image_dir=tmp_path, test_size=3, validation_size=3)

    def two_labels(rows: list[dict]) -> None:
        rows[2]["CHF"] = "1"  # row 2 is pneumonia already

    root = shutil.copytree(data, tmp_path / "two_labels")
    _rewrite_master_sheet(root, two_labels)
    with pytest.raises(ValueError, match=f"{dicom_id(2)}.*unknown class label.*Fix or remove that row"):
        egd_cxr_datalist(root, test_size=3, validation_size=3)
    with pytest.raises(ValueError, match="lower test_size"):
        egd_cxr_datalist(data, test_size=6, validation_size=6)


@pytest.mark.parametrize("hostile", ["../../escape", "a/b", "", ".hidden", "x\\y"])
def test_a_dicom_id_that_is_not_a_plain_name_is_refused(data: Path, tmp_path: Path, hostile: str) -> None:
    """dicom_id names the heatmap folder and the fixation PNG: a crafted one must not reach a path."""

    def rename(rows: list[dict]) -> None:
        rows[0]["dicom_id"] = hostile

    root = shutil.copytree(data, tmp_path / "hostile")
    _rewrite_master_sheet(root, rename)
    with pytest.raises(ValueError, match="dicom_id .* is not a plain name"):
        egd_cxr_datalist(root, fixation_dir=tmp_path / "fix", test_size=3, validation_size=3)
    assert not (tmp_path / "fix").exists()


def test_a_ramp_saved_by_plt_imsave_decodes_exactly(tmp_path: Path) -> None:
    """Each of the 256 levels plt.imsave writes decodes to itself: the 8-bit viridis table, found exactly, except the
    two colours the table repeats (levels 104 = 105 and 137 = 138), which decode to the middle of their two levels."""
    ramp = np.tile(np.arange(256, dtype=np.float64)[None], (3, 1)) / 255.0
    plt.imsave(tmp_path / "ramp.png", ramp)
    expected = np.arange(256, dtype=np.float64)
    expected[[104, 105]] = 104.5
    expected[[137, 138]] = 137.5
    np.testing.assert_allclose(read_gaze_heatmap(tmp_path / "ramp.png") * 255.0, np.tile(expected, (3, 1)), atol=1e-3)


def test_heatmaps_decode_to_the_min_max_scaled_map(tmp_path: Path) -> None:
    rows, columns = np.mgrid[:30, :20]
    heatmap = np.exp(-((rows - 8) ** 2 + (columns - 12) ** 2) / 40.0) + 0.3 * np.exp(-((rows - 22) ** 2) / 10.0)
    plt.imsave(tmp_path / "heatmap.png", heatmap)  # what the dataset's script does (viridis, RGBA)
    assert Image.open(tmp_path / "heatmap.png").mode == "RGBA"
    decoded = read_gaze_heatmap(tmp_path / "heatmap.png")
    expected = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    assert decoded.shape == (30, 20) and decoded.dtype == np.float32
    # within two steps of the 256-colour map: plt.imsave bins values by 1/256, and neighbouring 8-bit viridis
    # colours are one or two RGB levels apart
    np.testing.assert_allclose(decoded, expected, atol=2 / 255)
    Image.fromarray((expected * 255).astype(np.uint8)).save(tmp_path / "grey.png")
    np.testing.assert_allclose(read_gaze_heatmap(tmp_path / "grey.png"), expected, atol=1 / 255 + 1e-6)
    rainbow = (plt.get_cmap("jet")(expected)[..., :3] * 255).astype(np.uint8)
    Image.fromarray(rainbow).save(tmp_path / "jet.png")
    with pytest.raises(ValueError, match="not matplotlib's viridis"):
        read_gaze_heatmap(tmp_path / "jet.png")
    with pytest.raises(FileNotFoundError, match="create_heatmap_images_and_or_videos"):
        read_gaze_heatmap(tmp_path / "missing.png")


def test_gaze_heatmap_is_cropped_to_the_image_grid(data: Path) -> None:
    path = data / "fixation_heatmaps" / dicom_id(0) / "heatmap.png"
    assert Image.open(path).size == (EGD_COLUMNS, EGD_ROWS + 1)  # the script's even padding
    image = MetaTensor(torch.zeros(1, EGD_COLUMNS, EGD_ROWS))
    gaze = LoadGazeHeatmapd()({"image": image, "gaze": str(path)})["gaze"]
    assert gaze.shape == (1, EGD_COLUMNS, EGD_ROWS)  # (x, y) = (column, row), like MONAI's readers
    row, column = GAZE_CENTRES[0]
    assert np.unravel_index(int(gaze[0].argmax()), gaze.shape[1:]) == (column, row)
    with pytest.raises(ValueError, match="not on the image's pixel grid"):
        LoadGazeHeatmapd()({"image": MetaTensor(torch.zeros(1, EGD_COLUMNS, EGD_ROWS - 5)), "gaze": str(path)})


def test_pad_resize_keeps_the_aspect_and_inverts() -> None:
    image = torch.zeros(1, 10, 40)  # 10 columns x 40 rows: narrower than the 4:5 target
    image[0, 4:6, 18:22] = 1.0
    transform = PadResized(keys="image", spatial_size=(16, 20), mode="bilinear")
    assert transform.padding((10, 40)) == [(0, 0), (11, 11), (0, 0)]  # padded to 32 x 40, centred
    assert transform.padding((40, 10)) == [(0, 0), (0, 0), (20, 20)]
    out = transform({"image": MetaTensor(image)})["image"]
    assert out.shape == (1, 16, 20)
    # the marker's centre (column 16 of 32, row 20 of 40) lands at (8, 10) of the 16 x 20 grid
    centre = (out[0] * torch.arange(16)[:, None]).sum() / out[0].sum(), (out[0] * torch.arange(20)).sum() / out[0].sum()
    assert centre[0].item() == pytest.approx(7.5, abs=0.3) and centre[1].item() == pytest.approx(9.5, abs=0.3)
    back = transform.inverse({"image": out})["image"]
    assert back.shape == (1, 10, 40)
    # the round trip (down by 2, then up) blurs the marker, but it stays where it was and nothing leaks far
    peak = np.unravel_index(int(back[0].argmax()), (10, 40))
    assert 4 <= peak[0] < 6 and 18 <= peak[1] < 22 and back[0, :, :10].abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"\(C, x, y\)"):
        transform({"image": torch.zeros(10, 40)})


def test_bundle_preprocessing(data: Path, tmp_path: Path) -> None:
    """The bundle's preprocessing: [0, 1] image, gaze and fixations on the image's grid, binary fixations."""
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update(
        {
            "bundle_root": str(tmp_path),
            "dataset_dir": str(data),
            "image_dir": str(data),
            "image_size": [32, 40],
            "test_size": 3,
            "validation_size": 3,
        }
    )
    preprocessing = parser.get_parsed_content("preprocessing")
    for entry in parser.get_parsed_content("datalist")["training"]:
        case = preprocessing(entry)
        image, gaze, fixations = (np.asarray(case[key]) for key in ("image", "gaze", "fixations"))
        assert image.shape == gaze.shape == fixations.shape == (1, 32, 40)
        assert image.min() >= 0.0 and 0.9 < image.max() <= 1.0 and set(np.unique(fixations)) == {0.0, 1.0}
        # the radiologist looked at the bright blob: the gaze peak is within 2 pixels of the image's brightest pixel
        peak, brightest = np.unravel_index(gaze.argmax(), gaze.shape), np.unravel_index(image.argmax(), image.shape)
        assert max(abs(a - b) for a, b in zip(peak, brightest)) <= 2, entry["dicom_id"]
        assert fixations[0][peak[1:]] == 1 or fixations[0][peak[1] - 1 : peak[1] + 2, peak[2] - 1 : peak[2] + 2].any()
