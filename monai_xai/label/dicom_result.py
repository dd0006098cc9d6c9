"""A MONAI Label explain request's result as a DICOM SEG of the series the image came from (``result_volume:
"dicom_seg"``), for a study held in a DICOM datastore (DICOMweb, e.g. Orthanc) that OHIF or a PACS shows next to it.

MONAI Label's DICOMweb datastore caches a series as the folder ``<studies>/<SeriesInstanceUID>/`` and hands the task
either that folder or the NIfTI it converted it to, ``<studies>/<SeriesInstanceUID>.nii.gz``; :func:`datastore_series`
finds the series either way. The heatmap, on the loaded image's grid, is resampled onto the series' grid by world
coordinates (the converted NIfTI may order or flip the axes otherwise) and written with the bins of the ``.seg.nrrd``
(:func:`~monai_xai.dicom.write_heat_seg`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from monai.data import MetaTensor

import monai_xai.dicom as dicom_io
from monai_xai.dicom import DicomSeries, find_series, is_dicom_series_path, select_series, to_series_grid
from monai_xai.naming import strip_image_suffix

__all__ = ["datastore_series", "write_dicom_seg_result", "DICOM_SEG_SUFFIX"]

DICOM_SEG_SUFFIX = ".dcm"


def _series_folder(image: str | Path) -> Path | None:
    path = Path(image)
    if path.is_dir():
        return path if is_dicom_series_path(path) else None
    cached = path.parent / strip_image_suffix(path.name)
    return cached if cached != path and cached.is_dir() and is_dicom_series_path(cached) else None


def datastore_series(image: str | Path) -> DicomSeries | None:
    """The DICOM series a request's image is: the image itself when it is a series folder, else the series folder a
    DICOM datastore cached next to the NIfTI it converted (``<id>/`` beside ``<id>.nii.gz``); None when there is none.

    Raises:
        ValueError: a folder holding several image series (a datastore's cache holds one).
    """
    folder = _series_folder(image)
    if folder is None:
        return None
    return select_series(find_series(folder))


def write_dicom_seg_result(
    heatmap: torch.Tensor,
    affine: torch.Tensor,
    series: DicomSeries,
    method: str,
    n_bins: int,
    min_heat: float,
    model_name: str,
) -> str:
    """Write the heat bins of ``heatmap`` as a DICOM SEG of ``series`` into a temporary file (MONAI Label sends the
    result file and then removes it) and return its path.

    Args:
        heatmap: (*spatial) float heat in [0, 1] on the loaded image's grid.
        affine: (4, 4) RAS voxel-to-world affine of that grid.
        series: the source series (:func:`datastore_series`).
        method, n_bins, min_heat, model_name: as :func:`~monai_xai.dicom.write_heat_seg`'s.
    """
    pixels = heatmap.as_tensor() if isinstance(heatmap, MetaTensor) else torch.as_tensor(heatmap)
    heat = MetaTensor(pixels.float()[None], affine=torch.as_tensor(affine))
    on_series = to_series_grid(heat, series)
    with tempfile.NamedTemporaryFile(suffix=DICOM_SEG_SUFFIX, delete=False) as file:
        path = file.name
    dicom_io.write_heat_seg(path, on_series, series, method, n_bins, min_heat, model_name=model_name)
    return path
