"""Heatmaps for viewers: resampling back onto the input image's grid, quantising into named, coloured bins, and
describing in words.

3D Slicer's MONAI Label module loads every inference result as a ``uint8`` label map whose values it turns into
segments, one per label name. A heatmap in [0, 1] is therefore also delivered as a label map: the unit interval is cut
into ``n_bins`` equal bins, bin ``k`` (1-based) covers ``[(k - 1) / n, k / n)`` (the last bin includes 1), is written as
label value ``k`` and named e.g. ``"heat 0.5-0.6"``; voxels below ``min_heat`` get label 0 (no segment), so the cold
background does not cover the image. Each bin carries a colour of a perceptual dark-to-bright ramp (matplotlib's
``plasma``: violet, magenta, orange, yellow), whose lightness rises steadily with the heat, so hotter reads brighter in
colour and in grey alike. ``result_volume="segments"`` returns the bins as a Slicer segmentation file with these names
and colours (:mod:`monai_xai.label.seg_nrrd`). The result JSON also says in words what the heatmap shows
(:class:`DescribeHeatmapd`). The bins themselves are :mod:`monai_xai.heat_bins` (re-exported here), shared with the
DICOM SEG writer.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialResample

from monai_xai.describe import describe
from monai_xai.heat_bins import HeatBin, heat_bins, heat_color, quantize_heatmap

__all__ = [
    "HeatBin",
    "heat_bins",
    "heat_color",
    "quantize_heatmap",
    "resample_to_grid",
    "HeatmapToInputGridd",
    "QuantizeHeatmapd",
    "DescribeHeatmapd",
]

logger = logging.getLogger(__name__)


def resample_to_grid(
    volume: MetaTensor,
    dst_affine: torch.Tensor | np.ndarray,
    spatial_size: Sequence[int],
    mode: str = "bilinear",
) -> MetaTensor:
    """Resample a channel-first volume onto another voxel grid of the same world space.

    The voxel-to-world affines say where every voxel lies, so this undoes any chain of spatial preprocessing
    (orientation, spacing, crop, pad, resize) that kept ``volume.affine`` up to date, as MONAI's spatial transforms do;
    it needs no invertible-transform trace. World points outside ``volume`` get 0.

    Args:
        volume: (C, *spatial) MetaTensor whose ``affine`` maps its voxels to world (RAS, mm) coordinates.
        dst_affine: (r + 1, r + 1) voxel-to-world affine of the destination grid (r = number of spatial dims).
        spatial_size: destination shape (r ints).
        mode: ``"bilinear"`` (heatmaps) or ``"nearest"`` (masks).

    Returns:
        (C, *spatial_size) float32 MetaTensor with ``affine == dst_affine``.
    """
    if not isinstance(volume, MetaTensor):
        raise TypeError(f"volume must be a MetaTensor carrying its affine, got {type(volume).__name__}.")
    rank = volume.ndim - 1
    dst_affine = torch.as_tensor(np.asarray(dst_affine), dtype=torch.float64)
    if tuple(dst_affine.shape) != (rank + 1, rank + 1) or len(spatial_size) != rank:
        raise ValueError(
            f"a (C, *spatial) volume with {rank} spatial dims needs a ({rank + 1}, {rank + 1}) dst_affine and "
            f"{rank} spatial sizes, got {tuple(dst_affine.shape)} and {tuple(spatial_size)}."
        )
    resampler = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)
    resampled = resampler(volume, dst_affine=dst_affine, spatial_size=[int(s) for s in spatial_size])
    return resampled.float()


class HeatmapToInputGridd(MapTransform):
    """Put heatmaps computed on the preprocessed image back onto the grid of the image as it was loaded.

    The loaded grid is read from the preprocessed image's meta (``original_affine`` and ``spatial_shape``, written by
    ``LoadImage``); values are clamped to [0, 1] after the bilinear resampling.

    Args:
        keys: keys of (C, *spatial) MetaTensor heatmaps on the preprocessed grid.
        image_key: key of the preprocessed image (MetaTensor) whose meta holds the loaded grid.
        meta_key_postfix: the heatmap's meta dict ``f"{key}_{postfix}"`` receives ``affine`` (the loaded affine), as
            MONAI Label's writer expects.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", meta_key_postfix: str = "meta_dict") -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d[self.image_key]
        meta = image.meta if isinstance(image, MetaTensor) else {}
        original_affine, spatial_shape = meta.get("original_affine"), meta.get("spatial_shape")
        if original_affine is None or spatial_shape is None:
            raise ValueError(
                f"{self.image_key!r} has no 'original_affine'/'spatial_shape' meta; load it with MONAI's LoadImage "
                "(a file path), not as an in-memory array."
            )
        spatial_shape = [int(s) for s in np.asarray(spatial_shape).reshape(-1)]
        for key in self.key_iterator(d):
            heatmap = d[key]
            if not isinstance(heatmap, MetaTensor):
                heatmap = MetaTensor(heatmap, affine=image.affine)
            d[key] = resample_to_grid(heatmap, original_affine, spatial_shape[-(heatmap.ndim - 1) :]).clamp(0, 1)
            d.setdefault(f"{key}_{self.meta_key_postfix}", {})["affine"] = np.asarray(original_affine)
        return d


class QuantizeHeatmapd(MapTransform):
    """Dictionary wrapper of :func:`quantize_heatmap`: heatmaps in [0, 1] to uint8 label maps of ``n_bins`` bins.

    Args:
        keys: keys of heatmap tensors in [0, 1].
        n_bins: number of equal bins, 1 to 255.
        min_heat: voxels below this get label 0.
    """

    def __init__(self, keys: KeysCollection, n_bins: int, min_heat: float = 0.0) -> None:
        super().__init__(keys)
        heat_bins(n_bins)
        self.n_bins = n_bins
        self.min_heat = min_heat

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            heatmap = d[key]
            labels = quantize_heatmap(torch.as_tensor(heatmap), self.n_bins, self.min_heat)
            d[key] = MetaTensor(labels, meta=heatmap.meta) if isinstance(heatmap, MetaTensor) else labels
        return d


class DescribeHeatmapd(MapTransform):
    """Describe a heatmap in words into the result JSON: ``"description"`` (the text) and ``"description_fields"``
    (the numbers behind it, :meth:`~monai_xai.describe.CaseDescription.as_dict`, non-finite values as null).

    Put it after :class:`HeatmapToInputGridd`: the heatmap then lies on the grid of the image as it was loaded, whose
    affine (RAS, as MONAI loads it) gives millimetres and, in 3D, the patient's sides. A heatmap that cannot be
    described is logged and gets an empty text and no fields; the heatmap itself is returned all the same.

    Args:
        keys: key of the (1, *spatial) MetaTensor heatmap (one key: the JSON holds one description).
        json_key: key of the result JSON dict in the data (MONAI Label's ``output_json_key``).
        describe_args: keyword arguments of :func:`~monai_xai.describe.describe` (``probabilities``,
            ``class_names``, ``explained``, ``calibrated``, ``method``, ...).
    """

    def __init__(self, keys: KeysCollection, json_key: str = "result", **describe_args: Any) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"DescribeHeatmapd describes one heatmap, got keys {self.keys}.")
        self.json_key = json_key
        self.describe_args = describe_args

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        result = d.setdefault(self.json_key, {})
        for key in self.key_iterator(d):
            try:
                description = describe(d[key], **self.describe_args)
            except ValueError as error:
                logger.warning(f"the heatmap could not be described, its text is left empty: {error}")
                result.update(description="", description_fields={})
                continue
            result.update(description=description.text, description_fields=description.as_dict(json_safe=True))
        return d
