"""DICOM image series in a folder: found, told apart, put in slice order, given their geometry, read as a volume.

Geometry is taken from the files, never from their names or order on disk: slices are sorted along the normal of
ImageOrientationPatient (the cross product of the row and column directions), ImagePositionPatient gives the origin
and the slice step, PixelSpacing the in-plane spacing; the step must be the same between every pair of neighbouring
slices (a missing slice is an error, not a silent stretch).

Voxel convention (the one MONAI's ITK and pydicom readers use): a volume is indexed ``[i, j, k]`` with ``i`` the column
of a slice (along the row direction), ``j`` its row (along the column direction) and ``k`` the slice in sorted order;
:attr:`DicomSeries.affine_lps` maps ``(i, j, k, 1)`` to patient LPS coordinates in millimetres.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

__all__ = [
    "DicomSeries",
    "SeriesSelector",
    "find_series",
    "is_dicom_file",
    "select_series",
    "series_from_datasets",
    "series_from_files",
    "read_volume",
]

# a series is chosen by its SeriesInstanceUID, its SeriesNumber, or a predicate on the series
SeriesSelector = str | int | Callable[["DicomSeries"], bool] | None
# tolerance of the geometry checks: orientation cosines, relative spacing
_TOLERANCE = 1e-3
# tolerance of the slice step, relative to it
_STEP_TOLERANCE = 0.05
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@dataclass(frozen=True, eq=False)  # compared by identity: it holds arrays and datasets
class DicomSeries:
    """One image series, its slices in order along the slice normal.

    Attributes:
        uid: SeriesInstanceUID.
        number: SeriesNumber (None when absent).
        description: SeriesDescription ("" when absent).
        modality: Modality, e.g. ``"CT"``, ``"MR"``.
        files: the slices' files, in slice order (k = 0, 1, ...); empty paths for a series built from datasets alone.
        datasets: the slices' datasets, same order: headers read without pixel data from files, or the datasets a
            series was built from; what the DICOM writers reference.
        affine_lps: (4, 4) float64, voxel ``(i, j, k)`` (column, row, slice) to patient LPS millimetres.
        shape: ``(columns, rows, slices)``, the volume's shape in the voxel convention above.
    """

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...]
    datasets: tuple[Dataset, ...]
    affine_lps: np.ndarray
    shape: tuple[int, int, int]

    def summary(self) -> str:
        """One line naming the series, for messages and listings."""
        return (
            f"SeriesNumber {self.number}, {self.modality} {self.description!r}, {len(self.files)} slices "
            f"{self.shape[0]}x{self.shape[1]}, SeriesInstanceUID {self.uid}"
        )


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with path.open("rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _slice_geometry(datasets: Sequence[Dataset], uid: str) -> tuple[list[int], np.ndarray]:
    """The slice order along the normal and the (4, 4) LPS affine of a series' headers.

    Raises:
        ValueError: headers without geometry, slices of different size, orientation or spacing, two slices at one
            position, or an uneven slice step (a missing slice); the message names the series.
    """
    for dataset in datasets:
        missing = [tag for tag in _GEOMETRY_TAGS if tag not in dataset]
        if missing:
            raise ValueError(
                f"series {uid}: {dataset.get('SOPInstanceUID', '?')} has no {missing}; only image series with a "
                "patient geometry (CT, MR, PET, ...) can be explained."
            )
    orientation = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    spacing = np.array([[float(v) for v in ds.PixelSpacing] for ds in datasets])
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1 or np.abs(orientation - orientation[0]).max() > _TOLERANCE:
        raise ValueError(
            f"series {uid}: slices differ in size {sorted(sizes)} or orientation; it is not one volume (select the "
            "series of one acquisition, or split it)."
        )
    if np.abs(spacing - spacing[0]).max() > _TOLERANCE * spacing[0].max():
        raise ValueError(f"series {uid}: slices differ in PixelSpacing; it is not one volume.")
    row_direction, column_direction = orientation[0, :3], orientation[0, 3:]
    normal = np.cross(row_direction, column_direction)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    affine = np.eye(4)
    # PixelSpacing is (row spacing, column spacing): the distance between rows, then between columns
    affine[:3, 0] = row_direction * spacing[0, 1]
    affine[:3, 1] = column_direction * spacing[0, 0]
    affine[:3, 3] = positions[0]
    if len(positions) > 1:
        steps = np.diff(positions, axis=0)
        step = steps.mean(axis=0)
        # a missing slice doubles one step; scanners round positions by far less than 5 % of a step
        if np.linalg.norm(step) < _TOLERANCE or np.abs(steps - step).max() > _STEP_TOLERANCE * np.linalg.norm(step):
            raise ValueError(
                f"series {uid}: the slice positions are not evenly spaced (steps {np.linalg.norm(steps, axis=1)} mm "
                "along the normal): a slice is missing or duplicated; complete the series or select another."
            )
        affine[:3, 2] = step
    else:
        affine[:3, 2] = normal * float(datasets[0].get("SliceThickness", 1.0) or 1.0)
    return [int(index) for index in order], affine


def series_from_files(files: Sequence[str | Path]) -> DicomSeries:
    """The series made of ``files`` (one series, any order on disk).

    Raises:
        ValueError: no files, files of several series, or a geometry that is not one volume (see the module docstring).
    """
    paths = [Path(file) for file in files]
    if not paths:
        raise ValueError("no DICOM files given for the series.")
    return series_from_datasets([pydicom.dcmread(path, stop_before_pixels=True) for path in paths], paths)


def series_from_datasets(datasets: Sequence[Dataset], files: Sequence[Path] | None = None) -> DicomSeries:
    """The series made of the slices' headers ``datasets`` (any order), e.g. those a DICOM datastore handed over.

    Args:
        datasets: one series' slices (pixel data not needed).
        files: the files they were read from, same order (None: the series cannot be read with :func:`read_volume`).

    Raises:
        ValueError: no datasets, datasets of several series, or a geometry that is not one volume.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("no DICOM datasets given for the series.")
    paths = list(files) if files is not None else [Path() for _ in datasets]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise ValueError(f"the files belong to {len(uids)} series {sorted(uids)}; give the files of one series.")
    uid = uids.pop()
    order, affine = _slice_geometry(datasets, uid)
    first = datasets[order[0]]
    number = first.get("SeriesNumber")
    return DicomSeries(
        uid=uid,
        number=None if number in (None, "") else int(number),
        description=str(first.get("SeriesDescription", "")),
        modality=str(first.get("Modality", "")),
        files=tuple(paths[index] for index in order),
        datasets=tuple(datasets[index] for index in order),
        affine_lps=affine,
        shape=(int(first.Columns), int(first.Rows), len(order)),
    )


def find_series(folder: str | Path) -> list[DicomSeries]:
    """Every image series under ``folder`` (searched recursively), by SeriesNumber then UID.

    Files that are not DICOM, and DICOM objects without image geometry (structured reports, segmentations,
    presentation states, ...) are left out.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no DICOM image series.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the folder holding the DICOM series.")
    by_series: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_dicom_file(path):
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", *_GEOMETRY_TAGS]
            )
            if all(tag in header for tag in _GEOMETRY_TAGS):
                by_series.setdefault(str(header.SeriesInstanceUID), []).append(path)
    if not by_series:
        raise FileNotFoundError(f"{root} holds no DICOM image series (files with ImagePositionPatient and pixels).")
    found = [series_from_files(files) for files in by_series.values()]
    return sorted(found, key=lambda series: (series.number is None, series.number or 0, series.uid))


def select_series(series: Sequence[DicomSeries], selector: SeriesSelector = None) -> DicomSeries:
    """The one series that ``selector`` picks.

    Args:
        series: candidates, e.g. from :func:`find_series`.
        selector: None (the only series; an error when there are several), a SeriesInstanceUID (str), a
            SeriesNumber (int, or a str of digits), or a predicate ``series -> bool`` that exactly one series passes.

    Raises:
        ValueError: no series or several match; the message lists the series and how to pick one.
    """

    def matches(candidate: DicomSeries) -> bool:
        if selector is None:
            return True
        if callable(selector):
            return bool(selector(candidate))
        if isinstance(selector, int) or (isinstance(selector, str) and selector.isdigit()):
            return candidate.number == int(selector) or candidate.uid == str(selector)
        return candidate.uid == selector

    chosen = [candidate for candidate in series if matches(candidate)]
    if len(chosen) == 1:
        return chosen[0]
    listing = "\n".join(f"  - {candidate.summary()}" for candidate in series)
    problem = "no series matches" if not chosen else f"{len(chosen)} series match"
    raise ValueError(
        f"{problem} the selection {selector!r}; pick one by its SeriesInstanceUID or SeriesNumber "
        f"(DicomSeriesReader(series=...)). The series:\n{listing}"
    )


def read_volume(series: DicomSeries) -> np.ndarray:
    """The series' voxels, ``[i, j, k]`` (column, row, slice) float32, with the modality rescale applied
    (RescaleSlope * stored value + RescaleIntercept, per slice; e.g. Hounsfield units for CT).

    Pixels come from the datasets when they hold them (a series built from in-memory datasets, e.g. a DICOM datastore's
    or MONAI Deploy's), else from the files.

    Raises:
        ValueError: a slice whose pixels are not one grey-scale frame of the series' size, or neither in its dataset
            nor in a file.
    """
    volume = np.empty(series.shape, dtype=np.float32)
    for index, (dataset, path) in enumerate(zip(series.datasets, series.files)):
        if "PixelData" not in dataset:
            if not path.is_file():
                raise ValueError(
                    f"slice {dataset.get('SOPInstanceUID', index)} has no pixels in its dataset and no file; build the "
                    "series from full datasets or from files."
                )
            dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        if pixels.shape != (series.shape[1], series.shape[0]):
            raise ValueError(
                f"slice {dataset.get('SOPInstanceUID', index)}: pixels of shape {pixels.shape}, expected one "
                f"grey-scale frame (rows, columns) = {(series.shape[1], series.shape[0])}; multi-frame and colour "
                "images are not read as a series."
            )
        slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
        volume[:, :, index] = (pixels.astype(np.float64) * slope + intercept).T
    return volume
