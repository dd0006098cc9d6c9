"""The Parametric Map, SEG and SR read back by readers that share no code with the writers: pydicom with the geometry
done by hand here, and dcmqi's paramap2itkimage / segimage2itkimage (C++, ITK) where installed."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from monai_xai.dicom import find_series, to_series_grid, write_explanation_sr, write_heat_seg, write_parametric_map
from monai_xai.heat_bins import heat_bins
from tests.helpers.dicom_series import write_ct_series

SHAPE = (20, 16, 12)
PEAK = (13, 5, 8)  # voxel (i, j, k) of the heat's maximum: off-centre on every axis
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _blob() -> np.ndarray:
    """(1, *SHAPE) Gaussian heat in [0, 1] with its single maximum 1 at PEAK."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    heat = np.exp(-(((grid - np.asarray(PEAK)) / np.array([4.0, 3.0, 2.0])) ** 2).sum(-1))
    return (heat / heat.max())[None].astype(np.float32)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    source = write_ct_series(root / "ct", np.random.default_rng(0).uniform(0, 1, SHAPE))
    (series,) = find_series(root / "ct")
    heat = MetaTensor(torch.from_numpy(_blob()), affine=torch.as_tensor(LPS_TO_RAS @ source.affine_lps))
    pm = write_parametric_map(root / "out" / "pm.dcm", heat, series, "hirescam")
    seg = write_heat_seg(root / "out" / "seg.dcm", heat, series, "hirescam", n_bins=4, min_heat=0.3)
    return root, source, series, pm, seg


def _frame_world(dataset, frame: int, row: int, column: int) -> np.ndarray:
    """LPS mm of pixel (row, column) of a multi-frame object's frame, by hand from its functional groups."""
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    position = dataset.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
    origin = np.array([float(v) for v in position])
    return origin + column * column_spacing * orientation[:3] + row * row_spacing * orientation[3:]


def _frame_sources(dataset) -> list[str]:
    """The SOPInstanceUID each frame says it was derived from."""
    return [
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in dataset.PerFrameFunctionalGroupsSequence
    ]


def _referenced_instances(dataset) -> set[str]:
    (series,) = dataset.ReferencedSeriesSequence
    return {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence}, series.SeriesInstanceUID


def test_parametric_map_holds_the_heat_on_the_source_slices_with_their_references(written):
    root, source, _, _, _ = written
    pm = pydicom.dcmread(root / "out" / "pm.dcm")
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert pm.FrameOfReferenceUID == source.frame_of_reference and pm.StudyInstanceUID != ""
    instances, series_uid = _referenced_instances(pm)
    assert series_uid == source.uid and instances == set(source.sop_uids)
    assert pm.NumberOfFrames == SHAPE[2]
    frames = pm.pixel_array  # float32 (frames, rows, columns)
    for frame, sop_uid in enumerate(_frame_sources(pm)):
        k = source.sop_uids.index(sop_uid)
        np.testing.assert_allclose(_frame_world(pm, frame, 0, 0), source.world((0, 0, k)), atol=1e-4)
        np.testing.assert_array_equal(frames[frame], _blob()[0, :, :, k].T)
    frame, row, column = np.unravel_index(np.argmax(frames), frames.shape)
    peak_world = _frame_world(pm, frame, row, column)
    voxel_size = np.linalg.norm(source.affine_lps[:3, :3], axis=0)
    assert np.linalg.norm(peak_world - source.world(PEAK)) <= voxel_size.min() / 2
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1" and mapping.LUTLabel == "HEAT"


def test_seg_holds_the_heat_bins_named_and_coloured_as_the_seg_nrrd(written):
    root, source, _, _, _ = written
    seg = pydicom.dcmread(root / "out" / "seg.dcm")
    bins = heat_bins(4)
    assert [segment.SegmentLabel for segment in seg.SegmentSequence] == [heat_bin.name for heat_bin in bins]
    assert seg.FrameOfReferenceUID == source.frame_of_reference
    instances, series_uid = _referenced_instances(seg)
    assert series_uid == source.uid and instances == set(source.sop_uids)
    heat = _blob()[0]
    expected = np.where(heat >= 0.3, np.minimum(np.floor(heat * 4), 3) + 1, 0)
    found = np.zeros(SHAPE, dtype=int)
    frames = seg.pixel_array.reshape(-1, SHAPE[1], SHAPE[0])
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        segment = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k = source.sop_uids.index(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        np.testing.assert_allclose(_frame_world(seg, index, 0, 0), source.world((0, 0, k)), atol=1e-4)
        found[:, :, k][frames[index].T > 0] = segment
    np.testing.assert_array_equal(found, expected)


def test_sr_reports_metrics_text_and_objects(written):
    root, source, series, pm, seg = written
    write_explanation_sr(
        root / "out" / "sr.dcm",
        series.datasets,
        metrics={"hirescam": {"ehr_auc": 0.72, "pointing_game": 1.0, "road_morf": float("nan")}},
        descriptions={"hirescam": "Prediction: lesion (91% confidence). Focus: small region."},
        references={"hirescam": [pm, seg]},
    )
    sr = pydicom.dcmread(root / "out" / "sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.StudyInstanceUID == series.datasets[0].StudyInstanceUID and sr.SeriesInstanceUID != source.uid
    (section,) = sr.ContentSequence
    assert section.ConceptNameCodeSequence[0].CodeValue == "hirescam"
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in section.ContentSequence if "TextValue" in item}
    assert items["description"].TextValue.startswith("Prediction: lesion")
    numbers = {
        item.ConceptNameCodeSequence[0].CodeValue: float(item.MeasuredValueSequence[0].NumericValue)
        for item in section.ContentSequence
        if item.ValueType == "NUM"
    }
    assert numbers == {"ehr_auc": 0.72, "pointing_game": 1.0}  # the undefined ROAD value is left out
    objects = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in section.ContentSequence
        if item.ValueType == "COMPOSITE"
    }
    assert objects == {pm.SOPInstanceUID, seg.SOPInstanceUID}
    # the PM and SEG are referenced in the content (current evidence), the source slices are pertinent other evidence
    evidence = {
        instance.ReferencedSOPInstanceUID
        for sequence in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
        for study in sr.get(sequence, [])
        for series_item in study.ReferencedSeriesSequence
        for instance in series_item.ReferencedSOPSequence
    }
    assert evidence == set(source.sop_uids) | {pm.SOPInstanceUID, seg.SOPInstanceUID}


def test_heat_off_the_series_grid_is_refused(written, tmp_path):
    _, source, series, _, _ = written
    with pytest.raises(ValueError, match="series' grid is"):
        write_parametric_map(tmp_path / "pm.dcm", _blob()[:, :, :, :-1], series, "gradcam")
    shifted = LPS_TO_RAS @ source.affine_lps
    shifted[:3, 3] += 2.0
    with pytest.raises(ValueError, match="not the series'"):
        write_heat_seg(tmp_path / "seg.dcm", _blob(), series, "gradcam", affine=shifted)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        write_parametric_map(tmp_path / "pm.dcm", _blob() * 2, series, "gradcam")


# dcmqi (the dev extra) installs its command-line tools next to the interpreter
needs_dcmqi = pytest.mark.skipif(
    importlib.util.find_spec("dcmqi") is None, reason="dcmqi is not installed (pip install dcmqi: the dev extra)"
)


def _dcmqi(tool: str, *arguments: str) -> None:
    executable = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    assert executable, f"dcmqi is installed but {tool} is not on PATH nor next to {sys.executable}"
    subprocess.run([executable, *arguments], check=True, capture_output=True)


@needs_dcmqi
def test_dcmqi_reads_the_parametric_map_back_onto_the_source_grid(written, tmp_path):
    root, source, _, _, _ = written
    _dcmqi("paramap2itkimage", "--inputDICOM", str(root / "out" / "pm.dcm"), "--outputDirectory", str(tmp_path),
           "--outputType", "nii")  # fmt: skip
    (image_path,) = [path for path in tmp_path.iterdir() if path.suffix in (".nii", ".gz")]
    image = nib.load(image_path)
    values = np.asarray(image.dataobj, dtype=np.float32)
    peak = np.unravel_index(np.argmax(values), values.shape)
    peak_lps = (LPS_TO_RAS @ image.affine @ np.append(peak, 1.0))[:3]
    voxel_size = np.linalg.norm(source.affine_lps[:3, :3], axis=0)
    assert np.linalg.norm(peak_lps - source.world(PEAK)) <= voxel_size.min() / 2
    assert values.max() == pytest.approx(1.0) and values.shape == SHAPE


@needs_dcmqi
def test_dcmqi_reads_the_seg_segments_with_their_names_colours_and_voxels(written, tmp_path):
    root, source, _, _, _ = written
    _dcmqi("segimage2itkimage", "--inputDICOM", str(root / "out" / "seg.dcm"), "--outputDirectory", str(tmp_path),
           "--outputType", "nii")  # fmt: skip
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    attributes = [segment for group in meta["segmentAttributes"] for segment in group]
    bins = {heat_bin.name: heat_bin for heat_bin in heat_bins(4)}
    for segment in attributes:
        colour = np.asarray(segment["recommendedDisplayRGBValue"]) / 255
        np.testing.assert_allclose(colour, bins[segment["SegmentLabel"]].color, atol=2 / 255)
    # each segment's voxels, mapped through dcmqi's geometry onto the source grid, are exactly the voxels of its bin
    heat = _blob()[0]
    expected = np.where(heat >= 0.3, np.minimum(np.floor(heat * 4), 3) + 1, 0)
    to_source = np.linalg.inv(source.affine_lps)
    for segment in attributes:
        image = nib.load(tmp_path / f"{segment['labelID']}.nii.gz")
        voxels = np.argwhere(np.asarray(image.dataobj) > 0)
        world = LPS_TO_RAS @ image.affine @ np.c_[voxels, np.ones(len(voxels))].T
        source_voxels = (to_source @ world)[:3].T
        assert np.abs(source_voxels - np.round(source_voxels)).max(initial=0) < 1e-3  # on the source grid
        found = {tuple(voxel) for voxel in np.round(source_voxels).astype(int)}
        label = [heat_bin.name for heat_bin in heat_bins(4)].index(segment["SegmentLabel"]) + 1
        assert found == {tuple(voxel) for voxel in np.argwhere(expected == label)}
    assert {segment["SegmentLabel"] for segment in attributes} >= {
        bins[name].name for name in bins if name != "heat 0.00-0.25"
    }


def test_a_map_on_a_reordered_grid_is_resampled_onto_the_series(written):
    """A converter's grid (slices in reverse, rows flipped: another affine over the same voxels) comes back exactly."""
    _, source, series, _, _ = written
    ras = LPS_TO_RAS @ source.affine_lps
    flip = np.eye(4)
    flip[1, 1], flip[1, 3], flip[2, 2], flip[2, 3] = -1, SHAPE[1] - 1, -1, SHAPE[2] - 1  # j -> J-1-j, k -> K-1-k
    reordered = MetaTensor(torch.from_numpy(_blob()[:, :, ::-1, ::-1].copy()), affine=torch.as_tensor(ras @ flip))
    with pytest.raises(ValueError, match="not the series'"):
        write_parametric_map(Path("unused.dcm"), reordered, series, "gradcam")
    back = to_series_grid(reordered, series)
    np.testing.assert_allclose(back.numpy(), _blob(), atol=1e-5)
    np.testing.assert_allclose(back.affine.numpy(), ras, atol=1e-6)
