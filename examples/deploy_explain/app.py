"""A MONAI Deploy application: explain a bundle's prediction on the DICOM series of a study folder and write the
explanation as DICOM objects (a Parametric Map and a SEG of the heat bins per method, and a Structured Report).

    python examples/deploy_explain/app.py -i <DICOM folder> -o <output folder> -m <bundle folder>

(or with the SDK's environment variables HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH, HOLOSCAN_MODEL_PATH). Each
study's CT or MR series with the most slices is explained (``SELECTION_RULES`` below, the SDK's
DICOMSeriesSelectorOperator); the layer, class and pixel set are the bundle's own (``configs/explain.json``); the
methods are ``MONAI_XAI_METHODS`` (comma-separated, default ``hirescam,gradcam``). Output:
``<output>/<SeriesInstanceUID>/<method>_pm.dcm``, ``<method>_seg.dcm``, ``explanation_sr.dcm``. Needs the
environment of docs/deploy.md.
"""

import json
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

from monai_xai.deploy.operators import BundleExplainOperator, DICOMExplanationWriterOperator

SELECTION_RULES = json.dumps({"selections": [{"name": "CT or MR volume", "conditions": {"Modality": "(?i)^(CT|MR)$"}}]})


class ExplainApp(Application):
    """DICOM folder -> studies -> the selected series -> the bundle's explanation -> DICOM PM, SEG and SR."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        bundle = Path(context.model_path)
        explain_config = bundle / "configs" / "explain.json"
        settings = json.loads(explain_config.read_text()) if explain_config.is_file() else {}
        methods = os.environ.get("MONAI_XAI_METHODS", "hirescam,gradcam").split(",")
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path),
                                         name="dicom_loader")  # fmt: skip
        selector = DICOMSeriesSelectorOperator(self, rules=SELECTION_RULES, all_matched=True,
                                               sort_by_sop_instance_count=True, name="series_selector")  # fmt: skip
        explain = BundleExplainOperator(self, bundle_path=bundle, methods=methods, series_per_study=1,
                                        class_names=settings.get("xai_class_names"), name="explain")  # fmt: skip
        writer = DICOMExplanationWriterOperator(self, output_folder=Path(context.output_path), model_name=bundle.name,
                                                name="dicom_writer")  # fmt: skip
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, explain, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(explain, writer, {("explanations", "explanations")})


if __name__ == "__main__":
    ExplainApp().run()
