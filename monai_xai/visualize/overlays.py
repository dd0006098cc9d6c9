"""Heatmap-over-image PNGs: the whole image for 2D, the three orthogonal mid slices for 3D.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so no GUI backend or global state is involved and
writers can run in worker threads and on headless machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from monai_xai.visualize.plots import save_figure

__all__ = ["mid_slices", "save_overlay_png"]

AXIS_NAMES = ("axis 0", "axis 1", "axis 2")


def _as_array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def mid_slices(volume: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """The middle slice across each spatial axis of a channel-first image.

    Args:
        volume: (C, H, W) or (C, D, H, W); channel 0 is used.

    Returns:
        [the (H, W) image] for 2D; for 3D the mid slices across axes 0, 1 and 2 ((H, W), (D, W), (D, H)).
    """
    array = _as_array(volume)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first (C, H, W) or (C, D, H, W) image, got shape {array.shape}.")
    image = array[0]
    if image.ndim == 2:
        return [image]
    return [np.take(image, image.shape[axis] // 2, axis=axis) for axis in range(3)]


def save_overlay_png(
    image: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Path:
    """Write the saliency map over the image as a PNG (one panel for 2D, three mid-slice panels for 3D).

    Args:
        image: (C, *spatial) input image (channel 0 shown in grey, min-max scaled per panel).
        saliency: (1, *spatial) map in [0, 1], same spatial shape as ``image``.
        path: output file (parent folders are created).
        title: figure title (e.g. case and method).
        alpha: opacity of the heatmap in [0, 1].
        cmap: matplotlib colour map of the heatmap.

    Returns:
        the path written.
    """
    image_slices, heat_slices = mid_slices(image), mid_slices(saliency)
    if [s.shape for s in image_slices] != [s.shape for s in heat_slices]:
        raise ValueError(
            f"image {tuple(_as_array(image).shape)} and saliency {tuple(_as_array(saliency).shape)} must share the "
            "spatial shape."
        )
    figure = Figure(figsize=(3.2 * len(image_slices), 3.4))
    axes = np.atleast_1d(figure.subplots(1, len(image_slices)))
    for index, (axis, picture, heat) in enumerate(zip(axes, image_slices, heat_slices)):
        axis.imshow(picture.T, cmap="gray", origin="lower")
        shown = axis.imshow(heat.T, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, origin="lower")
        axis.set_axis_off()
        if len(image_slices) > 1:
            axis.set_title(f"mid slice, {AXIS_NAMES[index]}", fontsize=8)
    figure.colorbar(shown, ax=list(axes), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
