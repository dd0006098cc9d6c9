"""Metric plots: one bar chart per metric across methods, and score curves (e.g. ROAD over removal percentiles)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from monai_xai.atomic import atomic_path

__all__ = ["save_figure", "plot_metric_bars", "plot_metric_curves"]


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as an image at ``path`` (parent folders created), at the resolution all our plots use, whole
    or not at all (:func:`~monai_xai.atomic.atomic_path`)."""
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=80, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def plot_metric_bars(values: Mapping[str, Mapping[str, float]], path: str | Path, title: str | None = None) -> Path:
    """One panel per metric, one bar per method.

    Args:
        values: {metric name: {method: value}}; NaN values are drawn as missing bars.
        path: output PNG (parent folders are created).
        title: figure title.
    """
    if not values:
        raise ValueError("values is empty; nothing to plot.")
    figure = Figure(figsize=(3.0 * len(values), 3.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(values)))
    for axis, (metric, per_method) in zip(axes, values.items()):
        methods = list(per_method)
        axis.bar(range(len(methods)), [float(per_method[m]) for m in methods], color="tab:blue")
        axis.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        axis.set_title(metric, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def plot_metric_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    xtick_labels: Sequence[str] | None = None,
    reference: float | None = None,
) -> Path:
    """Several curves on one axis (e.g. one per method).

    Args:
        curves: {label: (x values, y values)} of equal lengths per curve.
        path: output PNG (parent folders are created).
        xlabel, ylabel, title: axis labels and title.
        xtick_labels: optional names of the x positions 0, 1, 2, ... (e.g. layer names), drawn vertically; the
            figure widens with their number.
        reference: optional y value drawn as a dashed grey line (e.g. a pass threshold).
    """
    if not curves:
        raise ValueError("curves is empty; nothing to plot.")
    if xtick_labels is None:
        size = (4.5, 3.4)
    else:  # room for the vertical names below the axis and for the legend beside it
        size = (max(6.0, 0.2 * len(xtick_labels) + 4.0), 3.4 + 0.07 * max(map(len, xtick_labels), default=0))
    figure = Figure(figsize=size, layout="constrained")
    axis = figure.subplots()
    for label, (x, y) in curves.items():
        if len(x) != len(y):
            raise ValueError(f"curve {label!r} has {len(x)} x values but {len(y)} y values.")
        axis.plot(list(x), list(y), marker="o", markersize=3 if xtick_labels else 6, label=label)
    if xtick_labels is not None:
        axis.set_xticks(range(len(xtick_labels)), list(xtick_labels), rotation=90, fontsize=7)
    if reference is not None:
        axis.axhline(reference, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if xtick_labels is None:
        axis.legend(fontsize=8)
    else:
        axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        axis.set_title(title, fontsize=10)
    return save_figure(figure, path)
