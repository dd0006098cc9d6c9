"""Heatmap-over-image PNGs: the whole image for 2D, three orthogonal slices for 3D (by default through the map's peak,
where the explanation has most to show; the volume's middle often misses a small lesion).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so no GUI backend or global state is involved and
writers can run in worker threads and on headless machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from monai_xai.visualize.plots import save_figure

__all__ = ["peak_voxel", "orthogonal_slices", "save_overlay_png"]


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


def save_overlay_png(
    image: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    centre: str | tuple[int, ...] = "peak",
) -> Path:
    """Write the saliency map over the image as a PNG (one panel for 2D, three orthogonal slices for 3D).

    Args:
        image: (C, *spatial) input image (channel 0 shown in grey, min-max scaled per panel).
        saliency: (1, *spatial) map in [0, 1], same spatial shape as ``image``.
        path: output file (parent folders are created).
        title: figure title (e.g. case and method).
        alpha: opacity of the heatmap in [0, 1].
        cmap: matplotlib colour map of the heatmap.
        centre: where the three 3D slices cross: ``"peak"`` (the map's largest value, :func:`peak_voxel`),
            ``"mid"`` (the middle voxel) or a (D, H, W) index; each panel's title gives its slice index.

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
    figure = Figure(figsize=(3.2 * len(image_slices), 3.4))
    axes = np.atleast_1d(figure.subplots(1, len(image_slices)))
    for index, (axis, picture, heat) in enumerate(zip(axes, image_slices, heat_slices)):
        axis.imshow(picture.T, cmap="gray", origin="lower")
        shown = axis.imshow(heat.T, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, origin="lower")
        axis.set_axis_off()
        if len(image_slices) > 1:
            axis.set_title(f"axis {index} = {indices[index]} ({label})", fontsize=8)
    figure.colorbar(shown, ax=list(axes), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
