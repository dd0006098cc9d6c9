"""Pictures of explanations: heatmap overlays (mid slices for 3D) and metric plots, written with matplotlib (no GUI)."""

from monai_xai.visualize.overlays import mid_slices, save_overlay_png
from monai_xai.visualize.plots import plot_metric_bars, plot_metric_curves

__all__ = ["mid_slices", "save_overlay_png", "plot_metric_bars", "plot_metric_curves"]
