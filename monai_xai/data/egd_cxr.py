"""MONAI datalists of EGD-CXR, the "Eye Gaze Data for Chest X-rays" (Karargyris et al., PhysioNet egd-cxr 1.0.0),
read as published; no download.

Published layout (three sources, each where its publisher puts it; by default all under ``root``)::

    root/                                      the PhysioNet release, egd-cxr/1.0.0/
        master_sheet.csv                       one row per image: dicom_id, path, study_id, patient_id, ...,
                                               image_top_pad ... image_right_pad, dx1 ..., normal_reports,
                                               Normal, CHF, pneumonia (one-hot diagnosis), ...
        fixations.csv                          optional: SESSION_ID, MEDIA_ID, DICOM_ID, ..., X_ORIGINAL, Y_ORIGINAL
    image_dir/<path>                           MIMIC-CXR, the master sheet's ``path``, e.g.
                                               files/p15/p15628804/s58573295/<dicom_id>.dcm; MIMIC-CXR-JPG's
                                               files/.../<dicom_id>.jpg is taken when the .dcm is absent
    heatmap_dir/<dicom_id>/heatmap.png         the static gaze heatmap of each image, as the dataset's script
                                               DataProcessing/DataPostProcessing/create_heatmap_images_and_or_videos.py
                                               (github.com/cxr-eye-gaze/eye-gaze-dataset) writes it: a Gaussian-blurred
                                               fixation map on the image's pixel grid saved with ``plt.imsave``
                                               (viridis colours; rows and columns padded to even numbers)

Labels (:data:`EGD_CXR_CLASSES`): ``Normal`` -> 0 normal, ``CHF`` -> 1 heart failure, ``pneumonia`` -> 2; each row
must have exactly one of the three set. :func:`egd_cxr_datalist` returns ``{"training": [...], "validation": [...],
"test": [...]}`` (the study: 100 test images, the rest for training; here a validation share is held out of the
training images for early stopping), stratified by label with one patient's images in one list, entries::

    {"image": "/abs/image_dir/files/.../<dicom_id>.dcm", "gaze": "/abs/heatmap_dir/<dicom_id>/heatmap.png",
     "label": 0 | 1 | 2, "dicom_id": "<dicom_id>", "patient_id": "<patient_id>",
     "fixations": "/abs/fixation_dir/<dicom_id>.png"}      # only with fixation_dir and fixations.csv

``fixations`` is a uint8 0/1 PNG of the image's size with 1 at each fixation of ``fixations.csv`` (``X_ORIGINAL`` =
column, ``Y_ORIGINAL`` = row), written once: the binary fixation map NSS needs.

Preprocessing (the bundle's): ``LoadImaged(keys="image", reader="PydicomReader")`` (a JPG falls back to PIL),
:class:`InvertDicomMonochrome1d`, :class:`LoadGazeHeatmapd` (decodes the heatmap to [0, 1] on the image's
grid), ``ScaleIntensityd`` (intensities in [0, 1] per image), :class:`PadResized` (pad to the target's aspect ratio,
then resample to 640 x 512), as Qiu's thesis (ch. 4) and MT-UNet (Zhu et al. 2022) do. Every MONAI reader indexes a 2D
image ``(x, y)`` = (column, row): a ``spatial_size`` of ``[512, 640]`` is 512 columns x 640 rows, the portrait
"640 x 512" of the study (MT-UNet pads MIMIC's 3056 x 2544 radiographs to 3200 x 2560 rows x columns and takes every
fifth pixel).
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
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Pad, Resize
from monai.utils import ensure_tuple_rep
from PIL import Image

from ..naming import safe_stem
from .siim_pneumothorax import InvertMonochrome1d
from .splits import datalist_summary, stratified_split, write_datalist

__all__ = [
    "EGD_CXR_CLASSES",
    "EGD_CXR_LABEL_COLUMNS",
    "InvertDicomMonochrome1d",
    "LoadGazeHeatmapd",
    "PadResized",
    "egd_cxr_datalist",
    "read_gaze_heatmap",
    "write_egd_cxr_datalist",
]

EGD_CXR_CLASSES = ("normal", "heart_failure", "pneumonia")
EGD_CXR_LABEL_COLUMNS = ("Normal", "CHF", "pneumonia")  # the master sheet's one-hot columns, in label order
MASTER_SHEET = "master_sheet.csv"
FIXATIONS = "fixations.csv"
HEATMAP_NAME = "heatmap.png"
HEATMAP_FOLDER = "fixation_heatmaps"
_DATASET = "EGD-CXR (Eye Gaze Data for Chest X-rays)"
_SHOWN = 5
_HEATMAP_HOW = (
    "the static heatmaps come from the dataset's script DataProcessing/DataPostProcessing/"
    "create_heatmap_images_and_or_videos.py (github.com/cxr-eye-gaze/eye-gaze-dataset), which writes "
    "<heatmap_dir>/<dicom_id>/heatmap.png"
)
# the largest RGB distance (0-255 per channel) accepted between a heatmap pixel and its nearest viridis colour
_VIRIDIS_TOLERANCE = 6.0


def _first(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _read_master_sheet(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{_DATASET}: {path} does not exist. Pass as root the PhysioNet release folder (egd-cxr/1.0.0) holding "
            f"{MASTER_SHEET}; nothing is downloaded."
        )
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    missing = [name for name in ("dicom_id", "path", *EGD_CXR_LABEL_COLUMNS) if name not in columns]
    if missing:
        raise ValueError(
            f"{_DATASET}: {path} lacks the column(s) {missing} (it has {sorted(columns)[:12]}...); pass the "
            f"published {MASTER_SHEET} unchanged."
        )
    return rows


def _label(row: Mapping[str, str]) -> int:
    """Index in :data:`EGD_CXR_CLASSES` of the one diagnosis column set to 1."""
    flags = []
    for column in EGD_CXR_LABEL_COLUMNS:
        value = str(row[column]).strip()
        try:
            flags.append(float(value) == 1.0 if value else False)
        except ValueError:
            raise ValueError(
                f"{_DATASET}: image {row['dicom_id']} has {column}={value!r}; the diagnosis columns "
                f"{', '.join(EGD_CXR_LABEL_COLUMNS)} hold 0 or 1."
            ) from None
    if sum(flags) != 1:
        set_columns = [column for column, flag in zip(EGD_CXR_LABEL_COLUMNS, flags) if flag]
        raise ValueError(
            f"{_DATASET}: image {row['dicom_id']} has the diagnosis {set_columns or 'none'}, not exactly one of "
            f"{', '.join(EGD_CXR_LABEL_COLUMNS)}: unknown class label. Fix or remove that row of {MASTER_SHEET} "
            f"(classes: {', '.join(EGD_CXR_CLASSES)})."
        )
    return flags.index(True)


def _image_file(image_dir: Path, relative: str) -> Path | None:
    """The MIMIC-CXR DICOM of the master sheet's ``path``, or the MIMIC-CXR-JPG file of the same name."""
    path = image_dir / relative
    if path.is_file():
        return path.resolve()
    jpg = path.with_suffix(".jpg")
    return jpg.resolve() if jpg.is_file() else None


def _image_size(path: Path) -> tuple[int, int]:
    """``(rows, columns)`` from the DICOM header or the JPG, pixels not decoded."""
    if path.suffix.lower() == ".dcm":
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.Rows), int(header.Columns)
    with Image.open(path) as image:
        return image.height, image.width


def _checked_id(value: str) -> str:
    """A master sheet's ``dicom_id``, refused unless it is a plain name (it names a folder and a file: ``../../x``
    would write outside them)."""
    dicom_id = value.strip()
    if not dicom_id or safe_stem(dicom_id) != dicom_id:
        raise ValueError(
            f"{_DATASET}: the dicom_id {value!r} of {MASTER_SHEET} is not a plain name (letters, digits, '.', '_', "
            "'-'); fix or remove that row."
        )
    return dicom_id


def _read_fixations(path: Path, dicom_ids: set[str]) -> dict[str, list[tuple[int, int]]]:
    """dicom_id -> (row, column) fixations (``Y_ORIGINAL``, ``X_ORIGINAL``) of ``fixations.csv``."""
    fixations: dict[str, list[tuple[int, int]]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in ("DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL") if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{_DATASET}: {path} lacks the column(s) {missing}; pass the published {FIXATIONS}.")
        for row in reader:
            dicom_id = row["DICOM_ID"].strip()
            if dicom_id not in dicom_ids:  # calibration images and images left out
                continue
            try:
                point = (int(float(row["Y_ORIGINAL"])), int(float(row["X_ORIGINAL"])))
            except ValueError:
                continue  # an empty coordinate: a gaze outside the image
            fixations.setdefault(dicom_id, []).append(point)
    return fixations


def _write_fixation_mask(path: Path, size: tuple[int, int], points: Sequence[tuple[int, int]]) -> None:
    mask = np.zeros(size, dtype=np.uint8)
    for row, column in points:
        if 0 <= row < size[0] and 0 <= column < size[1]:
            mask[row, column] = 1
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(mask).save(partial, format="PNG")
    os.replace(partial, path)


def egd_cxr_datalist(
    root: str | Path,
    image_dir: str | Path | None = None,
    heatmap_dir: str | Path | None = None,
    fixation_dir: str | Path | None = None,
    test_size: int = 100,
    validation_size: int = 100,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of EGD-CXR (see the module docstring for the layout, labels and entries).

    Args:
        root: the PhysioNet release folder holding ``master_sheet.csv`` (and ``fixations.csv``).
        image_dir: the MIMIC-CXR (or MIMIC-CXR-JPG) folder holding the master sheet's ``files/...`` paths;
            default ``root``.
        heatmap_dir: the folder of ``<dicom_id>/heatmap.png``; default ``root/fixation_heatmaps``.
        fixation_dir: where the fixation masks are written (created; existing files are kept); None: no
            ``fixations`` entries. Without ``root/fixations.csv`` a warning says NSS cannot be computed.
        test_size: images in ``test`` (the study: 100 of 1,083).
        validation_size: images in ``validation`` (early stopping and checkpoint choice).
        seed: seed of the split.

    Returns:
        ``{"training", "validation", "test"}`` lists, stratified by label, one patient's images in one list.

    Raises:
        FileNotFoundError: no master sheet; images missing, or no image with a heatmap (named, with where they come
            from). Images without a heatmap (the dataset's script writes none for the last image of each session)
            are left out with a warning.
        ValueError: a malformed master sheet, a ``dicom_id`` that is not a plain name, a row without exactly one
            diagnosis, or sizes that leave no training images.
    """
    root = Path(root).expanduser().resolve()
    image_dir = root if image_dir is None else Path(image_dir).expanduser().resolve()
    heatmap_dir = root / HEATMAP_FOLDER if heatmap_dir is None else Path(heatmap_dir).expanduser().resolve()
    rows = _read_master_sheet(root / MASTER_SHEET)
    entries, no_image, no_heatmap = [], [], []
    for row in rows:
        dicom_id = _checked_id(row["dicom_id"])
        label = _label(row)
        image = _image_file(image_dir, row["path"].strip())
        heatmap = heatmap_dir / dicom_id / HEATMAP_NAME
        if image is None:
            no_image.append(f"{dicom_id} ({image_dir / row['path'].strip()})")
            continue
        if not heatmap.is_file():
            no_heatmap.append(f"{dicom_id} ({heatmap})")
            continue
        entry = {"image": str(image), "gaze": str(heatmap), "label": label, "dicom_id": dicom_id}
        entry["patient_id"] = str(row.get("patient_id", dicom_id)).strip() or dicom_id
        entries.append(entry)
    if no_image:
        raise FileNotFoundError(
            f"{_DATASET}: {len(no_image)} image(s) of {MASTER_SHEET} are not under {image_dir}: {_first(no_image)}. "
            "Pass as image_dir the MIMIC-CXR folder (physionet.org/files/mimic-cxr/2.0.0, or MIMIC-CXR-JPG) holding "
            "the master sheet's files/... paths."
        )
    if no_heatmap and not entries:
        raise FileNotFoundError(
            f"{_DATASET}: no image has a gaze heatmap ({_first(no_heatmap)}). Pass as heatmap_dir the folder holding "
            f"<dicom_id>/{HEATMAP_NAME}; {_HEATMAP_HOW}."
        )
    if no_heatmap:
        # the dataset's own script writes no heatmap for the last image of each session
        warnings.warn(
            f"{_DATASET}: {len(no_heatmap)} image(s) have no gaze heatmap and are left out: {_first(no_heatmap)} "
            f"({_HEATMAP_HOW}; its script skips the last image of every session).",
            UserWarning,
            stacklevel=2,
        )
    if fixation_dir is not None:
        fixations_csv = root / FIXATIONS
        if fixations_csv.is_file():
            fixation_dir = Path(fixation_dir).expanduser().resolve()
            fixation_dir.mkdir(parents=True, exist_ok=True)
            points = _read_fixations(fixations_csv, {entry["dicom_id"] for entry in entries})
            for entry in entries:
                mask = fixation_dir / f"{entry['dicom_id']}.png"
                if not mask.exists():
                    _write_fixation_mask(mask, _image_size(Path(entry["image"])), points.get(entry["dicom_id"], []))
                entry["fixations"] = str(mask)
        else:
            warnings.warn(
                f"{_DATASET}: {fixations_csv} does not exist, so there are no fixation maps and NSS is not computed.",
                UserWarning,
                stacklevel=2,
            )
    training = len(entries) - test_size - validation_size
    if training <= 0 or test_size < 0 or validation_size < 0:
        raise ValueError(
            f"{_DATASET}: {len(entries)} images cannot give {test_size} test and {validation_size} validation images "
            "and still leave training images; lower test_size / validation_size."
        )
    fractions = {"training": training, "validation": validation_size, "test": test_size}
    return stratified_split(entries, fractions, seed=seed, group_key="patient_id")


def write_egd_cxr_datalist(root: str | Path, out_file: str | Path, **kwargs: Any) -> str:
    """Write :func:`egd_cxr_datalist` as JSON to ``out_file``; returns one line with the counts per list and class."""
    datalist = egd_cxr_datalist(root, **kwargs)
    path = write_datalist(datalist, out_file)
    return f"wrote {path}: {datalist_summary(datalist, EGD_CXR_CLASSES)}"


def _viridis() -> np.ndarray:
    """(256, 3) RGB 0-255 of matplotlib's viridis as ``plt.imsave`` writes it: the colour map's table truncated to 8
    bits (``Colormap(..., bytes=True)``), so the published PNGs' colours are found exactly."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8).astype(np.float64)


def read_gaze_heatmap(path: str | Path) -> np.ndarray:
    """A gaze heatmap file as a (rows, columns) float32 array in [0, 1].

    Accepts the published viridis-coloured ``heatmap.png`` (each colour mapped back to its position on the colour
    map: ``plt.imsave`` min-max scales the heatmap, so the result is the heatmap min-max scaled) and grey images
    (8- or 16-bit, divided by their type's maximum; an RGB image with R = G = B counts as grey).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a colour image whose colours are not viridis (the file is not such a heatmap).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gaze heatmap {path} does not exist; {_HEATMAP_HOW}.")
    with Image.open(path) as image:
        if image.mode in ("L", "I;16", "I", "F"):
            pixels = np.asarray(image)
            scale = {"L": 255.0, "I;16": 65535.0}.get(image.mode, float(max(pixels.max(), 1)))
            return (pixels.astype(np.float32) / scale).clip(0.0, 1.0)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return (rgb[..., 0] / 255.0).astype(np.float32)
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    distances = np.linalg.norm(colours[:, None, :] - _viridis()[None, :, :], axis=2)
    nearest = distances.min(axis=1, keepdims=True)
    worst = float(nearest.max())
    if worst > _VIRIDIS_TOLERANCE:
        raise ValueError(
            f"gaze heatmap {path} is a colour image whose colours are not matplotlib's viridis (a colour is "
            f"{worst:.0f} RGB levels from it): not a heatmap as {_HEATMAP_HOW}. Give the heatmap as that PNG or as a "
            "grey image (0 = no gaze)."
        )
    # the 8-bit table repeats two colours (levels 104 = 105, 137 = 138): such a colour decodes to their middle
    ties = distances == nearest
    levels = (ties * np.arange(256)).sum(axis=1) / ties.sum(axis=1)
    return (levels[inverse.reshape(-1)] / 255.0).reshape(rgb.shape[:2]).astype(np.float32)


class InvertDicomMonochrome1d(InvertMonochrome1d):
    """:class:`~monai_xai.data.InvertMonochrome1d` for a mix of MIMIC-CXR DICOMs and MIMIC-CXR-JPG files: a JPG is
    already bright = dense and is left as it is (``"monochrome1_inverted": False``)."""

    @staticmethod
    def _mirror_offset(meta: Mapping[str, Any]) -> float | None:
        if not str(meta.get("filename_or_obj", "")).lower().endswith(".dcm"):
            return None
        return InvertMonochrome1d._mirror_offset(meta)


class LoadGazeHeatmapd(MapTransform):
    """Load gaze heatmaps (:func:`read_gaze_heatmap`) as (1, columns, rows) float32 MetaTensors, the ``(x, y)`` order
    of MONAI's readers, on the grid of ``reference_key`` (the image, loaded before).

    The dataset's script pads a heatmap with one zero row / column when the image's height / width is odd; such a
    heatmap is cropped back to the image. Keys missing from an entry are skipped with ``allow_missing_keys``.

    Raises:
        ValueError: a heatmap whose size differs from the image's by more than that padding (the heatmap of another
            image, or the image resized since).
    """

    def __init__(
        self, keys: KeysCollection = "gaze", reference_key: str | None = "image", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            filename = str(d[key])
            heatmap = torch.from_numpy(read_gaze_heatmap(filename).T.copy())[None]  # (1, x, y)
            if self.reference_key is not None and self.reference_key in d:
                size = tuple(d[self.reference_key].shape[1:])
                extra = [have - want for have, want in zip(heatmap.shape[1:], size)]
                if len(size) != 2 or any(e not in (0, 1) for e in extra):
                    raise ValueError(
                        f"gaze heatmap {filename} is {heatmap.shape[2]} x {heatmap.shape[1]} (rows x columns), the "
                        f"image {d[self.reference_key].meta.get('filename_or_obj', '')} is {size[-1]} x {size[0]}: "
                        "the heatmap is not on the image's pixel grid (another image's, or one of them resized)."
                    )
                heatmap = heatmap[:, : size[0], : size[1]]
            d[key] = MetaTensor(heatmap.contiguous(), meta={"filename_or_obj": filename})
        return d


class PadResized(MapTransform, InvertibleTransform):
    """Pad each image symmetrically with zeros to the aspect ratio of ``spatial_size``, then resample it to
    ``spatial_size``: the whole radiograph, undistorted, on the network's grid. Invertible (``Invertd`` puts a
    prediction back on the original image's grid).

    Args:
        keys: keys of (C, x, y) images.
        spatial_size: the output size ``(x, y)``, e.g. ``(512, 640)``: 512 columns x 640 rows.
        mode: interpolation per key (``"bilinear"``, ``"area"``, ``"nearest"``, ...).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str | Sequence[str] = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size = tuple(int(size) for size in spatial_size)
        if len(self.spatial_size) != 2 or min(self.spatial_size) <= 0:
            raise ValueError(f"PadResized needs a 2D (x, y) spatial_size of positive sizes, got {spatial_size}.")
        self.padder = Pad()
        self.resizers = {
            key: Resize(self.spatial_size, mode=m, anti_aliasing=False)
            for key, m in zip(self.keys, ensure_tuple_rep(mode, len(self.keys)))
        }

    def padding(self, size: Sequence[int]) -> list[tuple[int, int]]:
        """``[(0, 0), (before, after) per axis]`` that brings ``size`` (x, y) to the target aspect ratio."""
        (x, y), (target_x, target_y) = size, self.spatial_size
        padded = (max(x, round(y * target_x / target_y)), max(y, round(x * target_y / target_x)))
        return [(0, 0)] + [((p - s) // 2, p - s - (p - s) // 2) for s, p in zip((x, y), padded)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 3:
                raise ValueError(f"PadResized: {key!r} must be a (C, x, y) image, got shape {tuple(image.shape)}.")
            padded = self.padder(image, to_pad=self.padding(image.shape[1:]))
            d[key] = self.resizers[key](padded)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.padder.inverse(self.resizers[key].inverse(d[key]))
        return d
