"""DICOM in and out: read a series folder as a MONAI image (series chosen, geometry of the files, modality rescale),
and write an explanation as standard DICOM objects of that series: a Parametric Map of the heat, a Segmentation of its
bins and a Structured Report of its metrics and description in words."""

from monai_xai.dicom.grid import Source, heat_frames, series_affine, to_series_grid
from monai_xai.dicom.parametric_map import write_parametric_map
from monai_xai.dicom.reader import SERIES_UID_KEY, DicomSeriesReader, is_dicom_series_path, register_dicom_reader
from monai_xai.dicom.report import write_explanation_sr
from monai_xai.dicom.segmentation import write_heat_seg
from monai_xai.dicom.series import (
    DicomSeries,
    SeriesSelector,
    find_series,
    read_volume,
    select_series,
    series_from_datasets,
    series_from_files,
)

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
