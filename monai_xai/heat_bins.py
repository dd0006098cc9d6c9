"""Heat bins: a heatmap in [0, 1] cut into ``n_bins`` equal, named, coloured bins, the one vocabulary of every
viewer-facing result of bins (MONAI Label's label map, the Slicer ``.seg.nrrd``, the DICOM SEG).

Bin ``k`` (1-based) covers ``[(k - 1) / n, k / n)`` (the last bin includes 1), is label value ``k`` and is named e.g.
``"heat 0.5-0.6"``; voxels below ``min_heat`` get label 0 (no segment). Each bin carries a colour of a perceptual
dark-to-bright ramp (matplotlib's ``plasma``: violet, magenta, orange, yellow) whose lightness rises with the heat.
Needs no MONAI Label (:mod:`monai_xai.label.heatmap_io` re-exports these for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib import colormaps

__all__ = ["HeatBin", "heat_bins", "heat_color", "quantize_heatmap"]

# perceptually uniform, lightness rising with the value (unlike a rainbow, whose bright band sits in the middle)
_HEAT_RAMP = colormaps["plasma"]


@dataclass(frozen=True)
class HeatBin:
    """One bin of a quantised heatmap.

    Attributes:
        label: label value in the label map, 1..n_bins.
        name: segment name, ``"heat <low>-<high>"``.
        low: lower edge (included).
        high: upper edge (excluded, except 1.0 for the last bin).
        color: RGB in [0, 1], the heat ramp's colour of the bin's centre.
    """

    label: int
    name: str
    low: float
    high: float
    color: tuple[float, float, float]


def heat_color(value: float) -> tuple[float, float, float]:
    """Colour of ``value`` in [0, 1] on the perceptual heat ramp (dark violet at 0, yellow at 1), as RGB in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"value must be in [0, 1], got {value}.")
    return tuple(round(float(channel), 4) for channel in _HEAT_RAMP(value)[:3])


def _decimals(n_bins: int) -> int:
    """Decimals for the edges k / n_bins: exact when 3 or fewer suffice (1 for 10 bins, 2 for 4, 3 for 8), else as
    many as keep neighbouring names distinct (2 up to 100 bins, 3 above)."""
    for decimals in (1, 2, 3):
        if 10**decimals % n_bins == 0:
            return decimals
    return 2 if n_bins <= 100 else 3


def heat_bins(n_bins: int) -> list[HeatBin]:
    """The ``n_bins`` equal bins of [0, 1], coldest first.

    Args:
        n_bins: number of bins, 1 to 255 (label values must fit ``uint8``).

    Returns:
        list of :class:`HeatBin`, ``label`` 1..n_bins.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= 255:
        raise ValueError(f"n_bins must be an int in [1, 255] (label values are uint8), got {n_bins!r}.")
    decimals = _decimals(n_bins)
    bins = []
    for index in range(n_bins):
        low, high = index / n_bins, (index + 1) / n_bins
        name = f"heat {low:.{decimals}f}-{high:.{decimals}f}"
        bins.append(HeatBin(index + 1, name, low, high, heat_color((low + high) / 2)))
    return bins


def quantize_heatmap(heatmap: torch.Tensor, n_bins: int, min_heat: float = 0.0) -> torch.Tensor:
    """Label map of a heatmap: voxel value ``h`` in bin ``k`` (see :func:`heat_bins`) gets label ``k``.

    Args:
        heatmap: tensor of any shape with values in [0, 1] (e.g. (1, *spatial)).
        n_bins: number of equal bins of [0, 1], 1 to 255.
        min_heat: voxels with ``h < min_heat`` get label 0 (no segment); in [0, 1], default 0 (every voxel labelled).

    Returns:
        uint8 tensor of ``heatmap``'s shape and device, values 0..n_bins.
    """
    heat_bins(n_bins)  # validates n_bins
    if not 0.0 <= min_heat <= 1.0:
        raise ValueError(f"min_heat must be in [0, 1], got {min_heat}.")
    if heatmap.numel() and (heatmap.amin() < 0 or heatmap.amax() > 1 or not torch.isfinite(heatmap).all()):
        raise ValueError(
            f"heatmap values must be finite and in [0, 1], got range [{float(heatmap.amin())}, "
            f"{float(heatmap.amax())}]; normalise it first (e.g. monai_xai.utils.normalize_per_sample)."
        )
    values = torch.as_tensor(heatmap).float()
    labels = (values * n_bins).floor().clamp(0, n_bins - 1) + 1
    return torch.where(values >= min_heat, labels, torch.zeros_like(labels)).to(torch.uint8)
