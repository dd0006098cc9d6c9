"""Pictures of explanations: heatmap overlays (3D: slices through the map's peak) and metric plots, drawn with
matplotlib without a GUI; interactive self-contained HTML reports (NiiVue) per case and an index per run."""

from monai_xai.visualize.overlays import (
    fullest_slice,
    orthogonal_slices,
    peak_voxel,
    save_map_grid_png,
    save_overlay_png,
)
from monai_xai.visualize.plots import plot_metric_bars, plot_metric_curves
from monai_xai.visualize.report import read_case_report, write_case_report, write_index

__all__ = [
    "fullest_slice",
    "orthogonal_slices",
    "peak_voxel",
    "save_map_grid_png",
    "save_overlay_png",
    "plot_metric_bars",
    "plot_metric_curves",
    "write_case_report",
    "write_index",
    "read_case_report",
]
