"""MONAI Label integration: infer tasks that serve explanation maps of bundles and nnU-Net v2 models to 3D Slicer
and other REST clients.

Importing this package needs ``monailabel`` (``pip install monailabel``, with ``pydicom<3`` for monailabel 0.8.5).
"""

from monai_xai.label.guard import GuardedInferMixin
from monai_xai.label.heatmap_io import (
    DescribeHeatmapd,
    HeatBin,
    HeatmapToInputGridd,
    QuantizeHeatmapd,
    heat_bins,
    heat_color,
    quantize_heatmap,
    resample_to_grid,
)
from monai_xai.label.infer_tasks import DEFAULT_METHODS, BundleExplainTask, CompatibleBundleInferTask
from monai_xai.label.nnunet_task import NNUNetExplainTask
from monai_xai.label.options import ExplainOptions, InvalidExplainRequest, parse_explain_options
from monai_xai.label.seg_nrrd import write_segmentation_nrrd

__all__ = [
    "GuardedInferMixin",
    "BundleExplainTask",
    "CompatibleBundleInferTask",
    "NNUNetExplainTask",
    "DEFAULT_METHODS",
    "ExplainOptions",
    "InvalidExplainRequest",
    "parse_explain_options",
    "DescribeHeatmapd",
    "HeatBin",
    "HeatmapToInputGridd",
    "QuantizeHeatmapd",
    "heat_bins",
    "heat_color",
    "quantize_heatmap",
    "resample_to_grid",
    "write_segmentation_nrrd",
]
