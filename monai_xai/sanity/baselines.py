"""Random saliency maps and the expected score of a random map under a localisation metric.

A CAM that localises a lesion no better than noise has learnt nothing about it: :func:`random_map_baseline` is the
bar a method's mean localisation score must clear (see :data:`monai_xai.sanity.MIN_LOCALISATION_RATIO`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from monai_xai.enums import RandomMap, as_choice
from monai_xai.utils import normalize_per_sample

__all__ = ["RANDOM_MAP_KINDS", "random_saliency_maps", "random_map_baseline"]

# the kinds of random map (:class:`~monai_xai.enums.RandomMap`)
RANDOM_MAP_KINDS = tuple(RandomMap)


def _check_batch_masks(masks: torch.Tensor) -> None:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor (B, 1, *spatial), got {type(masks).__name__}.")
    if masks.ndim not in (4, 5) or masks.shape[1] != 1:
        raise ValueError(
            f"masks must have shape (B, 1, H, W) or (B, 1, D, H, W), got {tuple(masks.shape)}; "
            "add the channel dim, e.g. masks[:, None]."
        )


def _grid_shape(grid_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    grid = (grid_size,) * spatial_dims if isinstance(grid_size, int) else tuple(grid_size)
    if len(grid) != spatial_dims or not all(isinstance(size, int) and size >= 1 for size in grid):
        raise ValueError(
            f"grid_size must be a positive int or {spatial_dims} positive ints (one per spatial dim), "
            f"got {grid_size!r}."
        )
    return grid


def random_saliency_maps(
    shape: Sequence[int],
    kind: RandomMap | str = RandomMap.UNIFORM,
    grid_size: int | Sequence[int] = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random saliency maps, min-max normalised per sample like CAMs (so each map spans exactly [0, 1]).

    Args:
        shape: (B, 1, *spatial) of the maps, 2 or 3 spatial dims.
        kind: ``"uniform"``: i.i.d. uniform values per voxel. ``"smooth"``: i.i.d. uniform values on a coarse grid
            of ``grid_size``, upsampled (bilinear / trilinear, ``align_corners=False``, as
            :class:`~monai_xai.cams.CAMExplainer` upsamples its maps); with the target layer's feature size as grid,
            this is the fairer baseline for CAMs, whose maps are just as smooth.
        grid_size: coarse grid of ``kind="smooth"``: one int for every spatial dim or one per dim. Default 4.
        generator: torch random generator on ``device``; None uses the global one.
        device: device of the maps (default CPU).

    Returns:
        float32 tensor of ``shape`` with values in [0, 1].
    """
    shape = tuple(shape)
    if len(shape) not in (4, 5) or shape[1] != 1:
        raise ValueError(f"shape must be (B, 1, H, W) or (B, 1, D, H, W), got {shape}.")
    kind = as_choice(RandomMap, kind, "kind")
    if kind == RandomMap.UNIFORM:
        maps = torch.rand(shape, generator=generator, device=device)
    else:
        coarse = torch.rand((*shape[:2], *_grid_shape(grid_size, len(shape) - 2)), generator=generator, device=device)
        mode = "bilinear" if len(shape) == 4 else "trilinear"
        maps = F.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)
    return normalize_per_sample(maps)


def random_map_baseline(
    metric_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    masks: torch.Tensor,
    n_draws: int = 32,
    kind: RandomMap | str = RandomMap.UNIFORM,
    grid_size: int | Sequence[int] = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Expected score of a random saliency map under a localisation metric, per sample (Monte Carlo mean).

    For ``kind="uniform"`` and :func:`monai_xai.metrics.ehr_auc` (equidistant thresholds, voxel counts) the exact
    expectation is the mask's share of the image: every voxel is equally likely to be above any threshold.

    Args:
        metric_fn: ``metric_fn(saliency, masks) -> (B,)``, saliency (B, 1, *spatial) in [0, 1], e.g. ``ehr_auc`` or
            ``functools.partial(ehr_auc, thresholds="quantile")``.
        masks: (B, 1, *spatial) ground-truth regions (bool or 0/1), 2D or 3D.
        n_draws: random maps per sample, >= 1 (the standard error shrinks as ``1 / sqrt(n_draws)``). Default 32.
        kind: ``"uniform"`` or ``"smooth"``; see :func:`random_saliency_maps`.
        grid_size: coarse grid of ``kind="smooth"`` (e.g. the CAM target layer's feature size).
        generator: torch random generator on the masks' device, for reproducible baselines; None uses the global one.

    Returns:
        (B,) float tensor on the masks' device: the mean score over the draws (NaN where the metric is undefined,
        e.g. an empty mask).
    """
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be callable as metric_fn(saliency, masks) -> (B,), got {metric_fn!r}.")
    _check_batch_masks(masks)
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int (random maps per sample), got {n_draws!r}.")
    total = torch.zeros(masks.shape[0], dtype=torch.float64, device=masks.device)
    for _ in range(n_draws):
        saliency = random_saliency_maps(masks.shape, kind, grid_size, generator, masks.device)
        scores = metric_fn(saliency, masks)
        if not isinstance(scores, torch.Tensor) or scores.shape != (masks.shape[0],):
            raise ValueError(
                f"metric_fn must return one score per sample, shape ({masks.shape[0]},), "
                f"got {getattr(scores, 'shape', type(scores).__name__)}."
            )
        total += scores.to(torch.float64)
    return (total / n_draws).to(torch.float32)
