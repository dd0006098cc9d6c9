"""DICOM in and out: read a series folder as a MONAI image (series chosen, geometry of the files, modality rescale),
and write an explanation as standard DICOM objects of that series: a Parametric Map of the heat, a Segmentation of its
bins and a Structured Report of its metrics and description in words."""

import importlib
from typing import Any

from monai_xai.dicom.grid import Source, heat_frames, series_affine, to_series_grid
from monai_xai.dicom.reader import SERIES_UID_KEY, DicomSeriesReader, is_dicom_series_path, register_dicom_reader
from monai_xai.dicom.series import (
    DicomSeries,
    SeriesSelector,
    find_series,
    read_volume,
    select_series,
    series_from_datasets,
    series_from_files,
)

# The writers need highdicom (the extra "dicom"); reading a series does not, so every run can read DICOM and the writers
# are imported when first asked for.
_WRITERS = {
    "write_parametric_map": "parametric_map",
    "write_heat_seg": "segmentation",
    "write_explanation_sr": "report",
}


def __getattr__(name: str) -> Any:
    if name not in _WRITERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{_WRITERS[name]}")
    except ModuleNotFoundError as error:
        if error.name != "highdicom":
            raise
        raise ModuleNotFoundError(
            f"monai_xai.dicom.{name} writes DICOM objects with highdicom, which is not installed: "
            "pip install 'monai-xai[dicom]'.",
            name="highdicom",
        ) from error
    return getattr(module, name)


__all__ = [
    "DicomSeries",
    "DicomSeriesReader",
    "SERIES_UID_KEY",
    "SeriesSelector",
    "Source",
    "find_series",
    "heat_frames",
    "is_dicom_series_path",
    "read_volume",
    "register_dicom_reader",
    "select_series",
    "series_affine",
    "series_from_datasets",
    "series_from_files",
    "to_series_grid",
    "write_explanation_sr",
    "write_heat_seg",
    "write_parametric_map",
]
