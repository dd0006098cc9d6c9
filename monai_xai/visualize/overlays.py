"""Heatmap-over-image PNGs: the whole image for 2D, three orthogonal slices for 3D (by default through the map's peak,
where the explanation has most to show; the volume's middle often misses a small lesion).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so no GUI backend or global state is involved and
writers can run in worker threads and on headless machines.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from monai_xai.visualize.plots import save_figure

__all__ = ["peak_voxel", "fullest_slice", "orthogonal_slices", "save_overlay_png", "save_map_grid_png"]

# caption under an overlay: font size (points), longest line (characters), height of a line (inches)
_CAPTION_FONT_SIZE = 7
_CAPTION_CHARACTERS = 110
_CAPTION_LINE_INCHES = 0.14


def _as_array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _middle(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n // 2 for n in shape)


def peak_voxel(saliency: torch.Tensor | np.ndarray) -> tuple[int, ...]:
    """Spatial index of the largest value of a channel-first map (the first one in C order on ties; NaN ignored).

    Args:
        saliency: (C, *spatial) map; channel 0 is used.

    Returns:
        one index per spatial dim; the middle of the map if it holds no finite value.
    """
    heat = _as_array(saliency)[0]
    finite = np.isfinite(heat)
    if not finite.any():
        return _middle(heat.shape)
    return tuple(int(i) for i in np.unravel_index(np.argmax(np.where(finite, heat, -np.inf)), heat.shape))


def fullest_slice(mask: torch.Tensor | np.ndarray, axis: int = -1) -> int:
    """Index of the slice across a spatial axis that holds the most voxels of a mask (the first on ties).

    Unlike the mask's centroid, this slice always cuts the mask, even when it has several parts (e.g. lesions).

    Args:
        mask: (C, *spatial) region (bool or 0/1); channel 0 is used.
        axis: spatial axis (0-based over the spatial dims; negative counts from the last).

    Returns:
        the slice index; the middle one if the mask is empty.
    """
    region = _as_array(mask)[0] > 0.5
    axis = axis % region.ndim
    counts = region.sum(axis=tuple(other for other in range(region.ndim) if other != axis))
    return int(np.argmax(counts)) if counts.any() else region.shape[axis] // 2


def orthogonal_slices(volume: torch.Tensor | np.ndarray, centre: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """The slices through ``centre`` across each spatial axis of a channel-first image.

    Args:
        volume: (C, H, W) or (C, D, H, W); channel 0 is used.
        centre: spatial index the 3D slices pass through; None takes the middle voxel. Ignored for 2D.

    Returns:
        [the (H, W) image] for 2D; for 3D the slices across axes 0, 1 and 2 ((H, W), (D, W), (D, H)).
    """
    array = _as_array(volume)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first (C, H, W) or (C, D, H, W) image, got shape {array.shape}.")
    image = array[0]
    if image.ndim == 2:
        return [image]
    centre = _middle(image.shape) if centre is None else tuple(centre)
    if len(centre) != 3 or not all(0 <= c < n for c, n in zip(centre, image.shape)):
        raise ValueError(f"centre must be 3 indices inside the volume {image.shape}, got {centre}.")
    return [np.take(image, centre[axis], axis=axis) for axis in range(3)]


def _caption_lines(caption: str, width_inches: float) -> list[str]:
    """``caption`` wrapped to lines that fit a figure ``width_inches`` wide (at most :data:`_CAPTION_CHARACTERS`)."""
    # an average character of the default sans-serif font is about 0.6 em wide
    fitting = int(width_inches * 72 / (0.6 * _CAPTION_FONT_SIZE))
    return textwrap.wrap(caption, width=min(_CAPTION_CHARACTERS, fitting))


def _add_caption(figure: Figure, caption: str | None) -> None:
    """Grow ``figure`` downwards by the wrapped ``caption`` and write it there, below the panels (which keep their
    size); no change without a caption."""
    width, height = figure.get_size_inches()
    lines = _caption_lines(caption, width) if caption else []
    if not lines:
        return
    extra = _CAPTION_LINE_INCHES * (len(lines) + 1)
    total = height + extra
    params = figure.subplotpars
    figure.set_size_inches(width, total)
    figure.subplots_adjust(bottom=(extra + params.bottom * height) / total, top=1 - (1 - params.top) * height / total)
    margin = 0.5 * _CAPTION_LINE_INCHES / total
    figure.text(0.02, margin, "\n".join(lines), ha="left", va="bottom", fontsize=_CAPTION_FONT_SIZE)


def save_overlay_png(
    image: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    centre: str | tuple[int, ...] = "peak",
    caption: str | None = None,
) -> Path:
    """Write the saliency map over the image as a PNG (one panel for 2D, three orthogonal slices for 3D).

    A 2D image is shown as its file looks: MONAI's readers give (C, x, y) = (C, column, row) arrays, and row 0 is
    drawn at the top. 3D slices are drawn with the first in-plane axis to the right and the second upwards.

    Args:
        image: (C, *spatial) input image (channel 0 shown in grey, min-max scaled per panel).
        saliency: (1, *spatial) map in [0, 1], same spatial shape as ``image``.
        path: output file (parent folders are created).
        title: figure title (e.g. case and method).
        alpha: opacity of the heatmap in [0, 1].
        cmap: matplotlib colour map of the heatmap.
        centre: where the three 3D slices cross: ``"peak"`` (the map's largest value, :func:`peak_voxel`),
            ``"mid"`` (the middle voxel) or a (D, H, W) index; each panel's title gives its slice index.
        caption: text written below the panels in a small font, wrapped to the figure's width (at most 110
            characters a line), e.g. the case's description in words (:func:`monai_xai.describe.describe`).

    Returns:
        the path written.
    """
    image, saliency = _as_array(image), _as_array(saliency)
    if image.shape[1:] != saliency.shape[1:]:
        raise ValueError(
            f"image {tuple(image.shape)} and saliency {tuple(saliency.shape)} must share the spatial shape."
        )
    if centre == "peak":
        indices, label = peak_voxel(saliency), "peak"
    elif centre == "mid":
        indices, label = _middle(saliency.shape[1:]), "mid"
    elif isinstance(centre, str):
        raise ValueError(f'centre must be "peak", "mid" or a (D, H, W) index, got {centre!r}.')
    else:
        indices, label = tuple(centre), "chosen"
    image_slices, heat_slices = orthogonal_slices(image, indices), orthogonal_slices(saliency, indices)
    # MONAI reads a 2D file as (x, y) = (column, row): row 0 goes on top, as in the file; 3D slices (RAS) bottom-up
    origin = "upper" if image.ndim == 3 else "lower"
    figure = Figure(figsize=(3.2 * len(image_slices), 3.4))
    _add_caption(figure, caption)
    axes = np.atleast_1d(figure.subplots(1, len(image_slices)))
    for index, (axis, picture, heat) in enumerate(zip(axes, image_slices, heat_slices)):
        axis.imshow(picture.T, cmap="gray", origin=origin)
        shown = axis.imshow(heat.T, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, origin=origin)
        axis.set_axis_off()
        if len(image_slices) > 1:
            axis.set_title(f"axis {index} = {indices[index]} ({label})", fontsize=8)
    figure.colorbar(shown, ax=list(axes), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def save_map_grid_png(
    image: torch.Tensor | np.ndarray,
    maps: Mapping[str, Mapping[str, torch.Tensor | np.ndarray]],
    path: str | Path,
    mask: torch.Tensor | np.ndarray | None = None,
    column_labels: Mapping[str, str] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Path:
    """Several maps of one image side by side: a row per set of maps, a column per method.

    Used to compare explanations at a glance, e.g. the trained and the weight-randomised network's maps of the model
    randomisation test (:func:`monai_xai.sanity.bundle_sanity_checks`). A 3D image is shown by one slice across its
    last spatial axis (axial for RAS volumes): the one holding most of ``mask`` (:func:`fullest_slice`) when given,
    else the middle one; the mask's outline is drawn in white on every panel.

    Args:
        image: (C, *spatial) input image (channel 0 shown in grey).
        maps: {row label: {method: (1, *spatial) map in [0, 1]}}; every row has the same methods, in the same order.
        path: output PNG (parent folders are created).
        mask: optional (1, *spatial) region (e.g. the ground-truth lesion), outlined on every panel.
        column_labels: optional {method: column title} (default: the method name).
        title: figure title.
        alpha: opacity of the heatmaps in [0, 1].
        cmap: matplotlib colour map of the heatmaps.

    Returns:
        the path written.
    """
    image = _as_array(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first (C, H, W) or (C, D, H, W) image, got shape {image.shape}.")
    if not maps or not all(maps.values()):
        raise ValueError("maps is empty; give {row label: {method: map}} with at least one map per row.")
    methods = list(next(iter(maps.values())))
    if any(list(row) != methods for row in maps.values()):
        raise ValueError(f"every row of maps must hold the same methods in the same order, {methods}.")
    arrays = {row: {method: _as_array(heat) for method, heat in row_maps.items()} for row, row_maps in maps.items()}
    outline = None if mask is None else _as_array(mask)
    for heat in [*(heat for row in arrays.values() for heat in row.values()), *([] if outline is None else [outline])]:
        if heat.shape[1:] != image.shape[1:]:
            raise ValueError(f"maps and mask must share the image's spatial shape {image.shape[1:]}, got {heat.shape}.")

    if image.ndim == 4:
        axial = fullest_slice(outline) if outline is not None else image.shape[-1] // 2

    def shown(volume: np.ndarray) -> np.ndarray:
        return volume[0] if volume.ndim == 3 else volume[0, ..., axial]

    picture = shown(image).T
    origin = "upper" if image.ndim == 3 else "lower"  # as save_overlay_png: a 2D file's row 0 on top
    outline_slice = None if outline is None else shown(outline).T
    labels = column_labels or {}
    figure = Figure(figsize=(1.9 * len(methods), 2.0 * len(arrays) + 0.4), layout="constrained")
    axes = np.asarray(figure.subplots(len(arrays), len(methods), squeeze=False))
    for row_index, (row, row_maps) in enumerate(arrays.items()):
        for column, method in enumerate(methods):
            axis = axes[row_index, column]
            axis.imshow(picture, cmap="gray", origin=origin)
            heatmap = axis.imshow(shown(row_maps[method]).T, cmap=cmap, alpha=alpha, vmin=0, vmax=1, origin=origin)
            if outline_slice is not None:
                axis.contour(outline_slice, levels=[0.5], colors="white", linewidths=0.8, origin="lower")
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(labels.get(method, method), fontsize=8)
            if column == 0:
                axis.set_ylabel(row, fontsize=9)
    figure.colorbar(heatmap, ax=axes.ravel().tolist(), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
