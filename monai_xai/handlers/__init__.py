"""Ignite handlers for explaining evaluators: XAI metrics per method, timing, the run's records and the writers that
read them (files, tables, HTML report), and MLflow tracking.

They read only the engine output (and batch) that an :class:`~monai_xai.inferers.XAIInferer` fills, under the keys of
:class:`~monai_xai.enums.XAIKeys`, and the run's records (:class:`~monai_xai.handlers.records.RunRecords`) that the
:class:`XAIRecorder` keeps in ``engine.state.xai_results``.
"""

from monai_xai.handlers.dicom_writer import DicomExplanationWriter
from monai_xai.handlers.mlflow_artifacts import XAIMLflowHandler, tracking_server_error
from monai_xai.handlers.ordering import AttachedLast
from monai_xai.handlers.recorder import XAIRecorder
from monai_xai.handlers.records import CaseRecord, MethodRecord, RunRecords, run_records
from monai_xai.handlers.report_writer import XAIReportWriter
from monai_xai.handlers.run_writers import explanation_writers
from monai_xai.handlers.saliency_writer import SaliencyWriter
from monai_xai.handlers.table_writer import XAITableWriter
from monai_xai.handlers.timing import CaseValueMetric, XAITimingHandler
from monai_xai.handlers.xai_metrics import SaliencyMetricHandler, XAIMetricHandler

__all__ = [
    "AttachedLast",
    "XAIMetricHandler",
    "SaliencyMetricHandler",
    "XAITimingHandler",
    "CaseValueMetric",
    "XAIRecorder",
    "RunRecords",
    "CaseRecord",
    "MethodRecord",
    "run_records",
    "explanation_writers",
    "SaliencyWriter",
    "XAITableWriter",
    "XAIReportWriter",
    "DicomExplanationWriter",
    "XAIMLflowHandler",
    "tracking_server_error",
]
