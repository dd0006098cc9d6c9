"""MONAI datalists of the SIIM-ACR Pneumothorax Segmentation data set (Kaggle), read exactly as published; no download.

Published layout (``root`` is the folder holding ``train-rle.csv``)::

    root/
        train-rle.csv                                   header "ImageId, EncodedPixels" (note the space)
        dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm
        dicom-images-test/...                           (no labels; not read here)

The DICOMs are chest radiographs, 1024 x 1024, 8-bit, mostly ``MONOCHROME2`` (JPEG baseline compressed: pydicom
decodes them with Pillow, MONAI's default ``ITKReader`` with GDCM). Each CSV row is one ImageId and either `` -1``
(no pneumothorax) or one region in the competition's *relative* run-length encoding (:func:`rle_decode`); an image
with several regions has several rows, and its mask is their union. ``ImageId`` is the DICOM file name without
``.dcm``; the study/series folders are not needed to match, any depth under ``dicom-images-train/`` is searched.

:func:`siim_pneumothorax_datalist` returns ``{"training": [...], "validation": [...], "test": [...]}`` (the names of
``fractions``), stratified by label, with entries::

    {"image": "/abs/root/dicom-images-train/<study>/<series>/<ImageId>.dcm",
     "label": 0 | 1,                  # index in PNEUMOTHORAX_CLASSES: 1 when the image has at least one region
     "mask": "/abs/mask_dir/<ImageId>.png" (positives) or "/abs/mask_dir/empty_<H>x<W>.png" (negatives),
     "image_id": "<ImageId>"}

Every entry has ``"mask"``, so one dict-transform pipeline serves positives and negatives and a localisation metric
sees an empty region, not a missing key; the negatives of one size share one all-zero file. Masks are ``uint8`` 0/1
PNGs of the DICOM's ``Rows x Columns``, written once (an existing file is kept; delete ``mask_dir`` after changing
the CSV).

Orientation (checked in the tests with a bright square in a non-square DICOM exactly where its RLE region is): every
MONAI reader indexes a 2D image ``(x, y)`` = (column, row), the transpose of pydicom's ``pixel_array``.
``PydicomReader`` gives ``(W, H)``; the default ``ITKReader`` gives ``(W, H, 1)``; ``PILReader`` reads the mask
PNG, written ``(H, W)`` like ``pixel_array``, as ``(W, H)``: the same pixel grid. Recommended loading::

    LoadImaged(keys=["image", "mask"], reader="PydicomReader", ensure_channel_first=True),  # PNG falls back to PIL
    InvertMonochrome1d(keys="image"),        # both keys now (1, W, H) on the same grid
    ...                                      # resize both keys; mode="nearest" for the mask

With the default reader, squeeze the image's trailing axis (``SqueezeDimd(keys="image", dim=-1)``) so that it
matches the 2D mask. The affines are not comparable (these radiographs carry no patient orientation: PydicomReader
returns an axis-swap matrix, PIL the identity, ITK a negative diagonal), so do not use ``Orientationd`` or
``Spacingd`` on image and mask together: it would transpose one of them only.

``MONOCHROME1`` (bright = air): MONAI's ``PydicomReader`` returns the stored values, while ``ITKReader`` (GDCM)
already inverts them to ``MONOCHROME2``; :class:`InvertMonochrome1d` inverts what is still ``MONOCHROME1`` and leaves
the rest, so bright = dense with either reader.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image
from pydicom.errors import InvalidDicomError

from .splits import datalist_summary, filled_stratified_split, write_datalist

__all__ = [
    "PNEUMOTHORAX_CLASSES",
    "InvertMonochrome1d",
    "rle_decode",
    "rle_encode",
    "siim_pneumothorax_datalist",
    "write_siim_pneumothorax_datalist",
]

PNEUMOTHORAX_CLASSES = ("no_pneumothorax", "pneumothorax")
CSV_NAME = "train-rle.csv"
IMAGE_FOLDER = "dicom-images-train"
_DATASET = "SIIM-ACR Pneumothorax Segmentation"
_LAYOUT = (
    f"<root>/{CSV_NAME} (columns 'ImageId, EncodedPixels') and "
    f"<root>/{IMAGE_FOLDER}/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm"
)
_NO_REGION = "-1"
_SHOWN = 5  # orphan names shown in the warning
_INVERSION_TAGS = ["PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept"]
_DEFAULT_FRACTIONS = {"training": 0.8, "validation": 0.1, "test": 0.1}


def _of(image_id: str | None) -> str:
    return f" of ImageId {image_id}" if image_id else ""


def rle_decode(rle: str, height: int, width: int, image_id: str | None = None) -> np.ndarray:
    """Decode one region in the competition's relative run-length encoding to a ``(height, width)`` bool mask.

    ``rle`` holds whitespace-separated pairs ``gap length``: each run starts ``gap`` pixels after the end of the
    previous run (the first after pixel 0) and covers ``length`` pixels of the mask flattened column by column
    (Fortran order: pixel ``(row, column)`` is flat index ``column * height + row``). ``"-1"`` is an empty mask.

    Worked example, ``height=3, width=2``::

        mask = [[1, 0],      flattened by column: 1 0 1 | 0 1 1
                [0, 1],      runs (start, length): (0, 1) (2, 1) (4, 2)
                [1, 1]]      relative: gap 0 len 1, gap 2-1=1 len 1, gap 4-3=1 len 2  ->  "0 1 1 1 1 2"

    Args:
        rle: the ``EncodedPixels`` text of one CSV row (surrounding whitespace is ignored).
        height, width: the image's ``Rows`` and ``Columns``.
        image_id: named in the errors.

    Returns:
        bool array ``(height, width)``, indexed like pydicom's ``pixel_array``.

    Raises:
        ValueError: naming ``image_id``: empty text, a value that is not an integer, an odd number of values, a
            negative value other than a lone ``-1``, a run of length 0, or a run past the end of the image.
    """
    text = str(rle).strip()
    mask = np.zeros(height * width, dtype=bool)
    if text == _NO_REGION:
        return mask.reshape(height, width)
    if not text:
        raise ValueError(f"EncodedPixels{_of(image_id)} is empty; the published CSV writes -1 for no pneumothorax.")
    try:
        values = np.array([int(value) for value in text.split()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"EncodedPixels{_of(image_id)} holds a value that is not an integer: {text[:60]!r}.") from None
    if values.size % 2:
        raise ValueError(
            f"EncodedPixels{_of(image_id)} holds an odd number of values ({values.size}); the relative RLE is pairs "
            "of (gap, run length)."
        )
    if (values < 0).any():
        raise ValueError(
            f"EncodedPixels{_of(image_id)} holds a negative value ({int(values[values < 0][0])}); only a lone -1 "
            "(no pneumothorax) may be negative."
        )
    gaps, lengths = values[0::2], values[1::2]
    if (lengths == 0).any():
        raise ValueError(f"EncodedPixels{_of(image_id)} holds a run of length 0.")
    ends = np.cumsum(gaps + lengths)
    if ends[-1] > height * width:
        raise ValueError(
            f"EncodedPixels{_of(image_id)} runs to pixel {int(ends[-1])}, past the end of the {height} x {width} "
            f"image ({height * width} pixels): wrong image size, or not the relative encoding of train-rle.csv."
        )
    change = np.zeros(height * width + 1, dtype=np.int64)
    np.add.at(change, ends - lengths, 1)
    np.add.at(change, ends, -1)
    mask = np.cumsum(change[:-1]) > 0
    return np.ascontiguousarray(mask.reshape(width, height).T)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2D ``(height, width)`` mask in the relative run-length encoding; the inverse of :func:`rle_decode`.

    Nonzero pixels are the region; an empty mask gives ``"-1"``. With the ``mask`` of :func:`rle_decode`'s example,
    ``rle_encode(mask) == "0 1 1 1 1 2"``.

    Raises:
        ValueError: ``mask`` is not 2D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2D (height, width) mask, got shape {mask.shape}.")
    flat = np.concatenate([[0], (mask != 0).ravel(order="F").astype(np.int8), [0]])
    change = np.diff(flat)
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    if not starts.size:
        return _NO_REGION
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(str(int(value)) for value in np.column_stack([gaps, ends - starts]).ravel())


def _check_layout(root: Path) -> tuple[Path, Path]:
    """The CSV and the image folder under ``root``, or an error naming what is missing and the layout."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{_DATASET}: the root folder {root} does not exist. The published layout is {_LAYOUT}; pass as root the "
            "folder where the Kaggle archive was unpacked (nothing is downloaded)."
        )
    csv_path, image_folder = root / CSV_NAME, root / IMAGE_FOLDER
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{_DATASET}: {csv_path} does not exist. The published layout is {_LAYOUT}; pass as root the folder "
            f"holding {CSV_NAME} (the labels) next to {IMAGE_FOLDER}/."
        )
    if not image_folder.is_dir():
        raise FileNotFoundError(
            f"{_DATASET}: the image folder {image_folder} does not exist. The published layout is {_LAYOUT}; unpack "
            f"the training DICOMs there (or pass as root the folder holding {IMAGE_FOLDER}/)."
        )
    return csv_path, image_folder


def _read_regions(csv_path: Path) -> dict[str, list[str]]:
    """ImageId -> its ``EncodedPixels`` rows (``-1`` rows dropped: an image with none has no region), CSV order."""
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lstrip("\ufeff") for name in next(reader, [])]
        if "ImageId" not in header or "EncodedPixels" not in header:
            raise ValueError(
                f"{_DATASET}: {csv_path} has the columns {header}, not 'ImageId' and 'EncodedPixels'. The published "
                f"layout is {_LAYOUT}; pass the competition's train-rle.csv unchanged."
            )
        id_column, rle_column = header.index("ImageId"), header.index("EncodedPixels")
        regions: dict[str, list[str]] = {}
        for line, row in enumerate(reader, start=2):
            if not any(value.strip() for value in row):
                continue
            if len(row) <= max(id_column, rle_column):
                raise ValueError(f"{_DATASET}: {csv_path} line {line} has {len(row)} values, not 2: {row}.")
            image_id, rle = row[id_column].strip(), row[rle_column].strip()
            if not image_id:
                raise ValueError(f"{_DATASET}: {csv_path} line {line} has no ImageId.")
            if not rle:
                raise ValueError(
                    f"EncodedPixels of ImageId {image_id} ({csv_path} line {line}) is empty; the published CSV "
                    "writes -1 for no pneumothorax."
                )
            rows = regions.setdefault(image_id, [])
            if rle != _NO_REGION:
                rows.append(rle)
    if not regions:
        raise ValueError(f"{_DATASET}: {csv_path} holds no rows. The published layout is {_LAYOUT}.")
    return regions


def _find_images(image_folder: Path) -> dict[str, Path]:
    """ImageId -> absolute path of its ``.dcm`` file, at any depth under ``image_folder``."""
    images: dict[str, Path] = {}
    for path in sorted(image_folder.rglob("*.dcm")):
        if path.stem in images:
            raise ValueError(
                f"{_DATASET}: ImageId {path.stem} has two files, {images[path.stem]} and {path}; keep one of them."
            )
        images[path.stem] = path.resolve()
    if not images:
        raise FileNotFoundError(
            f"{_DATASET}: {image_folder} holds no .dcm file. The published layout is {_LAYOUT}; unpack the training "
            "DICOMs there."
        )
    return images


def _image_size(path: Path) -> tuple[int, int]:
    """``(Rows, Columns)`` from the DICOM header, pixels not read."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.Rows), int(header.Columns)
    except (OSError, AttributeError, InvalidDicomError) as error:
        raise ValueError(f"{_DATASET}: cannot read Rows and Columns of {path}: {error}") from error


def _write_png(mask: np.ndarray, path: Path) -> None:
    """Write a uint8 0/1 PNG atomically (an interrupted run leaves no truncated mask)."""
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(mask.astype(np.uint8)).save(partial, format="PNG")
    os.replace(partial, path)


def _warn_orphans(without_image: Sequence[str], without_row: Sequence[str]) -> None:
    parts = []
    if without_image:
        parts.append(
            f"{len(without_image)} ImageId(s) of the CSV have no DICOM file (e.g. {', '.join(without_image[:_SHOWN])})"
        )
    if without_row:
        parts.append(f"{len(without_row)} DICOM file(s) have no CSV row (e.g. {', '.join(without_row[:_SHOWN])})")
    if parts:
        warnings.warn(f"{_DATASET}: {'; '.join(parts)}; they are left out.", UserWarning, stacklevel=3)


def siim_pneumothorax_datalist(
    root: str | Path,
    mask_dir: str | Path,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    balanced: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of the data set under ``root``, with the masks written to ``mask_dir`` (see the module docstring).

    Images of the CSV without a DICOM file, and DICOM files without a CSV row (the published CSV has a few of
    each), are left out with one warning giving their numbers and first names.

    Args:
        root: the folder holding ``train-rle.csv`` and ``dicom-images-train/``.
        mask_dir: where the mask PNGs are written (created; existing files are kept).
        fractions: list name -> share, stratified by label (see
            :func:`~monai_xai.data.splits.stratified_split`); default ``{"training": 0.8, "validation": 0.1,
            "test": 0.1}``.
        seed: seed of the split and of the balanced subsample.
        balanced: keep all images of the smaller class and as many of the other class, drawn with ``seed`` (the
            balanced subset: all pneumothorax images and as many negatives).

    Returns:
        ``{name: entries}`` in the order of ``fractions``; entries sorted by ImageId within a list.

    Raises:
        FileNotFoundError: ``root``, the CSV or the image folder is missing, or no ``.dcm`` file is found.
        ValueError: the CSV lacks ``ImageId`` or ``EncodedPixels``, holds no rows, an empty or malformed
            ``EncodedPixels`` (naming the ImageId), no CSV image has a DICOM file, or bad ``fractions``.
    """
    root = Path(root).expanduser().resolve()
    csv_path, image_folder = _check_layout(root)
    regions = _read_regions(csv_path)
    images = _find_images(image_folder)
    without_image = [image_id for image_id in regions if image_id not in images]
    without_row = [image_id for image_id in images if image_id not in regions]
    _warn_orphans(without_image, without_row)
    image_ids = sorted(image_id for image_id in regions if image_id in images)
    if not image_ids:
        raise ValueError(
            f"{_DATASET}: none of the {len(regions)} ImageIds of {csv_path} has a DICOM file among the "
            f"{len(images)} under {image_folder}. The published layout is {_LAYOUT}; the file names must be "
            "<ImageId>.dcm."
        )
    labels = {image_id: int(bool(regions[image_id])) for image_id in image_ids}
    if balanced:
        by_label = {label: [i for i in image_ids if labels[i] == label] for label in (0, 1)}
        count = min(len(members) for members in by_label.values())
        if count == 0:
            raise ValueError(f"{_DATASET}: a balanced subset needs both classes; {csv_path} lists only one.")
        rng = np.random.default_rng(seed)
        kept = set()
        for members in by_label.values():
            kept.update(members[index] for index in rng.choice(len(members), size=count, replace=False))
        image_ids = [image_id for image_id in image_ids if image_id in kept]

    mask_dir = Path(mask_dir).expanduser().resolve()
    mask_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id in image_ids:
        if labels[image_id]:
            mask_path = mask_dir / f"{image_id}.png"
            if not mask_path.exists():
                height, width = _image_size(images[image_id])
                mask = np.zeros((height, width), dtype=bool)
                for rle in regions[image_id]:
                    mask |= rle_decode(rle, height, width, image_id=image_id)
                _write_png(mask, mask_path)
        else:
            height, width = _image_size(images[image_id])
            mask_path = mask_dir / f"empty_{height}x{width}.png"
            if not mask_path.exists():
                _write_png(np.zeros((height, width), dtype=bool), mask_path)
        entries.append(
            {"image": str(images[image_id]), "label": labels[image_id], "mask": str(mask_path), "image_id": image_id}
        )
    return filled_stratified_split(entries, _DEFAULT_FRACTIONS if fractions is None else fractions, seed=seed)


def write_siim_pneumothorax_datalist(
    root: str | Path, out_file: str | Path, mask_dir: str | Path | None = None, **kwargs: Any
) -> str:
    """Write :func:`siim_pneumothorax_datalist` as JSON to ``out_file`` (MONAI's ``load_decathlon_datalist`` reads it).

    Args:
        root: as :func:`siim_pneumothorax_datalist`.
        out_file: the JSON file to write (its folder is created).
        mask_dir: where the masks go; default ``siim_pneumothorax_masks/`` next to ``out_file``.
        kwargs: ``fractions``, ``seed``, ``balanced`` of :func:`siim_pneumothorax_datalist`.

    Returns:
        one line: the file written, the mask folder and the number of images per list and per class.
    """
    out_file = Path(out_file)
    mask_dir = out_file.parent / "siim_pneumothorax_masks" if mask_dir is None else Path(mask_dir)
    datalist = siim_pneumothorax_datalist(root, mask_dir, **kwargs)
    path = write_datalist(datalist, out_file)
    return f"wrote {path} (masks in {mask_dir}): {datalist_summary(datalist, PNEUMOTHORAX_CLASSES)}"


def _photometric_from_file(filename: str | os.PathLike) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(
            filename,
            stop_before_pixels=True,
            specific_tags=_INVERSION_TAGS,
        )
    except (OSError, InvalidDicomError) as error:
        raise ValueError(f"InvertMonochrome1d: cannot read the DICOM header of {filename}: {error}") from error


class InvertMonochrome1d(MapTransform):
    """Invert ``MONOCHROME1`` radiographs (bright = air) so that bright = dense, as in ``MONOCHROME2``.

    Meant right after ``LoadImaged``. Which images are still ``MONOCHROME1`` depends on the reader (checked in the
    tests with pydicom 2.4, ITK 5.4, MONAI 1.6): MONAI's ``PydicomReader`` returns the stored values (and, with its
    default ``prune_metadata=True``, drops the PhotometricInterpretation from the metadata, so the header of
    ``meta["filename_or_obj"]`` is read); ``ITKReader`` (GDCM) has already inverted them although its metadata
    (``"0028|0004"``) still says ``MONOCHROME1``, so images with ITK metadata are left as they are.

    The inversion mirrors the stored value range: ``v -> lo + hi - v`` with ``[lo, hi]`` the range of ``BitsStored``
    (unsigned or signed by ``PixelRepresentation``), mapped through ``RescaleSlope``/``RescaleIntercept`` when the
    header has them (``PydicomReader`` applies them); 8-bit ``v -> 255 - v``, which is what GDCM does.

    The metadata of each processed image (``MetaTensor.meta``, or ``data["<key>_meta_dict"]`` for
    ``image_only=False``) gets ``"monochrome1_inverted": True | False``, the same key for every image so that batches
    collate; an image that already has it is left as it is, so applying the transform twice is harmless.

    Raises:
        ValueError: the image has no metadata naming its file, or the file is not a readable DICOM.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            meta = image.meta if isinstance(image, MetaTensor) else d.get(f"{key}_meta_dict")
            if meta is None:
                raise ValueError(
                    f"InvertMonochrome1d: {key!r} has no metadata; load it with LoadImaged (a MetaTensor, or "
                    "image_only=False) so that its DICOM file is known."
                )
            if "monochrome1_inverted" in meta:
                continue
            offset = self._mirror_offset(meta)
            if offset is not None:
                image = offset - image
                d[key] = image
                if isinstance(image, MetaTensor):
                    meta = image.meta
            meta["monochrome1_inverted"] = offset is not None
        return d

    @staticmethod
    def _mirror_offset(meta: Mapping[str, Any]) -> float | None:
        """``lo + hi`` of the stored range when the pixels are still MONOCHROME1, else None."""
        if "0028|0004" in meta:  # ITKReader: GDCM has converted MONOCHROME1 to MONOCHROME2 already
            return None
        filename = meta.get("filename_or_obj")
        if not filename:
            raise ValueError(
                "InvertMonochrome1d: the metadata names no file (filename_or_obj), so the PhotometricInterpretation "
                "cannot be read; load the image with LoadImaged."
            )
        header = _photometric_from_file(filename)
        if str(header.get("PhotometricInterpretation", "")).strip().upper() != "MONOCHROME1":
            return None
        bits = int(header.get("BitsStored", 8))
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if header.get("PixelRepresentation", 0) else (0, 2**bits - 1)
        slope, intercept = float(header.get("RescaleSlope", 1.0)), float(header.get("RescaleIntercept", 0.0))
        return slope * (lo + hi) + 2 * intercept
