"""An explanation's metrics and its description in words as a DICOM Comprehensive Structured Report of the source
series, referring to the Parametric Maps and Segmentations written for it (highdicom)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from monai_xai.atomic import atomic_path
from monai_xai.dicom.grid import MANUFACTURER, Source, as_series, explanation_code, private_code

__all__ = ["write_explanation_sr", "REPORT_TITLE", "DESCRIPTION", "metric_code"]

REPORT_TITLE = private_code("xai-report", "Explanation report")
DESCRIPTION = private_code("description", "Explanation in words")
EXPLANATION_OBJECT = private_code("xai-object", "Explanation object")


def metric_code(metric: str) -> Code:
    """The coded concept of a metric, e.g. ``ehr_auc`` (names as ``monai_xai.handlers.XAI_METRICS`` has them)."""
    return private_code(metric, metric)


def write_explanation_sr(
    path: str | Path,
    source: Source,
    metrics: Mapping[str, Mapping[str, float]],
    descriptions: Mapping[str, str],
    references: Mapping[str, Sequence[Dataset]] | None = None,
    series_number: int = 9003,
    series_description: str = "monai-xai explanation report",
) -> Dataset:
    """Write a Comprehensive SR: per method, its description in words, its metrics and references to its objects.

    Content tree (CONTAINS relationships; codes of the private scheme ``99MONAIXAI`` where DICOM has none)::

        CONTAINER "Explanation report"
          CONTAINER "Class-activation map (<method>)"      one per method, in the order of ``metrics`` then
            TEXT "Explanation in words" = description        ``descriptions``
            NUM "<metric>" = value, unit "1" (no units)      one per metric; NaN values (undefined) are left out
            COMPOSITE "Explanation object" -> PM / SEG       one per referenced dataset

    The report is a new series of the source's study; its evidence lists the referenced objects
    (CurrentRequestedProcedureEvidenceSequence) and the source instances (PertinentOtherEvidenceSequence).

    Args:
        path: the file to write (e.g. ``<case>_sr.dcm``).
        source: the explained series or its slices' headers.
        metrics: ``{method: {metric: value}}``, e.g. ``{"hirescam": {"ehr_auc": 0.72, "pointing_game": 1.0}}``.
        descriptions: ``{method: text}``, e.g. :func:`monai_xai.describe.describe`'s ``.text``.
        references: ``{method: [dataset, ...]}``, the objects written for that method (the datasets that
            :func:`~monai_xai.dicom.write_parametric_map` and :func:`~monai_xai.dicom.write_heat_seg` return).
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription.

    Returns:
        the written dataset.

    Raises:
        ValueError: no method at all, or a metric value that is not a number.
    """
    series = as_series(source)
    references = references or {}
    methods = list(dict.fromkeys([*metrics, *descriptions, *references]))
    if not methods:
        raise ValueError("nothing to report: give the metrics, descriptions or objects of at least one method.")
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE)
    sections = []
    evidence = list(series.datasets)
    for method in methods:
        items = []
        if method in descriptions:
            items.append(hd.sr.TextContentItem(DESCRIPTION, str(descriptions[method]), relationship_type="CONTAINS"))
        for metric, value in metrics.get(method, {}).items():
            if not isinstance(value, int | float):
                raise ValueError(f"metric {metric!r} of {method!r} is {value!r}; metrics must be numbers.")
            if math.isfinite(value):
                items.append(
                    hd.sr.NumContentItem(
                        metric_code(metric), float(value), codes.UCUM.NoUnits, relationship_type="CONTAINS"
                    )
                )
        for dataset in references.get(method, ()):
            items.append(
                hd.sr.CompositeContentItem(
                    EXPLANATION_OBJECT, dataset.SOPClassUID, dataset.SOPInstanceUID, relationship_type="CONTAINS"
                )
            )
            evidence.append(dataset)
        section = hd.sr.ContainerContentItem(name=explanation_code(method), relationship_type="CONTAINS")
        section.ContentSequence = hd.sr.ContentSequence(items)
        sections.append(section)
    root.ContentSequence = hd.sr.ContentSequence(sections)
    report = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
    )
    report.SeriesDescription = series_description
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        report.save_as(partial)
    return report
