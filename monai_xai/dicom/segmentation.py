"""A heatmap's bins as a DICOM Segmentation: one segment per heat bin of the Slicer ``.seg.nrrd`` (same names, same
colours on the heat ramp), on the source series' frames, referencing its instances (highdicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import torch
from pydicom.dataset import Dataset

from monai_xai.atomic import atomic_path
from monai_xai.dicom.grid import (
    MANUFACTURER,
    SOFTWARE_VERSION,
    Source,
    as_series,
    explanation_code,
    heat_frames,
    private_code,
)
from monai_xai.heat_bins import heat_bins, quantize_heatmap

__all__ = ["write_heat_seg", "dicom_lab"]

HEAT_CATEGORY = private_code("heat", "Explanation heat")
HEAT_BIN = private_code("heat-bin", "Heat bin")
# sRGB (D65) to CIE XYZ, and the D65 white point
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def dicom_lab(rgb: Sequence[float]) -> list[int]:
    """An sRGB colour (components in [0, 1]) as DICOM's RecommendedDisplayCIELabValue: CIELab (D65) scaled to
    0..65535 (L* from 0..100, a* and b* from -128..127), the encoding of PS3.3 C.10.7.1.1."""
    linear = np.asarray(rgb, dtype=np.float64)
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    xyz = _SRGB_TO_XYZ @ linear / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness, a, b = 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    return [
        int(round(lightness * 65535 / 100)),
        int(round((a + 128) * 65535 / 255)),
        int(round((b + 128) * 65535 / 255)),
    ]


def write_heat_seg(
    path: str | Path,
    heat: Any,
    source: Source,
    method: str,
    n_bins: int = 10,
    min_heat: float = 0.1,
    affine: Any = None,
    series_number: int = 9002,
    series_description: str | None = None,
    model_name: str = "monai-xai",
) -> Dataset:
    """Write the heat bins of ``heat`` as a DICOM SEG (binary segments) of the source series.

    Bin ``k`` (1..n_bins) holds the voxels with heat in ``[(k - 1)/n, k/n)`` (the last includes 1) and heat >=
    ``min_heat``; it is segment ``k``, labelled as the ``.seg.nrrd`` / MONAI Label bins (``"heat 0.9-1.0"``, from
    :func:`monai_xai.heat_bins.heat_bins`), with the bin's colour (RecommendedDisplayCIELabValue), segmented property
    category "Explanation heat" and type "Heat bin" (private codes, scheme ``99MONAIXAI``), and the algorithm
    ``<method>`` (automatic). Every bin is described, also one that holds no voxel (it then has no frame). Frames lie
    on the source slices (their ImagePositionPatient, orientation, spacing and frame of reference) and refer to them.

    Args:
        path: the file to write (e.g. ``<case>_<method>_seg.dcm``).
        heat: (1, columns, rows, slices) or (columns, rows, slices) float in [0, 1] on the source series' grid, in
            :class:`~monai_xai.dicom.DicomSeriesReader`'s layout (see :func:`~monai_xai.dicom.heat_frames`).
        source: the explained series or its slices' headers in any order.
        method: the CAM method (the segments' algorithm name).
        n_bins: number of equal heat bins, 1 to 255.
        min_heat: heat below this is in no segment, in [0, 1].
        affine: the heat's (4, 4) RAS affine when ``heat`` is not a MetaTensor (checked; None: no check).
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription; default ``"<method> heat bins"``.
        model_name: the explained model (ManufacturerModelName).

    Returns:
        the written dataset.

    Raises:
        ValueError: a heat that is not on the series' grid or not in [0, 1]; ``n_bins`` or ``min_heat`` out of range.
    """
    if not 0.0 <= min_heat <= 1.0:
        raise ValueError(f"min_heat must be in [0, 1], got {min_heat}.")
    bins = heat_bins(n_bins)
    series = as_series(source)
    frames = heat_frames(heat, series, affine)
    labels = quantize_heatmap(torch.from_numpy(frames), n_bins, min_heat).numpy()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"monai-xai {method}", version=SOFTWARE_VERSION, family=explanation_code(method)
    )
    descriptions = []
    for heat_bin in bins:
        description = hd.seg.SegmentDescription(
            segment_number=heat_bin.label,
            segment_label=heat_bin.name,
            segmented_property_category=HEAT_CATEGORY,
            segmented_property_type=HEAT_BIN,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        description.RecommendedDisplayCIELabValue = dicom_lab(heat_bin.color)
        descriptions.append(description)
    segmentation = hd.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        content_label=method.upper().replace("-", "_")[:16],
        content_description=f"{method} heat bins"[:64],
    )
    segmentation.SeriesDescription = series_description or f"{method} heat bins"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        segmentation.save_as(partial)
    return segmentation
