"""Where a region lies: image sides in 2D, patient sides in 3D (from the affine), and the atlas labels it covers.

2D maps follow MONAI's readers: axis 0 is the file's column (left -> right), axis 1 its row (top -> bottom), as the
overlays draw them; ``axes_2d="rc"`` reads a (row, column) array instead.

3D maps use their affine (voxel index -> world, mm). World axes are RAS+ (nibabel, and MONAI's readers by default:
+x towards the patient's right, +y anterior, +z superior) or LPS+ (ITK, DICOM) by ``space``. The region's world
centroid is compared with the world centre of the volume along each world axis, scaled by the volume's half extent
along that axis (its corners projected), so RAS, LPS and oblique grids of the same anatomy give the same words. The
cut-offs are in :mod:`~monai_xai.describe.wording` (left / right of the midline is named closer to it than the
other sides).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from monai_xai.describe.wording import LATERAL_CUTOFF, SIDE_CUTOFF, Wording

__all__ = ["atlas_shares", "image_location", "patient_location", "read_label_names", "readable_atlas_name"]

# world axis -> (patient side at the low end, at the high end)
_SIDES = {"RAS": (("L", "R"), ("P", "A"), ("I", "S")), "LPS": (("R", "L"), ("A", "P"), ("I", "S"))}


def _side(position: float, low: str, high: str, cutoff: float = SIDE_CUTOFF) -> str | None:
    if position < -cutoff:
        return low
    return high if position > cutoff else None


def image_location(centroid: tuple[float, ...], shape: tuple[int, ...], axes_2d: str = "xy") -> tuple[str, ...]:
    """Sides of a 2D image the centroid lies towards: keys ``"upper"``/``"lower"`` then ``"left"``/``"right"``.

    Args:
        centroid: (2,) centroid in voxel indices.
        shape: (2,) spatial shape.
        axes_2d: ``"xy"`` (MONAI: axis 0 = column, axis 1 = row) or ``"rc"`` (axis 0 = row, axis 1 = column).

    Returns:
        e.g. ``("lower", "right")``, ``("upper",)`` or ``()`` (central).
    """
    if axes_2d not in ("xy", "rc"):
        raise ValueError(f'axes_2d must be "xy" (MONAI column, row) or "rc" (row, column), got {axes_2d!r}.')
    column_axis, row_axis = (0, 1) if axes_2d == "xy" else (1, 0)
    relative = [(c - (n - 1) / 2) / max((n - 1) / 2, 1e-9) for c, n in zip(centroid, shape)]
    sides = (_side(relative[row_axis], "upper", "lower"), _side(relative[column_axis], "left", "right"))
    return tuple(side for side in sides if side)


def patient_location(
    centroid: tuple[float, ...], shape: tuple[int, ...], affine: torch.Tensor, space: str = "RAS"
) -> tuple[str, ...]:
    """Patient sides a 3D centroid lies towards, as codes ``L``/``R``, ``A``/``P``, ``S``/``I`` (in that order).

    Args:
        centroid: (3,) centroid in voxel indices.
        shape: (3,) spatial shape.
        affine: (4, 4) voxel index -> world (mm).
        space: ``"RAS"`` or ``"LPS"``: the world axes of ``affine``.

    Returns:
        e.g. ``("L", "A")``; ``()`` when central along every axis.
    """
    if space not in _SIDES:
        raise ValueError(f'space must be "RAS" (nibabel, MONAI) or "LPS" (ITK, DICOM), got {space!r}.')
    affine = torch.as_tensor(affine, dtype=torch.float64)
    linear, offset = affine[:3, :3], affine[:3, 3]
    half = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64)
    world_centre = linear @ half + offset
    world_centroid = linear @ torch.tensor(centroid, dtype=torch.float64) + offset
    half_extent = (linear.abs() @ half).clamp_min(1e-9)
    relative = ((world_centroid - world_centre) / half_extent).tolist()
    cutoffs = (LATERAL_CUTOFF, SIDE_CUTOFF, SIDE_CUTOFF)  # world x is the left-right axis in RAS and LPS
    codes = [_side(p, *sides, cutoff) for p, sides, cutoff in zip(relative, _SIDES[space], cutoffs)]
    return tuple(code for code in codes if code)


def read_label_names(path: str | Path) -> dict[int, str]:
    """Names of an atlas's labels from a text table, one ``<index> <name> [...]`` per line (mricron's ``.nii.txt``,
    e.g. ``37 Hippocampus_L 4101``; tabs or spaces; lines starting with ``#`` skipped)."""
    names: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"{path}:{number}: expected '<index> <name>', got {line!r}.")
        names[int(fields[0])] = fields[1]
    return names


def readable_atlas_name(name: str, wording: Wording) -> str:
    """``Hippocampus_L`` -> ``left hippocampus``; ``Frontal_Sup_R`` -> ``right frontal sup``; other names with their
    underscores as spaces."""
    parts = name.replace("-", "_").split("_")
    hemisphere = wording.atlas_hemispheres.get(parts[-1]) if len(parts) > 1 else None
    words = " ".join(parts[:-1] if hemisphere else parts).lower()
    return f"{hemisphere} {words}" if hemisphere else words


def atlas_shares(
    region: torch.Tensor, atlas: torch.Tensor, names: Mapping[int, str], min_share: float = 0.2
) -> list[tuple[str, float]]:
    """Named atlas labels under a region, by the share of its voxels they hold.

    Args:
        region: (*spatial) bool.
        atlas: (*spatial) integer label map on the same grid (0 = no label).
        names: label -> name; labels without a name are ignored.
        min_share: labels holding less than this share are left out, except the largest one.

    Returns:
        ``[(name, share), ...]``, largest share first; empty when no named label is under the region.
    """
    labels = atlas.to(region.device).long()[region]
    counts = torch.bincount(labels[labels > 0])
    shares = [(int(label), count / region.sum().item()) for label, count in enumerate(counts.tolist()) if count]
    named = sorted(((names[label], share) for label, share in shares if label in names), key=lambda item: -item[1])
    return [item for index, item in enumerate(named) if index == 0 or item[1] >= min_share]
