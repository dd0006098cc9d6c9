"""Contrast-limited adaptive histogram equalisation (CLAHE) of 2D channel-first images, as MONAI transforms.

:class:`CLAHE` (array) and :class:`CLAHEd` (dictionary) apply OpenCV's ``cv2.createCLAHE`` to each channel of a
``(C, W, H)`` image, e.g. a radiograph loaded with ``LoadImaged(..., ensure_channel_first=True)``: the preprocessing
of the SIIM-ACR pneumothorax study (Qiu thesis, chapter 3: CLAHE, then z-score)::

    Compose([
        LoadImaged(keys=["image", "mask"], reader="PydicomReader", ensure_channel_first=True),
        InvertMonochrome1d(keys="image"),
        CLAHEd(keys="image"),                      # (1, W, H) float in [0, 1]
        ToRGBd(keys="image"),                      # (3, W, H)
        Resized(keys=["image", "mask"], spatial_size=(224, 224), mode=["bilinear", "nearest"]),
        NormalizeIntensityd(keys="image", channel_wise=True),
    ])

OpenCV's CLAHE works on 8-bit images, so each image is first rescaled to ``uint8`` by its own range
(``round(255 * (x - min) / (max - min))``, one range for all channels of the image; a constant image becomes 0), then
each channel is equalised separately, and the result is returned as float32 in ``[0, 1]`` (``uint8 / 255``). The
image's own intensity scale (e.g. 12-bit DICOM values) is therefore not kept, which is what the z-score that follows
makes irrelevant.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy

__all__ = ["CLAHE", "CLAHEd"]


def _tile_grid(tile_grid_size: int | Sequence[int]) -> tuple[int, int]:
    grid = (tile_grid_size, tile_grid_size) if isinstance(tile_grid_size, int) else tuple(tile_grid_size)
    if len(grid) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in grid):
        raise ValueError(f"CLAHE: tile_grid_size must be a positive int or two positive ints, got {tile_grid_size!r}.")
    return int(grid[0]), int(grid[1])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` rescaled by its own range to ``uint8`` (``round(255 * (x - min) / (max - min))``; constant: zeros)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.rint((image - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)


class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation of a channel-first 2D image, channel by channel.

    Args:
        clip_limit: OpenCV's ``clipLimit``: the contrast limit, relative to a uniform histogram of a tile (default 2.0).
        tile_grid_size: number of tiles along the two spatial axes of the input, in the input's axis order (an int
            for both; default 8 x 8). OpenCV takes (tiles along columns, tiles along rows) of its ``(rows, columns)``
            array, so the pair is passed to it reversed.

    Shapes and types:
        input ``(C, W, H)`` (any 2 spatial axes, any number of channels), a ``torch.Tensor`` / ``MetaTensor`` or a
        numpy array of any real dtype, finite values; output the same shape and container type, float32 in
        ``[0, 1]``. A ``MetaTensor`` keeps its metadata (affine, ``filename_or_obj``, ...).

    Raises:
        ValueError: the input is not ``(C, W, H)`` (e.g. a 2D image without channel axis or a 3D volume), holds
            non-finite values, or bad ``clip_limit`` / ``tile_grid_size``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, clip_limit: float = 2.0, tile_grid_size: int | Sequence[int] = (8, 8)) -> None:
        if not clip_limit > 0:
            raise ValueError(f"CLAHE: clip_limit must be positive, got {clip_limit!r}.")
        self.clip_limit = float(clip_limit)
        self.tile_grid_size = _tile_grid(tile_grid_size)

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if img.ndim != 3:
            raise ValueError(
                f"CLAHE needs a channel-first 2D image (C, W, H), got shape {tuple(img.shape)}; load 2D images with "
                "LoadImage(ensure_channel_first=True) (squeeze a trailing axis of size 1 first, e.g. "
                "SqueezeDimd(dim=-1) after ITKReader); 3D volumes are not supported."
            )
        array = convert_to_numpy(img)
        if not np.isfinite(array).all():
            raise ValueError("CLAHE: the image holds NaN or infinite values.")
        scaled = _to_uint8(array)
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.tile_grid_size[::-1])
        equalised = np.stack([clahe.apply(np.ascontiguousarray(channel)) for channel in scaled])
        out = equalised.astype(np.float32) / np.float32(255.0)
        dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class CLAHEd(MapTransform):
    """Dictionary version of :class:`CLAHE` (same arguments, applied to each of ``keys``)."""

    backend = CLAHE.backend

    def __init__(
        self,
        keys: KeysCollection,
        clip_limit: float = 2.0,
        tile_grid_size: int | Sequence[int] = (8, 8),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clahe = CLAHE(clip_limit=clip_limit, tile_grid_size=tile_grid_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.clahe(d[key])
        return d
