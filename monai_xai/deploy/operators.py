"""MONAI Deploy operators (monai-deploy-app-sdk, Holoscan) that explain the series a DICOM selector picked and write
the explanation as DICOM objects. Thin adapters of :func:`monai_xai.deploy.explain_series` and
:func:`monai_xai.deploy.write_series_explanation`; they need the SDK (see docs/deploy.md for its environment).

A pipeline: ``DICOMDataLoaderOperator`` -> ``DICOMSeriesSelectorOperator`` -> :class:`BundleExplainOperator` ->
:class:`DICOMExplanationWriterOperator` (``examples/deploy_explain/app.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_xai.bundle.loading import load_trained_bundle
from monai_xai.deploy.explain import SeriesExplanation, explain_series, write_series_explanation
from monai_xai.dicom import series_from_datasets
from monai_xai.explanation import ExplainStep

__all__ = ["BundleExplainOperator", "DICOMExplanationWriterOperator"]

SELECTED_SERIES = "study_selected_series_list"  # the DICOMSeriesSelectorOperator's output
EXPLANATIONS = "explanations"


class BundleExplainOperator(Operator):
    """Explain every series selected by a ``DICOMSeriesSelectorOperator`` with a trained bundle.

    Named input ``study_selected_series_list`` (a list of the SDK's ``StudySelectedSeries``); named output
    ``explanations``: a list of :class:`~monai_xai.deploy.SeriesExplanation`, one per selected series, maps on the
    series' own grid.

    Args:
        fragment: the application.
        bundle_path: the bundle folder (``configs/inference.json``, ``models/model.pt``).
        target_layer: the layer to explain; default the bundle's own ``xai_target_layer`` (its explain.json), else
            the one chosen on the first series (:func:`~monai_xai.cams.choose_target_layer`).
        methods: CAM methods; default ``("hirescam",)``.
        class_idx: the explained class; default the bundle's ``xai_class``, else a classifier's predicted class, a
            segmenter's every foreground class.
        pixel_set: a segmenter's pixel set; default the bundle's ``xai_pixel_set``.
        class_names: the classes' names for the descriptions.
        series_per_study: explain only the first so many selected series of each study (None: all); with the
            selector's ``sort_by_sop_instance_count``, 1 is the series with the most slices.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        bundle_path: str | Path,
        target_layer: str | None = None,
        methods: Sequence[str] = ("hirescam",),
        class_idx: int | None = None,
        pixel_set: str | None = None,
        class_names: Sequence[str] | None = None,
        series_per_study: int | None = None,
        **kwargs,
    ) -> None:
        self.bundle = load_trained_bundle(bundle_path)
        settings = self.bundle.settings.replace(target_layers=target_layer, class_idx=class_idx, pixel_set=pixel_set)
        self.step = ExplainStep(settings.request(methods=tuple(methods), window=self.bundle.window))
        self.class_names = class_names
        self.series_per_study = series_per_study
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SELECTED_SERIES)
        spec.output(EXPLANATIONS)

    def compute(self, op_input, op_output, context) -> None:
        explanations: list[SeriesExplanation] = []
        for study in op_input.receive(SELECTED_SERIES) or []:
            for selected in study.selected_series[: self.series_per_study]:
                datasets = [sop.get_native_sop_instance() for sop in selected.series.get_sop_instances()]
                series = series_from_datasets(datasets)
                self._logger.info(f"explaining {series.summary()} ({selected.selection_name})")
                explanations.append(
                    explain_series(self.bundle.network, self.bundle.preprocessing, series, self.step, self.class_names)
                )
        if not explanations:
            raise ValueError("no DICOM series was selected: check the selector's rules against the input studies.")
        op_output.emit(explanations, EXPLANATIONS)


class DICOMExplanationWriterOperator(Operator):
    """Write each explanation as DICOM objects of its series: per method a Parametric Map and a SEG of the heat bins,
    and one Structured Report (:func:`~monai_xai.deploy.write_series_explanation`), under
    ``<output_folder>/<SeriesInstanceUID>/``.

    Named input ``explanations`` (from :class:`BundleExplainOperator`).

    Args:
        fragment: the application.
        output_folder: where to write (the application's output folder).
        n_bins: heat bins of the SEG.
        min_heat: heat below this is in no segment.
        model_name: the explained model's name in the objects (ManufacturerModelName).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_folder: str | Path,
        n_bins: int = 10,
        min_heat: float = 0.1,
        model_name: str = "monai-xai",
        **kwargs,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.n_bins = n_bins
        self.min_heat = min_heat
        self.model_name = model_name
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(EXPLANATIONS)

    def compute(self, op_input, op_output, context) -> None:
        for explanation in op_input.receive(EXPLANATIONS):
            folder = self.output_folder / explanation.series.uid
            files = write_series_explanation(folder, explanation, self.n_bins, self.min_heat, self.model_name)
            self._logger.info(f"wrote {[file.name for file in files]} to {folder}")
