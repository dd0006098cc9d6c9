"""``DicomSeriesReader``: a MONAI image reader for DICOM series folders, so a bundle's own ``LoadImaged`` reads a
series (with the series chosen, the geometry of the files and the modality rescale) as it reads a NIfTI file.

Use it in a bundle's preprocessing (``"reader": {"_target_": "monai_xai.dicom.DicomSeriesReader"}`` in ``LoadImaged``)
or add it to an existing transform with :func:`register_dicom_reader`: it then takes the paths that are DICOM series
(a folder holding DICOM files, or a list of one series' files) and leaves every other path to MONAI's readers, so a
datalist may mix NIfTI files and series folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.transforms import Compose, LoadImage, LoadImaged
from monai.utils import MetaKeys, SpaceKeys

from monai_xai.dicom.series import (
    DicomSeries,
    SeriesSelector,
    find_series,
    is_dicom_file,
    read_volume,
    select_series,
    series_from_files,
)

__all__ = ["DicomSeriesReader", "register_dicom_reader", "SERIES_UID_KEY", "is_dicom_series_path"]

# the meta-data key holding the SeriesInstanceUID of the series a volume was read from (what the DICOM writers need
# to find the source headers again: monai_xai.dicom.source_series)
SERIES_UID_KEY = "dicom_series_uid"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_series_path(path: str | Path | Sequence[str | Path]) -> bool:
    """True for a folder holding at least one DICOM file (searched recursively), or a list of DICOM files."""
    if isinstance(path, str | Path):
        folder = Path(path)
        if not folder.is_dir():
            return False
        return any(is_dicom_file(file) for file in folder.rglob("*") if file.is_file())
    paths = [Path(item) for item in path]
    if len(paths) == 1 and paths[0].is_dir():  # LoadImage hands every path over as a tuple
        return is_dicom_series_path(paths[0])
    return bool(paths) and all(is_dicom_file(item) for item in paths)


class DicomSeriesReader(ImageReader):
    """Read one DICOM series as a MONAI image: array ``[i, j, k]`` (column, row, slice in order along the normal),
    float32 with RescaleSlope/RescaleIntercept applied, and its affine from the files' geometry.

    Args:
        series: which series of a folder holding several: None (the folder's only image series; several raise an
            error listing them), a SeriesInstanceUID, a SeriesNumber, or a predicate ``DicomSeries -> bool``
            (:func:`monai_xai.dicom.select_series`). A list of files is always one series.
        affine_lps_to_ras: give the affine in RAS (MONAI's convention, default) instead of DICOM's LPS.

    Meta data (``get_data``): ``affine`` and ``original_affine`` (4, 4), ``spatial_shape``, ``space`` (RAS or LPS),
    ``original_channel_dim`` = "no_channel", and ``dicom_series_uid`` (:data:`SERIES_UID_KEY`); ``LoadImage`` adds
    ``filename_or_obj`` (the folder, or the first file of a list).
    """

    def __init__(self, series: SeriesSelector = None, affine_lps_to_ras: bool = True) -> None:
        super().__init__()
        self.series = series
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True for a DICOM series folder or a list of DICOM files (see :func:`is_dicom_series_path`)."""
        return is_dicom_series_path(filename)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> DicomSeries:
        """The chosen series of a folder, or the series made of a list of files.

        Raises:
            FileNotFoundError: a folder without DICOM image series.
            ValueError: no or several series match ``series``; a series that is not one volume.
        """
        if isinstance(data, str | Path):
            return select_series(find_series(data), self.series)
        paths = [Path(item) for item in data]
        if len(paths) == 1 and paths[0].is_dir():
            return select_series(find_series(paths[0]), self.series)
        return series_from_files(paths)

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        """``(volume [i, j, k] float32, meta)`` of a series from :meth:`read`."""
        affine = _LPS_TO_RAS @ img.affine_lps if self.affine_lps_to_ras else img.affine_lps.copy()
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(img.shape),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
            SERIES_UID_KEY: img.uid,
        }
        return read_volume(img), meta


def register_dicom_reader(transform: Any, reader: DicomSeriesReader | None = None) -> int:
    """Let every ``LoadImage``/``LoadImaged`` in ``transform`` (a transform or a ``Compose``, nested too) read DICOM
    series folders with ``reader`` first; other paths still go to the readers they went to.

    A loader that already has a :class:`DicomSeriesReader` keeps it (a bundle that names one, with its own series
    selection; or a transform registered before, which a server reuses for every request) and is not counted.

    Args:
        transform: e.g. a bundle's ``preprocessing``.
        reader: default ``DicomSeriesReader()`` (the folder's only series).

    Returns:
        the number of loaders changed (0: the transform loads nothing, e.g. it starts from arrays, or every loader
        already reads DICOM series).
    """
    reader = reader or DicomSeriesReader()
    if isinstance(transform, LoadImage | LoadImaged):
        loader = getattr(transform, "_loader", transform)  # LoadImaged keeps its readers on its LoadImage
        if any(isinstance(known, DicomSeriesReader) for known in loader.readers):
            return 0
        transform.register(reader)
        return 1
    if isinstance(transform, Compose):
        return sum(register_dicom_reader(inner, reader) for inner in transform.transforms)
    return 0
