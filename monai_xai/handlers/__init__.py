"""Ignite handlers for explaining evaluators: XAI metrics per method, timing, saliency writers and MLflow tracking.

They read only the engine output (and batch) that an :class:`~monai_xai.inferers.XAIInferer` fills, under the keys of
:class:`~monai_xai.enums.XAIKeys`.
"""

from monai_xai.handlers.mlflow_artifacts import XAIMLflowHandler, tracking_server_error
from monai_xai.handlers.report_writer import XAIReportWriter
from monai_xai.handlers.saliency_writer import SaliencyWriter
from monai_xai.handlers.timing import CaseValueMetric, XAITimingHandler
from monai_xai.handlers.xai_metrics import XAI_METRICS, SaliencyMetricHandler, XAIMetricHandler, region_mask

__all__ = [
    "XAIMetricHandler",
    "SaliencyMetricHandler",
    "XAI_METRICS",
    "region_mask",
    "XAITimingHandler",
    "CaseValueMetric",
    "SaliencyWriter",
    "XAIMLflowHandler",
    "tracking_server_error",
    "XAIReportWriter",
]
