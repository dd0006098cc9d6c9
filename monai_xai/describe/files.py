"""Describe a saved heatmap: read it, and an atlas or masks in the same world space, as MONAI reads images (RAS)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, ResampleToMatch

from monai_xai.describe.anatomy import read_label_names
from monai_xai.describe.description import CaseDescription, describe

__all__ = ["describe_files"]


def _read(path: str | Path) -> MetaTensor:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


def _on_grid(labels: MetaTensor, reference: MetaTensor) -> torch.Tensor:
    """(1, *spatial) ``labels`` on ``reference``'s grid: as is when the grids agree, else resampled by world
    coordinates with nearest-neighbour interpolation (labels stay labels)."""
    same_grid = labels.shape[1:] == reference.shape[1:] and torch.allclose(
        labels.affine.double(), reference.affine.double(), atol=1e-4
    )
    if same_grid:
        return labels
    return ResampleToMatch(mode="nearest", padding_mode="zeros")(labels, reference)


def describe_files(
    saliency_file: str | Path,
    atlas: str | Path | None = None,
    atlas_names: str | Path | None = None,
    masks: Mapping[str, str | Path] | None = None,
    **options: Any,
) -> CaseDescription:
    """Describe a heatmap file (NIfTI, NRRD, ... as written by the explanation runs).

    Args:
        saliency_file: the map, 2D or 3D, one channel.
        atlas: a label map in the same world space (e.g. AAL for a map registered to MNI); resampled to the map's grid
            by world coordinates (nearest neighbour) when its grid differs.
        atlas_names: the atlas's names table (``<index> <name>`` lines, e.g. mricron's ``aal.nii.txt``).
        masks: ``{name: file}``: label files on the map's world space; every non-zero voxel is in the mask.
        options: other :func:`~monai_xai.describe.describe` arguments (``probabilities``, ``class_names``,
            ``threshold``, ``method``, ...).
    """
    saliency = _read(saliency_file)
    if (atlas is None) != (atlas_names is None):
        raise ValueError("give the atlas and its names table together (atlas=..., atlas_names=...).")
    atlas_map = None if atlas is None else _on_grid(_read(atlas), saliency).round().long()
    named = {name: _on_grid(_read(path), saliency) != 0 for name, path in (masks or {}).items()}
    return describe(
        saliency,
        atlas=atlas_map,
        atlas_names=None if atlas_names is None else read_label_names(atlas_names),
        masks=named or None,
        **options,
    )
