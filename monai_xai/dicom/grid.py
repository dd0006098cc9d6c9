"""A heatmap on a source series' grid, checked and laid out as the series' frames; the identity every written
object shares (manufacturer, software, the private code of an explanation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

import monai_xai
from monai_xai.dicom.series import DicomSeries, series_from_datasets

__all__ = [
    "Source",
    "as_series",
    "heat_frames",
    "series_affine",
    "CODING_SCHEME",
    "MANUFACTURER",
    "explanation_code",
    "private_code",
    "to_series_grid",
]

# what the writers accept as the explained series: the series, or its slices' headers in any order
Source = DicomSeries | Sequence[Dataset]
# private coding scheme of the concepts DICOM has no code for (a CAM method, a heat bin); "99" marks it private
CODING_SCHEME = "99MONAIXAI"
MANUFACTURER = "monai-xai"
SOFTWARE_VERSION = monai_xai.__version__
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def private_code(name: str, meaning: str) -> Code:
    """A code of the private scheme: value ``name`` cut to 16 characters (a CodeValue's limit; longer values would
    need LongCodeValue, which some readers, highdicom's own SR search among them, do not read), meaning in full."""
    return Code(name[:16], CODING_SCHEME, meaning)


def explanation_code(method: str) -> Code:
    """The coded concept of ``method``'s class-activation map, e.g. ``hirescam``."""
    return private_code(method, f"Class-activation map ({method})")


def as_series(source: Source) -> DicomSeries:
    """The :class:`DicomSeries` of ``source`` (headers in any order are put in slice order)."""
    return source if isinstance(source, DicomSeries) else series_from_datasets(source)


def series_affine(series: DicomSeries, space: SpaceKeys | str = SpaceKeys.RAS) -> np.ndarray:
    """(4, 4) voxel ``(i, j, k)`` to world affine of ``series`` in RAS (MONAI's convention) or LPS (DICOM's)."""
    return _LPS_TO_RAS @ series.affine_lps if str(space) == str(SpaceKeys.RAS) else series.affine_lps.copy()


def heat_frames(
    heat: Any, series: DicomSeries, affine: Any = None, space: SpaceKeys | str = SpaceKeys.RAS
) -> np.ndarray:
    """``heat`` on the series' grid as frames ``[k, row, column]``, float32, one per slice in the series' order.

    Args:
        heat: (1, columns, rows, slices) or (columns, rows, slices) array, tensor or MetaTensor, values in [0, 1], on
            the series' grid in :class:`~monai_xai.dicom.DicomSeriesReader`'s layout ``[i, j, k]``: what a bundle's
            maps are after inversion onto the original image (e.g. MONAI's ``Invertd`` of the preprocessing).
        series: the source series.
        affine: the heat's (4, 4) voxel-to-world affine, checked against the series' geometry; default: a
            MetaTensor's own affine (its ``space`` meta says RAS or LPS), else no check.
        space: the space of an ``affine`` passed here, RAS (default, MONAI's) or LPS.

    Raises:
        ValueError: a shape or affine that is not the series' grid (resample onto the series first), values outside
            [0, 1] or not finite.
    """
    if isinstance(heat, MetaTensor) and affine is None:
        affine, space = heat.affine, heat.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)
    array = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape != tuple(series.shape):
        raise ValueError(
            f"the heatmap has shape {array.shape} but the series' grid is (columns, rows, slices) = {series.shape}: "
            "put the map back onto the series' grid first (invert the preprocessing, e.g. with Invertd)."
        )
    if affine is not None:
        affine = np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
        expected = series_affine(series, space)
        tolerance = 1e-3 * np.abs(expected[:3, :3]).max()
        if affine.shape != (4, 4) or np.abs(affine - expected).max() > max(tolerance, 1e-4):
            raise ValueError(
                f"the heatmap's affine\n{np.round(affine, 4)}\nis not the series' ({space})\n{np.round(expected, 4)}\n"
                "so its voxels are not the series' voxels: resample the map onto the series' grid first."
            )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"heat values must be finite and in [0, 1], got range [{np.nanmin(array)}, {np.nanmax(array)}]; "
            "normalise the map (the engine's maps are in [0, 1])."
        )
    return np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32)


def to_series_grid(heat: MetaTensor, series: DicomSeries, mode: str = "bilinear") -> MetaTensor:
    """``heat`` resampled by world coordinates onto the series' grid, in the layout the writers take.

    For a map on another grid of the same anatomy, e.g. a NIfTI that a DICOM datastore converted the series to (MONAI
    Label's DICOMweb datastore), whose axes may be ordered or flipped differently. Voxels outside ``heat``'s field of
    view get 0.

    Args:
        heat: (1, *spatial) MetaTensor with its RAS affine (MONAI's convention), values in [0, 1].
        series: the target series.
        mode: interpolation, ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.

    Returns:
        (1, columns, rows, slices) MetaTensor with the series' RAS affine, values clipped to [0, 1].
    """
    if str(heat.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)) != str(SpaceKeys.RAS):
        raise ValueError("to_series_grid takes a heat with a RAS affine (MONAI's default); convert an LPS one first.")
    target = torch.as_tensor(series_affine(series), dtype=torch.float64)
    resampled = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)(
        heat.double(), dst_affine=target, spatial_size=series.shape
    )
    return resampled.clamp(0, 1).float()
