"""``DicomExplanationWriter``: each DICOM case's explanation as standard DICOM objects of the series it explains.

Files under the run's results folder (the :class:`~monai_xai.handlers.XAIRecorder`'s ``output_dir``), per case whose
image is a DICOM series (a series folder, or a list of one series' files, read by
:class:`~monai_xai.dicom.DicomSeriesReader`):

- ``<case>/dicom/<case>_<method>_pm.dcm``: the map as a Parametric Map (:func:`~monai_xai.dicom.write_parametric_map`);
- ``<case>/dicom/<case>_<method>_seg.dcm``: its heat bins as a SEG, the bins of the ``.seg.nrrd``
  (:func:`~monai_xai.dicom.write_heat_seg`);
- ``<case>/dicom/<case>_sr.dcm``: a Structured Report with every method's description in words and metric values,
  referring to the maps and SEGs (:func:`~monai_xai.dicom.write_explanation_sr`), written when the run completes (the
  metrics are known then).

File names are made safe by :func:`~monai_xai.naming.safe_stem` (a method ``grad-cam:GradCAM`` gives
``<case>_grad-cam_GradCAM_pm.dcm``).

Each is a new series of the source's study, on its frames (the map goes back through the inverse of the bundle's
preprocessing, as :class:`~monai_xai.handlers.SaliencyWriter`'s NIfTI maps do, and is resampled by world coordinates
onto the series' grid when that inverse does not end there), and refers to the source instances. A case whose image
is not a DICOM series gets one logged line and no DICOM objects. The written files are added to the records
(``MethodRecord.files``: ``"dicom_pm"``, ``"dicom_seg"``, ``"dicom_sr"``); each file is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform
from monai.utils import CommonKeys, ImageMetaKey
from pydicom.dataset import Dataset

import monai_xai.dicom as dicom_io
from monai_xai.dicom import (
    SERIES_UID_KEY,
    DicomSeries,
    SeriesSelector,
    find_series,
    is_dicom_series_path,
    select_series,
    series_affine,
    to_series_grid,
)
from monai_xai.dicom.series import is_dicom_file
from monai_xai.enums import saliency_key
from monai_xai.handlers.engine_data import case_value
from monai_xai.handlers.records import run_records
from monai_xai.handlers.saliency_writer import maps_on_original_grid, original_grid_inverse
from monai_xai.naming import safe_stem

__all__ = ["DicomExplanationWriter", "source_series"]

logger = logging.getLogger(__name__)

# SeriesNumbers of the written objects: method m's map 9001 + 10 m, its SEG 9002 + 10 m; the report 9003
_FIRST_SERIES_NUMBER = 9001


def source_series(image: Any, selector: SeriesSelector = None) -> DicomSeries | None:
    """The DICOM series a loaded image was read from, or None when it was not read from one (a NIfTI file, an array).

    Found from the image's meta data: ``filename_or_obj`` (the series folder, or the first file of a list of one
    series' files) and, when the batch kept it, ``dicom_series_uid`` (:data:`~monai_xai.dicom.SERIES_UID_KEY`; a batch
    mixing DICOM and NIfTI cases keeps only the meta keys they share), else ``selector`` (the reader's, e.g.
    ``xai_dicom_series``) for a folder or the series holding the file.

    Raises:
        ValueError: a folder whose series the selection does not pick out (see :func:`~monai_xai.dicom.select_series`).
    """
    meta = image.meta if isinstance(image, MetaTensor) else {}
    source = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    uid = meta.get(SERIES_UID_KEY)
    if path.is_dir():
        if not is_dicom_series_path(path):
            return None
        found = find_series(path)
    elif path.is_file() and is_dicom_file(path):
        found = find_series(path.parent)
        if not uid:
            resolved = path.resolve()
            return next((series for series in found if resolved in {file.resolve() for file in series.files}), None)
    else:
        return None
    return select_series(found, str(uid) if uid else selector)


def _on_series_grid(heat: torch.Tensor, series: DicomSeries) -> torch.Tensor:
    """A (1, *spatial) map on the series' grid: as it is when its grid is the series' own, else resampled there by
    world coordinates (values outside its field of view: 0)."""
    heat = heat if isinstance(heat, MetaTensor) else MetaTensor(heat)
    expected = series_affine(series)
    if tuple(heat.shape[1:]) == tuple(series.shape) and np.allclose(heat.affine.numpy(), expected, atol=1e-3):
        return heat.clamp(0, 1)
    return to_series_grid(heat.float(), series)


def _reference(dataset: Dataset) -> Dataset:
    """What a report needs of a written object to refer to it (its identity), without its pixels in memory."""
    reference = Dataset()
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID"):
        setattr(reference, keyword, getattr(dataset, keyword))
    return reference


@dataclass
class _WrittenCase:
    """A DICOM case whose maps are written and whose report waits for the run's metrics."""

    folder: Path
    series: DicomSeries
    references: dict[str, list[Dataset]]


class DicomExplanationWriter:
    """Write each DICOM case's maps as a Parametric Map and a SEG per method, and one SR per case (see the module
    docstring for the files).

    Attach it after the :class:`~monai_xai.handlers.XAIRecorder` (whose records name the cases and hold the
    descriptions and metrics) and before the :class:`~monai_xai.handlers.XAITableWriter`; ``configs/explain.json``
    does so when ``xai_dicom_output`` is true.

    Args:
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image (its meta data say which series it was read from).
        preprocessing: the bundle's invertible preprocessing (``@preprocessing``), whose inverse takes the maps back
            onto the series' grid; None: the maps are resampled there from the network's grid by world coordinates.
        series: which series of a folder holding several, as the reader picked it (``xai_dicom_series``); only used
            when the batch lost the image's ``dicom_series_uid``.
        n_bins: the SEG's heat bins (as the ``.seg.nrrd``'s), 1 to 255.
        min_heat: heat below this is in no segment.
        model_name: the explained model, the objects' ManufacturerModelName (e.g. the bundle's folder name).

    Raises:
        ModuleNotFoundError: highdicom is not installed (``pip install 'monai-xai[dicom]'``).
    """

    def __init__(
        self,
        methods: str | Sequence[str],
        image_key: str = CommonKeys.IMAGE,
        preprocessing: InvertibleTransform | None = None,
        series: SeriesSelector = None,
        n_bins: int = 10,
        min_heat: float = 0.1,
        model_name: str = "monai-xai",
    ) -> None:
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self._inverse = original_grid_inverse(preprocessing, image_key)
        self.series = series
        self.n_bins = n_bins
        self.min_heat = min_heat
        self.model_name = model_name
        dicom_io.write_parametric_map  # noqa: B018  (highdicom missing: the error, with how to install it, comes now)
        self._written: dict[str, _WrittenCase] = {}

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_cases)
        engine.add_event_handler(Events.COMPLETED, self.write_reports)

    def write_cases(self, engine: Any) -> None:
        """Write the current iteration's Parametric Maps and SEGs of its DICOM cases; record the files."""
        records = run_records(engine, type(self).__name__)
        for index, case in enumerate(records.iteration):
            image = case_value(engine, index, self.image_key)
            series = source_series(image, self.series)
            if series is None:
                source = image.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(image, MetaTensor) else None
                logger.info("xai: case %s (%s) is not a DICOM series: no DICOM objects written", case.name, source)
                continue
            maps = {method: case_value(engine, index, saliency_key(method)) for method in self.methods}
            on_grid = maps_on_original_grid(self._inverse, maps, image, self.image_key)
            folder = records.output_dir / case.name / "dicom"
            references: dict[str, list[Dataset]] = {}
            for number, method in enumerate(self.methods):
                heat = _on_series_grid(on_grid[method], series)
                series_number = _FIRST_SERIES_NUMBER + 10 * number
                pm_path = folder / f"{safe_stem(f'{case.name}_{method}_pm')}.dcm"
                seg_path = folder / f"{safe_stem(f'{case.name}_{method}_seg')}.dcm"
                pm = dicom_io.write_parametric_map(
                    pm_path, heat, series, method, series_number=series_number, model_name=self.model_name
                )
                seg = dicom_io.write_heat_seg(
                    seg_path, heat, series, method, self.n_bins, self.min_heat,
                    series_number=series_number + 1, model_name=self.model_name,
                )  # fmt: skip
                references[method] = [_reference(pm), _reference(seg)]
                case.methods[method].files.update(dicom_pm=pm_path, dicom_seg=seg_path)
            self._written[case.name] = _WrittenCase(folder, series, references)

    def write_reports(self, engine: Any) -> None:
        """Write the SR of every DICOM case this process wrote maps for, with the run's descriptions and metrics."""
        records = run_records(engine, type(self).__name__)
        for name, written in self._written.items():
            case = records.case(name)
            metrics = {
                method: {metric: float(value) for metric, value in record.metrics.items()}
                for method, record in case.methods.items()
            }
            descriptions = {method: record.text for method, record in case.methods.items() if record.text}
            path = written.folder / f"{safe_stem(f'{name}_sr')}.dcm"
            dicom_io.write_explanation_sr(
                path, written.series, metrics, descriptions, written.references, series_number=_FIRST_SERIES_NUMBER + 2
            )
            for record in case.methods.values():
                record.files["dicom_sr"] = path
        self._written.clear()
