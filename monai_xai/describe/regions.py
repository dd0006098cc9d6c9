"""Hot regions of one saliency map and their geometry: size, centroid, principal axes, boundary, contrast.

Everything is measured in the map's voxel grid and turned into millimetres by the linear part of its affine
(``affine[:d, :d]``, voxel index -> world offset), so anisotropic and oblique grids give physical sizes and shapes.
Connected components come from :func:`scipy.ndimage.label` (face connectivity) on the CPU: describing is a per-case
reporting step; the measurements are torch (float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from monai_xai.enums import OTSU
from monai_xai.metrics.localization import otsu_threshold

__all__ = ["RegionGeometry", "boundary_size", "hot_area", "measure_region", "split_regions"]


@dataclass(frozen=True)
class RegionGeometry:
    """Geometry of one hot region (a connected set of voxels).

    Attributes:
        voxels: number of pixels / voxels.
        size: area in mm^2 (2D) or volume in mm^3 (3D), from the affine.
        fraction: share of the image's pixels / voxels.
        centroid: (d,) centroid in voxel indices.
        axis_lengths: (d,) principal axis lengths in mm, longest first: the full axes of the ellipse / ellipsoid
            with the same second moments (a disk's or ball's diameter).
        irregularity: boundary length / area of the region over that of the ellipse / ellipsoid with the same second
            moments, drawn on the same grid (1 for an ellipse, larger for ragged outlines).
        mean: the map's mean over the region.
        peak: the map's maximum over the region.
        contrast: ``mean`` over the map's mean outside every hot region (inf when that is 0).
    """

    voxels: int
    size: float
    fraction: float
    centroid: tuple[float, ...]
    axis_lengths: tuple[float, ...]
    irregularity: float
    mean: float
    peak: float
    contrast: float


def hot_area(saliency: torch.Tensor, threshold: float | str = 0.5) -> tuple[torch.Tensor, float]:
    """Voxels of the map at or above the threshold.

    Args:
        saliency: (*spatial) map.
        threshold: a fraction ``f`` in (0, 1] of the map's range (hot: ``>= min + f * (max - min)``; 0.5 = at least
            half way to the peak) or ``"otsu"`` (Otsu's cut of the map's histogram).

    Returns:
        (*spatial) bool mask and the threshold in map units.
    """
    heat = saliency.detach().double()
    if threshold == OTSU:
        cut = float(otsu_threshold(heat[None, None])[0])
    elif isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0 < threshold <= 1:
        low, high = float(heat.min()), float(heat.max())
        cut = low + float(threshold) * (high - low)
    else:
        raise ValueError(f'threshold must be a fraction in (0, 1] of the map\'s range or "otsu", got {threshold!r}.')
    return heat >= cut, cut


def split_regions(mask: torch.Tensor, min_fraction: float = 0.05) -> list[torch.Tensor]:
    """Connected components of ``mask``, largest first, without specks.

    Args:
        mask: (*spatial) bool.
        min_fraction: components smaller than this share of the largest one are dropped.

    Returns:
        (*spatial) bool masks, one per region.
    """
    labels, count = ndimage.label(mask.cpu().numpy())
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    kept = [index + 1 for index in order if sizes[index] >= min_fraction * sizes[order[0]]]
    labels_t = torch.from_numpy(labels).to(mask.device)
    return [labels_t == label for label in kept]


def boundary_size(mask: torch.Tensor, spacing: torch.Tensor) -> float:
    """Boundary length (2D, mm) or area (3D, mm^2) of a voxel set: the faces between it and the rest (image borders
    included), each weighted by its physical size.

    Args:
        mask: (*spatial) bool.
        spacing: (d,) voxel size in mm along each axis.
    """
    padded = torch.nn.functional.pad(mask.double()[None, None], (1, 1) * mask.ndim)[0, 0]
    total = 0.0
    for axis in range(mask.ndim):
        faces = (padded.diff(dim=axis) != 0).sum().item()
        face_size = float(torch.prod(torch.cat([spacing[:axis], spacing[axis + 1 :]])))
        total += faces * face_size
    return total


def _moments(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d,) centroid and (d, d) covariance of the voxel indices of ``mask`` (each voxel a uniform unit cube)."""
    points = mask.nonzero().double()
    centroid = points.mean(dim=0)
    centred = points - centroid
    covariance = centred.T @ centred / len(points) + torch.eye(mask.ndim, dtype=torch.float64) / 12.0
    return centroid, covariance


def _ellipsoid_boundary(covariance: torch.Tensor, spacing: torch.Tensor) -> float:
    """Boundary size of the solid ellipse / ellipsoid with index covariance ``covariance``, drawn on a unit grid."""
    dims = covariance.shape[0]
    radii = torch.sqrt((dims + 2) * torch.diagonal(covariance))  # half extents along the grid axes
    axes = [torch.arange(-math.ceil(r) - 1, math.ceil(r) + 2, dtype=torch.float64) for r in radii.tolist()]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    distance = torch.einsum("...i,ij,...j->...", grid, torch.linalg.inv(covariance), grid)
    return boundary_size(distance <= dims + 2, spacing)


def measure_region(
    region: torch.Tensor, saliency: torch.Tensor, hot: torch.Tensor, linear: torch.Tensor
) -> RegionGeometry:
    """Geometry of one region.

    Args:
        region: (*spatial) bool, one connected hot region.
        saliency: (*spatial) map.
        hot: (*spatial) bool, every hot voxel (the outside of it is the region's surroundings).
        linear: (d, d) voxel index -> world offset in mm (the affine's linear part).
    """
    spacing = torch.linalg.norm(linear, dim=0)
    voxel_size = abs(float(torch.linalg.det(linear)))
    centroid, covariance = _moments(region)
    world_covariance = linear @ covariance @ linear.T
    variances = torch.linalg.eigvalsh(world_covariance).clamp_min(0).flip(0)
    heat = saliency.detach().double()
    inside = heat[region]
    outside = heat[~hot]
    outside_mean = float(outside.mean()) if outside.numel() else 0.0
    mean = float(inside.mean())
    return RegionGeometry(
        voxels=int(region.sum()),
        size=int(region.sum()) * voxel_size,
        fraction=float(region.double().mean()),
        centroid=tuple(centroid.tolist()),
        axis_lengths=tuple((2 * ((region.ndim + 2) * variances).sqrt()).tolist()),
        irregularity=boundary_size(region, spacing) / _ellipsoid_boundary(covariance, spacing),
        mean=mean,
        peak=float(inside.max()),
        contrast=mean / outside_mean if outside_mean > 0 else math.inf,
    )
