"""Acceptance of DICOM through the bundle route: a datalist mixing a DICOM study folder (an oblique CT series written
with pydicom, LPS, non-unit rescale, slices shuffled on disk, next to a scout series) and a NIfTI CT is explained by a
model-zoo spleen-style bundle with the overlay alone (`explain_bundle`, what `monai-xai explain` runs), the reader
registered by the overlay and the series picked by ``xai_dicom_series``. With ``xai_dicom_output`` the Parametric Map,
SEG and SR of the DICOM case are read back with pydicom and the geometry done by hand from the written series; the
NIfTI case is skipped with one logged line."""

from __future__ import annotations

import csv
import logging

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_xai.bundle import explain_bundle
from tests.helpers.bundles import make_spleen_style_bundle
from tests.helpers.dicom_series import frame_world, write_ct_series
from tests.helpers.engines import CONFIGS, run_bundle

pytestmark = pytest.mark.slow

METHOD = "hirescam"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ct_phantom(shape=(26, 22, 10)) -> np.ndarray:
    """Soft tissue (40 HU, noisy) with a bright block (+120 HU) off centre."""
    volume = np.random.default_rng(5).normal(40.0, 10.0, shape)
    volume[6:14, 5:12, 3:7] += 120.0
    return volume


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    bundle = make_spleen_style_bundle(tmp_path_factory.mktemp("dicom_route") / "bundle")
    study = bundle / "data" / "study"
    volume = _ct_phantom()
    source = write_ct_series(study, volume, spacing=(1.2, 1.0, 2.0), slope=0.5, intercept=-1024.0, series_number=3)
    write_ct_series(study / "scout", volume[:, :, :2], slope=0.5, intercept=-1024.0, series_number=1)
    datalist = [{"image": str(study)}, {"image": str(bundle / "data" / "ct0.nii.gz")}]
    handler = _Lines()
    logging.getLogger("monai_xai.handlers.dicom_writer").addHandler(handler)
    logging.getLogger("monai_xai.handlers.dicom_writer").setLevel(logging.INFO)
    try:
        (run,) = explain_bundle(
            bundle, overlays=("explain",), datalist=datalist, xai_methods=[METHOD], xai_report=False,
            xai_dicom_output=True, xai_dicom_series=3, **{"dataloader#batch_size": 1},
        )  # fmt: skip
    finally:
        logging.getLogger("monai_xai.handlers.dicom_writer").removeHandler(handler)
    return bundle, source, run, handler.lines


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_series_is_read_through_the_bundles_own_loader_and_its_map_is_on_the_series_grid(explained):
    bundle, source, run, _ = explained
    assert [case.name for case in run.records.cases] == ["study", "ct0"]
    saved = nib.load(str(run.folder / "study" / f"study_{METHOD}.nii.gz"))
    assert saved.shape == (26, 22, 10)  # the series' own (columns, rows, slices), not the scout's
    np.testing.assert_allclose(saved.affine, LPS_TO_RAS @ source.affine_lps, atol=1e-3)


def test_parametric_map_lands_on_the_source_grid_and_refers_to_its_instances(explained):
    _, source, run, _ = explained
    files = run.records.case("study").methods[METHOD].files
    pm = pydicom.dcmread(files["dicom_pm"])
    assert files["dicom_pm"] == run.folder / "study" / "dicom" / f"study_{METHOD}_pm.dcm"
    nifti = nib.load(str(run.folder / "study" / f"study_{METHOD}.nii.gz"))
    heat = np.asarray(nifti.dataobj, dtype=np.float32)
    assert heat.max() > 0.5  # a map with a peak, not an empty one
    frames = pm.pixel_array
    np.testing.assert_allclose(frames.transpose(2, 1, 0), heat, atol=1e-5)  # frame k, row j, column i = voxel i, j, k
    frame, row, column = np.unravel_index(np.argmax(frames), frames.shape)
    peak_lps = frame_world(pm, frame, row, column)
    hottest = np.argwhere(heat >= heat.max() - 1e-6)  # the NIfTI map's peak voxel(s), in its own world coordinates
    hottest_lps = (LPS_TO_RAS @ nifti.affine @ np.c_[hottest, np.ones(len(hottest))].T).T[:, :3]
    voxel_size = np.linalg.norm(source.affine_lps[:3, :3], axis=0)
    assert np.linalg.norm(hottest_lps - peak_lps, axis=1).min() <= voxel_size.min() / 2
    referenced = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in
                  pm.PerFrameFunctionalGroupsSequence]  # fmt: skip
    assert referenced == list(source.sop_uids)  # frame k is slice k, whatever the order on disk
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == source.uid
    assert pm.FrameOfReferenceUID == source.frame_of_reference
    assert pm.ManufacturerModelName == "bundle"


def test_seg_bins_lie_on_the_source_slices_and_hold_the_peak(explained):
    _, source, run, _ = explained
    files = run.records.case("study").methods[METHOD].files
    pm, seg = pydicom.dcmread(files["dicom_pm"]), pydicom.dcmread(files["dicom_seg"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.uid
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(source.sop_uids)
    assert seg.FrameOfReferenceUID == source.frame_of_reference
    slice_origins = np.array([source.world((0, 0, k)) for k in range(len(source.sop_uids))])
    for index in range(int(seg.NumberOfFrames)):
        assert np.linalg.norm(slice_origins - frame_world(seg, index, 0, 0), axis=1).min() < 1e-3
    frames = pm.pixel_array
    frame, row, column = np.unravel_index(np.argmax(frames), frames.shape)
    peak_lps = frame_world(pm, frame, row, column)
    expected_bin = min(10, int(frames.max() * 10) + 1)
    masks = seg.pixel_array
    holding = [
        index
        for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence)
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == expected_bin
        and np.linalg.norm(frame_world(seg, index, row, column) - peak_lps) < 1e-3
    ]
    assert holding and masks[holding[0], row, column] == 1


def test_the_report_describes_the_case_and_refers_to_its_objects(explained):
    _, source, run, _ = explained
    files = run.records.case("study").methods[METHOD].files
    pm, seg, sr = (pydicom.dcmread(files[kind]) for kind in ("dicom_pm", "dicom_seg", "dicom_sr"))
    assert files["dicom_sr"] == run.folder / "study" / "dicom" / "study_sr.dcm"
    (section,) = sr.ContentSequence
    texts = [item.TextValue for item in section.ContentSequence if item.ValueType == "TEXT"]
    assert texts == [run.records.case("study").methods[METHOD].text] and texts[0]
    objects = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in section.ContentSequence
               if item.ValueType == "COMPOSITE"}  # fmt: skip
    assert objects == {pm.SOPInstanceUID, seg.SOPInstanceUID}
    assert sr.StudyInstanceUID == pm.StudyInstanceUID == seg.StudyInstanceUID
    assert sr.PatientID == "PH001"


def test_the_nifti_case_is_explained_and_skipped_by_the_dicom_writer_with_one_line(explained):
    bundle, _, run, lines = explained
    assert (run.folder / "ct0" / f"ct0_{METHOD}.nii.gz").is_file()
    assert not (run.folder / "ct0" / "dicom").exists()
    assert not any(kind.startswith("dicom") for kind in run.records.case("ct0").methods[METHOD].files)
    skipped = [line for line in lines if "not a DICOM series" in line]
    assert len(skipped) == 1 and "ct0" in skipped[0]
    with open(run.folder / "cases.csv") as stream:
        assert [row["case"] for row in csv.DictReader(stream)] == ["study", "ct0"]
    assert not (run.folder / "failed_cases.csv").exists()


def test_a_folder_of_several_series_without_a_selection_is_an_unreadable_case_that_lists_them(tmp_path):
    bundle = make_spleen_style_bundle(tmp_path / "bundle")
    study = bundle / "data" / "study"
    write_ct_series(study, _ct_phantom(), slope=0.5, intercept=-1024.0, series_number=3)
    write_ct_series(study / "scout", _ct_phantom()[:, :, :2], slope=0.5, intercept=-1024.0, series_number=1)
    datalist = [{"image": str(study)}, {"image": str(bundle / "data" / "ct0.nii.gz")}]
    (run,) = explain_bundle(
        bundle, overlays=("explain",), datalist=datalist, xai_methods=[METHOD], xai_report=False,
        xai_dicom_output=True, **{"dataloader#batch_size": 1},
    )  # fmt: skip
    assert [case.name for case in run.records.cases] == ["ct0"]
    (failed,) = run.records.unreadable
    assert "2 series match" in failed["reason"] and "SeriesNumber 1" in failed["reason"]
    assert "SeriesNumber 3" in failed["reason"]


def test_maps_on_the_networks_grid_are_resampled_onto_the_series_by_world_coordinates(explained, tmp_path):
    """Without the preprocessing's inverse (``xai_preprocessing`` None, maps on the preprocessed grid) the writer puts
    the map on the series' grid by world coordinates: it agrees with the inverted map of the first run."""
    bundle, source, first, _ = explained
    (run,) = explain_bundle(
        bundle, overlays=("explain",), datalist=[{"image": str(source.folder.parent / "study")}],
        xai_methods=[METHOD], xai_report=False, xai_dicom_output=True, xai_dicom_series=source.uid,
        xai_maps_grid="preprocessed", xai_preprocessing="$None", xai_output_dir=str(tmp_path / "xai"),
        **{"dataloader#batch_size": 1},
    )  # fmt: skip
    frames = pydicom.dcmread(run.records.case("study").methods[METHOD].files["dicom_pm"]).pixel_array
    inverted = pydicom.dcmread(first.records.case("study").methods[METHOD].files["dicom_pm"]).pixel_array
    assert frames.shape == inverted.shape == (10, 22, 26)
    inside = frames > 0  # the series' voxels the network's grid covers
    assert inside.mean() > 0.6
    assert np.corrcoef(frames[inside], inverted[inside])[0, 1] > 0.95


def test_a_plain_monai_bundle_run_with_the_overlay_reads_the_series_and_writes_its_objects(explained, tmp_path):
    """``python -m monai.bundle run`` with configs/explain.json, no monai-xai entry point: same reader, same writer."""
    bundle, source, _, _ = explained
    out = tmp_path / "xai"
    result = run_bundle(
        [bundle / "configs" / "inference.json", CONFIGS / "explain.json"],
        "--datalist", f"[{{'image': '{source.folder}'}}]", "--xai_methods", f"['{METHOD}']",
        "--xai_dicom_series", "3", "--xai_dicom_output", "True", "--xai_report", "False",
        "--xai_output_dir", str(out), "--dataloader#batch_size", "1",
        cwd=bundle,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    pm = pydicom.dcmread(out / "study" / "dicom" / f"study_{METHOD}_pm.dcm")
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == source.uid
    assert pm.pixel_array.shape == (10, 22, 26)
    seg = pydicom.dcmread(out / "study" / "dicom" / f"study_{METHOD}_seg.dcm")
    sr = pydicom.dcmread(out / "study" / "dicom" / "study_sr.dcm")
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == pm.StudyInstanceUID
