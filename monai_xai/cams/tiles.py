"""nnU-Net's sliding window: tiles, Gaussian weighting, test-time mirroring and a fold ensemble, for predictions and
maps alike (:class:`TiledWindow`).

nnU-Net v2 predicts a volume as follows (``nnUNetPredictor.predict_sliding_window_return_logits``): the image is
padded (centred, zeros) to at least the patch size; tiles start at ``compute_steps_for_sliding_window``'s
positions (neighbours overlap by at least ``1 - step`` of a patch); each tile's output, averaged over the mirrored
copies of the tile (every non-empty combination of the mirror axes, each flipped back), is weighted by a Gaussian of
sigma ``patch / 8`` scaled to a peak of 10 (``compute_gaussian``; zeros lifted to its minimum) and summed, then
divided by the summed weights; the padding is cut off; each fold's result is averaged with the others'. A 2d
configuration on volumes (a patch of one dim fewer than the images) is run slice by slice along the first spatial dim,
each slice tiled as a 2D image (``_internal_get_sliding_window_slicers``: every slice, its 2D tiles).

:func:`tiled` does exactly that for any function of a tile: the network (the prediction) or the non-normalised maps
of a batch of tiles (the explanation), so the maps are averaged the way the predictions are. The tiling is written
here from nnU-Net's definition (no nnU-Net import: the core does not need it); the tests compare it with nnU-Net's own
functions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from monai_xai.budgets import check_window
from monai_xai.cams.sliding_window import _window_pixel_set_source, _WindowPredictor

__all__ = ["TiledNetwork", "TiledWindow", "tile_starts", "tile_importance", "tiled", "tiled_cam", "tiles_per_image"]

# (B, C, *patch) tile and its crop of a pixel set (or None) -> outputs (a tensor, or a dict of tensors) of the tile
TileFunction = Callable[[torch.Tensor, torch.Tensor | None], Any]


@dataclass(frozen=True)
class TiledWindow:
    """nnU-Net's sliding window (see the module docstring).

    Attributes:
        patch_size: the tile size, one int per spatial dim (the plans' ``patch_size``).
        step: tile step as a fraction of the patch size, in (0, 1] (nnU-Net's ``tile_step_size``, default 0.5).
        gaussian: weight each tile by nnU-Net's Gaussian (``use_gaussian``); False: every voxel of a tile weighs 1.
        mirror_axes: spatial axes (0-based) of the test-time mirroring (the checkpoint's
            ``inference_allowed_mirroring_axes``); None or empty: no mirroring.
        weights: state dicts of the folds, averaged as an ensemble (loaded into the network in turn, the network's
            own weights restored afterwards); empty: the network as it is.
    """

    patch_size: tuple[int, ...]
    step: float = 0.5
    gaussian: bool = True
    mirror_axes: tuple[int, ...] | None = None
    weights: tuple[Mapping[str, torch.Tensor], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        patch = tuple(self.patch_size)
        if not patch or not all(isinstance(size, int) and size > 0 for size in patch):
            raise ValueError(f"the tiled window's patch_size must be positive ints, got {self.patch_size!r}.")
        if not 0 < self.step <= 1:
            raise ValueError(f"the tiled window's step must be in (0, 1], got {self.step!r}.")
        axes = tuple(self.mirror_axes or ())
        if any(not 0 <= axis < len(patch) for axis in axes):
            raise ValueError(f"mirror_axes {axes} must be spatial axes 0..{len(patch) - 1} of the patch.")
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "mirror_axes", axes or None)
        object.__setattr__(self, "weights", tuple(self.weights))

    def explainer_args(self) -> dict[str, Any]:
        """The :class:`~monai_xai.cams.CAMExplainer` (and :class:`~monai_xai.cams.AttributionExplainer`) arguments of
        this window."""
        return {"tiles": self}

    def network(self, network: nn.Module) -> TiledNetwork:
        """``network`` run tile by tile with this window (see :class:`TiledNetwork`), as
        :meth:`SlidingWindow.network <monai_xai.explanation.SlidingWindow.network>` runs it window by window."""
        return TiledNetwork(network, self)

    @property
    def roi_size(self) -> tuple[int, ...]:
        """The patch size (the crop a layer is chosen on)."""
        return self.patch_size

    def check_size(self, spatial_dims: int | None = None) -> None:
        """Refuse tiles above the ``MONAI_XAI_MAX_WINDOW_VOXELS`` budget, as a sliding window's
        (:func:`~monai_xai.budgets.check_window`; the patch has one size per dim, so ``spatial_dims`` is not needed).

        Raises:
            BudgetExceeded: the tile's voxels above the cap.
        """
        check_window(self.patch_size, spatial_dims, "the tiled window's patch_size")

    def mirror_combinations(self) -> list[tuple[int, ...]]:
        """The flipped tensor dims of each mirrored copy (nnU-Net's order: single axes, then pairs, ...)."""
        dims = [axis + 2 for axis in self.mirror_axes or ()]
        return [combo for size in range(1, len(dims) + 1) for combo in itertools.combinations(dims, size)]


class TiledNetwork(nn.Module):
    """A network run tile by tile as nnU-Net predicts (:func:`tiled`: tiles, Gaussian weights, mirroring, folds): what
    the prediction of the explanation step and the metrics that re-run the network call with a :class:`TiledWindow`.

    Args:
        network: the network (its modules stay reachable as ``.network``; the folds' weights are loaded into it in
            turn and its own restored).
        window: the tiling, mirroring and folds.
    """

    def __init__(self, network: nn.Module, window: TiledWindow) -> None:
        super().__init__()
        self.network = network
        self.window = window

    def forward(self, images: torch.Tensor) -> Any:
        """(B, C, *spatial) -> the blended (B, C', *spatial) outputs of the tiles, averaged over the folds."""
        return tiled(lambda tile, _: self.network(tile), images, self.window, self.network)


def _slices(spatial: Sequence[int], window: TiledWindow) -> int:
    """The slices a 2D patch tiles one by one in a volume of ``spatial`` size (1: the patch has the images' dims).

    Raises:
        ValueError: a patch of another dimension than the images' or their slices'.
    """
    if len(window.patch_size) == len(spatial):
        return 1
    if len(window.patch_size) == len(spatial) - 1:
        return int(spatial[0])
    raise ValueError(
        f"the tiles are {len(window.patch_size)}D ({window.patch_size}) but the images {len(spatial)}D: tiles have "
        "the images' dims, or one fewer (a 2d configuration on volumes, slice by slice)."
    )


def tiles_per_image(spatial: Sequence[int], window: TiledWindow) -> int:
    """The passes :func:`tiled` runs on one image of ``spatial`` size (centred-padded to the patch where smaller):
    its tiles (in every slice, for a 2D patch on volumes), times the mirrored copies of each (plus the tile itself),
    times the folds (at least one)."""
    slices = _slices(spatial, window)
    plane = spatial[-len(window.patch_size) :]
    padded = [max(size, patch) for size, patch in zip(plane, window.patch_size)]
    tiles = math.prod(len(starts) for starts in tile_starts(padded, window.patch_size, window.step))
    return slices * tiles * (len(window.mirror_combinations()) + 1) * max(len(window.weights), 1)


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float) -> list[list[int]]:
    """Per spatial dim, the start of every tile (nnU-Net's ``compute_steps_for_sliding_window``): the fewest tiles
    whose neighbours are at most ``step * patch`` apart, spread evenly from 0 to ``image - patch``.

    Raises:
        ValueError: an image smaller than the patch in some dim (pad it first).
    """
    if any(image < patch for image, patch in zip(image_size, patch_size)):
        raise ValueError(f"the image {tuple(image_size)} is smaller than the patch {tuple(patch_size)}; pad it first.")
    starts = []
    for image, patch in zip(image_size, patch_size):
        count = math.ceil((image - patch) / (patch * step)) + 1
        spacing = (image - patch) / (count - 1) if count > 1 else 0.0
        starts.append([int(np.round(spacing * index)) for index in range(count)])
    return starts


@lru_cache(maxsize=4)
def _importance(patch_size: tuple[int, ...]) -> np.ndarray:
    impulse = np.zeros(patch_size)
    impulse[tuple(size // 2 for size in patch_size)] = 1
    weights = gaussian_filter(impulse, [size / 8 for size in patch_size], 0, mode="constant", cval=0)
    weights /= weights.max() / 10
    weights[weights == 0] = weights[weights > 0].min()
    return weights


def tile_importance(patch_size: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(*patch) nnU-Net's Gaussian tile weights (``compute_gaussian(patch, 1/8, 10)``): a Gaussian of sigma
    ``patch / 8`` centred on the patch, scaled to a peak of 10, zeros lifted to the smallest positive weight."""
    return torch.as_tensor(_importance(tuple(patch_size)), dtype=dtype)


def _centred_padding(shape: Sequence[int], patch_size: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zeros per spatial dim that bring ``shape`` up to the patch, centred, the larger half after."""
    padding = []
    for size, patch in zip(shape, patch_size):
        missing = max(patch - size, 0)
        padding.append((missing // 2, missing - missing // 2))
    return padding


def _pad(values: torch.Tensor, padding: list[tuple[int, int]]) -> torch.Tensor:
    flat = [amount for before_after in reversed(padding) for amount in before_after]  # F.pad: last dim first
    return torch.nn.functional.pad(values, flat) if any(flat) else values


def _add(total: Any, value: Any, scale: float | torch.Tensor = 1.0) -> Any:
    """``total + value * scale`` for tensors or dicts of tensors (``total`` None: ``value * scale``)."""
    if isinstance(value, Mapping):
        return {key: _add(None if total is None else total[key], item, scale) for key, item in value.items()}
    return value * scale if total is None else total + value * scale


def _map_values(function: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: function(item) for key, item in value.items()}
    return function(value)


def _mirrored(function: TileFunction, tile: torch.Tensor, condition: torch.Tensor | None, window: TiledWindow) -> Any:
    """The tile's outputs averaged over its mirrored copies, each flipped back (nnU-Net's
    ``_internal_maybe_mirror_and_predict``)."""
    combinations = window.mirror_combinations()
    total = function(tile, condition)
    for dims in combinations:
        flipped = function(tile.flip(dims), None if condition is None else condition.flip(dims))
        total = _add(total, _map_values(lambda item, dims=dims: item.flip(dims), flipped))
    return _map_values(lambda item: item / (len(combinations) + 1), total) if combinations else total


def _tile_once(
    function: TileFunction, images: torch.Tensor, window: TiledWindow, condition: torch.Tensor | None
) -> Any:
    """One network's (fold's) tiled outputs of ``images``, on the images' grid."""
    padding = _centred_padding(images.shape[2:], window.patch_size)
    padded = _pad(images, padding)
    padded_condition = None if condition is None else _pad(condition, padding)
    importance = (
        tile_importance(window.patch_size, torch.float32).to(images.device)
        if window.gaussian
        else torch.ones(window.patch_size, device=images.device)
    )
    blended, weight = None, torch.zeros(padded.shape[2:], device=images.device)
    starts = tile_starts(padded.shape[2:], window.patch_size, window.step)
    for corner in itertools.product(*starts):
        region = tuple(slice(start, start + size) for start, size in zip(corner, window.patch_size))
        tile = padded[(slice(None), slice(None), *region)]
        tile_condition = None if padded_condition is None else padded_condition[(slice(None), slice(None), *region)]
        outputs = _mirrored(function, tile, tile_condition, window)
        if blended is None:
            blended = _map_values(lambda item: item.new_zeros((*item.shape[:2], *padded.shape[2:])), outputs)
        pairs = [(blended[key], outputs[key]) for key in blended] if isinstance(blended, dict) else [(blended, outputs)]
        for accumulated, contribution in pairs:
            accumulated[(slice(None), slice(None), *region)] += contribution * importance.to(contribution.dtype)
        weight[region] += importance
    crop = tuple(slice(before, size - after) for (before, after), size in zip(padding, padded.shape[2:]))
    return _map_values(lambda item: (item / weight.to(item.dtype))[(slice(None), slice(None), *crop)], blended)


def _tile_slices(
    function: TileFunction, images: torch.Tensor, window: TiledWindow, condition: torch.Tensor | None
) -> Any:
    """:func:`_tile_once` of every slice along the first spatial dim, stacked there (a 2D patch on volumes)."""
    slices = [
        _tile_once(function, images[:, :, index], window, None if condition is None else condition[:, :, index])
        for index in range(images.shape[2])
    ]
    if isinstance(slices[0], Mapping):
        return {key: torch.stack([item[key] for item in slices], dim=2) for key in slices[0]}
    return torch.stack(slices, dim=2)


def tiled(
    function: TileFunction,
    images: torch.Tensor,
    window: TiledWindow,
    network: nn.Module | None = None,
    condition: torch.Tensor | None = None,
) -> Any:
    """Run ``function`` over ``images`` tile by tile as nnU-Net predicts (see the module docstring).

    Args:
        function: ``function(tiles (B, C, *patch), condition tiles (B, K, *patch) or None)`` -> a tensor (B, C', *patch)
            or a dict of them (e.g. each method's non-negative maps).
        images: (B, C, *spatial) images, 2D or 3D (with a 2D patch: tiled slice by slice along the first spatial
            dim, as nnU-Net runs a 2d configuration on volumes).
        window: the tiling, mirroring and folds.
        network: the network whose weights ``window.weights`` replace in turn (restored afterwards); needed only
            with fold weights.
        condition: (B, K, *spatial) values cropped (and mirrored) alongside each tile, e.g. a pixel set in [0, 1].

    Returns:
        the blended outputs on the images' grid (a tensor, or a dict of tensors), averaged over the folds.

    Raises:
        ValueError: fold weights without the network to load them into, or tiles neither of the images' dimension
            nor of one fewer.
    """
    _slices(images.shape[2:], window)  # refuses tiles of another dimension
    tile = _tile_once if len(window.patch_size) == images.ndim - 2 else _tile_slices
    if not window.weights:
        return tile(function, images, window, condition)
    if network is None:
        raise ValueError("a tiled window with fold weights needs the network to load them into.")
    own = {name: value.detach().clone() for name, value in network.state_dict().items()}
    total = None
    try:
        for weights in window.weights:
            network.load_state_dict(weights)
            total = _add(total, tile(function, images, window, condition))
    finally:
        network.load_state_dict(own)
    return _map_values(lambda item: item / len(window.weights), total)


def tiled_cam(
    explain_window: Callable[[torch.Tensor, Any], dict[str, torch.Tensor]],
    images: torch.Tensor,
    pixel_set: Any,
    window: TiledWindow,
    network: nn.Module,
) -> dict[str, torch.Tensor]:
    """Blend per-tile CAMs as nnU-Net blends its tiles' predictions (:func:`tiled`): the maps of each tile averaged
    over its mirrored copies, Gaussian-weighted, averaged over the folds.

    Args:
        explain_window: as for :func:`~monai_xai.cams.sliding_window.sliding_window_cam`: a batch of tiles and their
            pixel set -> ``{method: (n, 1, *patch)}`` non-negative, NOT normalised maps.
        images: (B, C, *spatial) images.
        pixel_set: as for ``sliding_window_cam`` (a name each tile resolves on its own output, or a tensor / voxel /
            box cropped and mirrored with each tile; tiles whose crop is empty are not explained).
        window: the tiling, mirroring and folds.
        network: the explained network (the folds' weights are loaded into it in turn).

    Returns:
        method -> (B, 1, *spatial) blended maps, non-negative and not normalised.
    """
    per_window, cropped = _window_pixel_set_source(images, pixel_set)
    return tiled(_WindowPredictor(explain_window, per_window), images, window, network, cropped)
