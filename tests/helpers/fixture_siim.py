"""A tiny SIIM-ACR Pneumothorax data set in the published Kaggle layout, with real DICOMs (pydicom).

``write_siim_pneumothorax(root)`` writes::

    root/train-rle.csv                                     header "ImageId, EncodedPixels" (with the space),
                                                           " -1" for no pneumothorax, one row per region
    root/dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm

16 chest-radiograph-like 8-bit images of 48 rows x 40 columns (non-square, so a transposed mask is caught), half of
them positive: bright pixels exactly where the union of an image's RLE regions is, on a dark textured background
(a network can learn the label, and the CAM metrics have a region to find). Two positives have two regions (two CSV
rows), one positive is stored ``MONOCHROME1`` (inverted pixels; :class:`~monai_xai.data.InvertMonochrome1d` makes it
bright = dense again), one is JPEG-baseline compressed like the published files. The RLE is the competition's
relative, column-major encoding (:func:`~monai_xai.data.siim_pneumothorax.rle_encode`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from monai_xai.data.siim_pneumothorax import rle_encode

__all__ = ["SIIM_ROWS", "SIIM_COLUMNS", "SIIM_UID", "write_siim_pneumothorax"]

SIIM_ROWS, SIIM_COLUMNS = 48, 40
SIIM_UID = "1.2.276.0.7230010.3.1.4.8323329"  # SIIM ImageIds hold dots
_BRIGHT, _DARK = 220, 40
_HEADER = "ImageId, EncodedPixels"


def _box(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((SIIM_ROWS, SIIM_COLUMNS), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


# ImageId suffix -> (regions as (top, left, height, width), photometric, JPEG-compressed); eight positives
_POSITIVES: dict[int, tuple[list[tuple[int, int, int, int]], str, bool]] = {
    1: ([(6, 4, 12, 10)], "MONOCHROME2", False),
    2: ([(28, 22, 12, 12)], "MONOCHROME2", False),
    3: ([(4, 24, 10, 12), (30, 4, 12, 10)], "MONOCHROME2", False),  # two regions: two CSV rows
    4: ([(10, 10, 14, 12)], "MONOCHROME1", False),  # stored inverted (bright = air)
    5: ([(20, 2, 12, 12)], "MONOCHROME2", True),  # JPEG baseline like the published files
    6: ([(2, 14, 12, 12), (8, 20, 12, 12)], "MONOCHROME2", False),  # two overlapping regions
    7: ([(34, 16, 12, 14)], "MONOCHROME2", False),
    8: ([(16, 26, 14, 12)], "MONOCHROME2", False),
}
_NEGATIVES = list(range(9, 17))


def _pixels(mask: np.ndarray, seed: int) -> np.ndarray:
    """Dark textured background (< 100) with a soft vertical gradient, bright where the mask is."""
    rng = np.random.default_rng(seed)
    background = _DARK + np.linspace(0, 20, SIIM_ROWS)[:, None] + rng.integers(-15, 15, size=mask.shape)
    pixels = background.clip(0, 255).astype(np.uint8)
    pixels[mask] = _BRIGHT
    return pixels


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str, jpeg: bool) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture, as published
    meta.MediaStorageSOPInstanceUID = path.stem
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, path.stem
    ds.StudyInstanceUID, ds.SeriesInstanceUID = path.parent.parent.name, path.parent.name
    ds.PatientID, ds.PatientSex, ds.PatientAge = path.stem.rsplit(".", 2)[-2], "M", "038Y"
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
    study, series = f"1.2.276.0.7230010.3.1.2.8323329.{index}", f"1.2.276.0.7230010.3.1.3.8323329.{index}"
    return root / "dicom-images-train" / study / series / f"{image_id}.dcm"


def write_siim_pneumothorax(root: Path) -> Path:
    """Write the tiny data set under ``root`` (created) and return ``root`` (the folder holding ``train-rle.csv``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [_HEADER]
    for index, (regions, photometric, jpeg) in _POSITIVES.items():
        image_id = f"{SIIM_UID}.{1000 + index}.{index}"
        masks = [_box(*region) for region in regions]
        pixels = _pixels(np.logical_or.reduce(masks), seed=index)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
        _write_dicom(_dicom_path(root, index, image_id), pixels, photometric, jpeg)
        rows += [f"{image_id}, {rle_encode(mask)}" for mask in masks]
    for index in _NEGATIVES:
        image_id = f"{SIIM_UID}.{1000 + index}.{index}"
        _write_dicom(
            _dicom_path(root, index, image_id),
            _pixels(np.zeros((SIIM_ROWS, SIIM_COLUMNS), bool), index),
            "MONOCHROME2",
            False,
        )
        rows.append(f"{image_id}, -1")
    (root / "train-rle.csv").write_text("\n".join(rows) + "\n")
    return root
