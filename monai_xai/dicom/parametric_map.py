"""A heatmap as a DICOM Parametric Map: float heat in [0, 1], one frame per slice of the source series, with its
geometry, frame of reference and references to the source instances (highdicom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from monai_xai.atomic import atomic_path
from monai_xai.dicom.grid import MANUFACTURER, SOFTWARE_VERSION, Source, as_series, explanation_code, heat_frames

__all__ = ["write_parametric_map", "WHOLE_BODY"]

WHOLE_BODY = Code("38266002", "SCT", "Entire body")
# CID 7222: why a Parametric Map refers to its source images
_SOURCE_IMAGE = Code("121322", "DCM", "Source image for image processing operation")


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _add_frame_references(parametric_map: Dataset, sources: list[Dataset], method: str, region: Code) -> None:
    """Per frame, the source slice it was derived from (DerivationImageSequence), and the Frame Anatomy functional
    group (mandatory in the Parametric Map IOD; readers such as dcmqi need it)."""
    for frame, source in zip(parametric_map.PerFrameFunctionalGroupsSequence, sources):
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        reference.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(_SOURCE_IMAGE)])
        derivation = Dataset()
        derivation.DerivationCodeSequence = DicomSequence([_code_item(explanation_code(method))])
        derivation.SourceImageSequence = DicomSequence([reference])
        frame.DerivationImageSequence = DicomSequence([derivation])
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = DicomSequence([_code_item(region)])
    anatomy.FrameLaterality = "U"
    parametric_map.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = DicomSequence([anatomy])


def write_parametric_map(
    path: str | Path,
    heat: Any,
    source: Source,
    method: str,
    affine: Any = None,
    series_number: int = 9001,
    series_description: str | None = None,
    model_name: str = "monai-xai",
    anatomic_region: Code = WHOLE_BODY,
) -> Dataset:
    """Write ``heat`` as a DICOM Parametric Map of the source series.

    The map has one float32 frame per source slice, at that slice's ImagePositionPatient, with the source's
    ImageOrientationPatient, PixelSpacing and FrameOfReferenceUID, and refers to every source instance (per frame: the
    slice it was derived from). Its real-world value mapping says the unit: heat, a dimensionless value in [0, 1]
    (relative within this map; 1 = the map's maximum). It is a new series of the source's study and patient.

    Args:
        path: the file to write (e.g. ``<case>_<method>_pm.dcm``).
        heat: (1, columns, rows, slices) or (columns, rows, slices) float in [0, 1], on the source series' grid in
            :class:`~monai_xai.dicom.DicomSeriesReader`'s layout (see :func:`~monai_xai.dicom.heat_frames`); a
            MetaTensor's affine is checked against the series.
        source: the explained series (:class:`~monai_xai.dicom.DicomSeries`) or its slices' headers in any order.
        method: the CAM method, e.g. ``"hirescam"`` (the map's content label and value-mapping name).
        affine: the heat's (4, 4) RAS affine when ``heat`` is not a MetaTensor (checked; None: no check).
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription; default ``"<method> heatmap"``.
        model_name: the explained model (ManufacturerModelName), e.g. the bundle's name.
        anatomic_region: the Frame Anatomy's region (a code of CID 4031, e.g. SCT 12738006 "Brain"); default SCT
            "Entire body".

    Returns:
        the written dataset.

    Raises:
        ValueError: a heat that is not on the series' grid or not in [0, 1] (see :func:`~monai_xai.dicom.heat_frames`).
    """
    series = as_series(source)
    frames = heat_frames(heat, series, affine)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="HEAT",
        lut_explanation=f"{method} heat, 1 = the map's maximum",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=explanation_code(method),
    )
    parametric_map = hd.pm.ParametricMap(
        source_images=list(series.datasets),
        pixel_array=frames,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        window_center=0.5,
        window_width=1.0,
        content_label=method.upper().replace("-", "_")[:16],
        content_description=f"{method} class-activation map"[:64],
    )
    _add_frame_references(parametric_map, list(series.datasets), method, anatomic_region)
    parametric_map.SeriesDescription = series_description or f"{method} heatmap"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        parametric_map.save_as(partial)
    return parametric_map
