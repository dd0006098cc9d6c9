"""A tiny EGD-CXR data set in the published layout: PhysioNet's ``master_sheet.csv`` and ``fixations.csv``, MIMIC-CXR
DICOMs (pydicom) under the master sheet's ``files/p../p<patient>/s<study>/<dicom_id>.dcm`` paths (one of them only as
the MIMIC-CXR-JPG ``.jpg``), and per-image static heatmaps ``fixation_heatmaps/<dicom_id>/heatmap.png`` written as the
dataset's script writes them (``plt.imsave`` of a Gaussian-blurred fixation map, viridis, rows and columns padded to
even numbers).

``write_egd_cxr(root)`` writes 12 radiograph-like 8-bit images of 45 rows x 38 columns (odd rows: the heatmaps get the
script's extra row), 4 per class. Each image has a bright blob where the radiologist looked: the fixations of
``fixations.csv`` and the heatmap's peak are there, so the gaze map is predictable from the image. ``GAZE_CENTRES``
gives each image's blob centre (row, column).
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from scipy import ndimage  # noqa: E402

__all__ = ["EGD_ROWS", "EGD_COLUMNS", "GAZE_CENTRES", "JPG_ONLY", "MASTER_COLUMNS", "dicom_id", "write_egd_cxr"]

EGD_ROWS, EGD_COLUMNS = 45, 38
# the published master sheet's header (PhysioNet egd-cxr 1.0.0)
MASTER_COLUMNS = (
    "dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,image_bottom_pad,image_left_pad,"
    "image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,dx4_icd,dx5,dx5_icd,dx6,dx6_icd,dx7,dx7_icd,dx8,dx8_icd,"
    "dx9,dx9_icd,normal_reports,Normal,CHF,pneumonia,consolidation,enlarged_cardiac_silhouette,"
    "linear__patchy_atelectasis,lobar__segmental_collapse,"
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__,pleural_effusion_or_thickening,"
    "pulmonary_edema__hazy_opacity,normal_anatomically,elevated_hemidiaphragm,hyperaeration,vascular_redistribution,"
    "atelectasis__chx,cardiomegaly__chx,consolidation__chx,edema__chx,enlarged_cardiomediastinum__chx,fracture__chx,"
    "lung_lesion__chx,lung_opacity__chx,no_finding__chx,pleural_effusion__chx,pleural_other__chx,pneumonia__chx,"
    "pneumothorax__chx,support_devices__chx,cxr_exam_indication"
).split(",")
FIXATION_COLUMNS = (
    "SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,FPOGD,FPOGID,FPOGV,"
    "X_ORIGINAL,Y_ORIGINAL"
).split(",")
_N = 12
# blob centre (row, column) per image: class 0 (normal) upper, 1 (heart failure) middle, 2 (pneumonia) lower
GAZE_CENTRES = {index: (10 + 12 * (index % 3), 10 + 6 * (index // 3)) for index in range(_N)}
JPG_ONLY = 5  # this image exists only as MIMIC-CXR-JPG's .jpg


def dicom_id(index: int) -> str:
    return f"{index:08x}-d7635dfe-b8e0b87f-d818affc-{index:08x}"


def _relative_path(index: int, suffix: str = ".dcm") -> str:
    patient = 15628800 + index
    return f"files/p{str(patient)[:2]}/p{patient}/s{58573200 + index}/{dicom_id(index)}{suffix}"


def _pixels(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    rows, columns = np.mgrid[:EGD_ROWS, :EGD_COLUMNS]
    centre_row, centre_column = GAZE_CENTRES[index]
    blob = np.exp(-((rows - centre_row) ** 2 + (columns - centre_column) ** 2) / (2 * 4.0**2))
    pixels = 40 + 20 * rows / EGD_ROWS + rng.integers(-10, 10, size=rows.shape) + 170 * blob
    return pixels.clip(0, 255).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray, as MIMIC-CXR
    meta.MediaStorageSOPInstanceUID = "1.2.3." + str(abs(hash(path.stem)) % 10**8)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", "PA", path.parent.parent.name[1:]
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, write_like_original=False)


def _fixations(index: int) -> list[tuple[int, int]]:
    """(row, column) fixations around the blob centre."""
    centre_row, centre_column = GAZE_CENTRES[index]
    return [(centre_row + dr, centre_column + dc) for dr, dc in ((0, 0), (2, -1), (-2, 1), (1, 2))]


def _write_heatmap(path: Path, points: list[tuple[int, int]]) -> None:
    """As create_heatmap_images_and_or_videos.py: a fixation count image on the (even-padded) pixel grid, Gaussian
    blurred, saved with ``plt.imsave`` (viridis, min-max scaled)."""
    record = np.zeros((EGD_ROWS + EGD_ROWS % 2, EGD_COLUMNS + EGD_COLUMNS % 2))
    for row, column in points:
        record[row, column] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, ndimage.gaussian_filter(record, 3))


def write_egd_cxr(root: Path) -> Path:
    """Write the tiny data set under ``root`` (created) and return ``root`` (the folder holding master_sheet.csv)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "master_sheet.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MASTER_COLUMNS)
        writer.writeheader()
        for index in range(_N):
            label = index % 3
            row = dict.fromkeys(MASTER_COLUMNS, "")
            row.update(
                dicom_id=dicom_id(index),
                path=_relative_path(index),
                study_id=str(58573200 + index),
                patient_id=str(15628800 + index),
                gender="F",
                anchor_age="20 - 30",
                image_top_pad="0",
                image_bottom_pad="0",
                image_left_pad="534",
                image_right_pad="534",
                normal_reports="0",
                Normal=str(int(label == 0)),
                CHF=str(int(label == 1)),
                pneumonia=str(int(label == 2)),
            )
            writer.writerow(row)
            pixels = _pixels(index)
            if index == JPG_ONLY:
                jpg = root / _relative_path(index, ".jpg")
                jpg.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(jpg, quality=95)
            else:
                _write_dicom(root / _relative_path(index), pixels)
            _write_heatmap(root / "fixation_heatmaps" / dicom_id(index) / "heatmap.png", _fixations(index))
    with (root / "fixations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIXATION_COLUMNS)
        writer.writeheader()
        # a calibration image first: its DICOM_ID is in no row of the master sheet
        writer.writerow({**dict.fromkeys(FIXATION_COLUMNS, "0"), "DICOM_ID": "calibration", "X_ORIGINAL": "960"})
        for index in range(_N):
            for count, (row, column) in enumerate(_fixations(index)):
                writer.writerow(
                    {
                        **dict.fromkeys(FIXATION_COLUMNS, "0"),
                        "SESSION_ID": "1",
                        "DICOM_ID": dicom_id(index),
                        "CNT": str(count),
                        "X_ORIGINAL": str(column),
                        "Y_ORIGINAL": str(row),
                    }
                )
    return root
