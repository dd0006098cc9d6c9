"""Acceptance: a lesion phantom written as an oblique CT series (LPS, non-unit rescale, slices shuffled on disk, next
to another series) is explained by the demo classifier through its own preprocessing, and the Parametric Map, SEG and
SR written from the map land on the source grid with the right references, read back by pydicom with the geometry
done by hand from the written series."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from scipy import ndimage

from monai_xai.bundle.loading import load_trained_bundle
from monai_xai.cams import CAMExplainer
from monai_xai.data.phantom import generate_phantom
from monai_xai.describe import describe
from monai_xai.dicom import (
    DicomSeriesReader,
    register_dicom_reader,
    write_explanation_sr,
    write_heat_seg,
    write_parametric_map,
)
from tests.helpers.dicom_series import write_ct_series

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lesion_classification_3d"
LAYER, METHOD = "class_layers.relu", "hirescam"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    phantom = generate_phantom(seed=3, lesion=True, num_lesions=1)
    volume = phantom.image.clip(0, 1)
    source = write_ct_series(root / "study", volume, series_number=3)
    write_ct_series(root / "study" / "scout", volume[:, :, :2], series_number=1, study_uid=None)
    bundle = load_trained_bundle(BUNDLE)
    preprocessing = bundle.preprocessing
    register_dicom_reader(preprocessing, DicomSeriesReader(series=3))
    case = preprocessing({"image": str(root / "study")})
    image = case["image"]
    with torch.no_grad():
        probabilities = torch.softmax(bundle.network(image[None]), dim=1)[0]
    heat = CAMExplainer(bundle.network, LAYER, METHOD)(image[None])[METHOD][0]
    inverse = Invertd("map", preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True)
    on_source = inverse({"map": MetaTensor(heat, meta=image.meta), "image": image})["map"].clamp(0, 1)
    pm = write_parametric_map(root / "out" / "pm.dcm", on_source, source_headers(root / "study"), METHOD)
    seg = write_heat_seg(root / "out" / "seg.dcm", on_source, source_headers(root / "study"), METHOD)
    text = describe(on_source, on_source.affine, probabilities=probabilities, class_names=["no lesion", "lesion"]).text
    write_explanation_sr(
        root / "out" / "sr.dcm",
        source_headers(root / "study"),
        metrics={METHOD: {"probability_lesion": float(probabilities[1])}},
        descriptions={METHOD: text},
        references={METHOD: [pm, seg]},
    )
    return root, phantom, source, on_source, probabilities


def source_headers(folder: Path) -> list:
    """The phantom series' headers, in the order found on disk (shuffled), as a DICOM datastore would hand them."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]
    return [header for header in headers if header.SeriesNumber == 3]


def _world(dataset, frame: int, row: int, column: int) -> np.ndarray:
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    position = dataset.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
    return (
        np.array([float(v) for v in position])
        + column * column_spacing * orientation[:3]
        + (row * row_spacing * orientation[3:])
    )


def test_the_map_is_back_on_the_series_grid_and_points_at_the_lesion(explained):
    _, phantom, source, on_source, probabilities = explained
    assert probabilities.argmax().item() == 1
    assert on_source.shape == (1, *phantom.image.shape)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(on_source.affine.numpy(), lps_to_ras @ source.affine_lps, atol=1e-4)
    peak = np.unravel_index(int(on_source.argmax()), on_source.shape[1:])
    near_lesion = ndimage.binary_dilation(phantom.mask > 0, iterations=3)  # the bundle's pointing-game tolerance
    assert near_lesion[peak]


def test_parametric_map_peak_lands_where_the_maps_peak_is_in_the_world(explained):
    root, _, source, on_source, _ = explained
    pm = pydicom.dcmread(root / "out" / "pm.dcm")
    frames = pm.pixel_array
    frame, row, column = np.unravel_index(np.argmax(frames), frames.shape)
    peak = np.unravel_index(int(on_source.argmax()), on_source.shape[1:])
    voxel_size = np.linalg.norm(source.affine_lps[:3, :3], axis=0)
    assert np.linalg.norm(_world(pm, frame, row, column) - source.world(peak)) <= voxel_size.min() / 2
    sources = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in
               pm.PerFrameFunctionalGroupsSequence]  # fmt: skip
    assert sources == list(source.sop_uids)  # frame k is slice k, whatever the order on disk
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == source.uid
    assert pm.FrameOfReferenceUID == source.frame_of_reference


def test_seg_and_sr_refer_to_the_series_and_to_each_other(explained):
    root, _, source, on_source, probabilities = explained
    seg = pydicom.dcmread(root / "out" / "seg.dcm")
    pm = pydicom.dcmread(root / "out" / "pm.dcm")
    sr = pydicom.dcmread(root / "out" / "sr.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.uid
    hottest = [frame for frame in seg.PerFrameFunctionalGroupsSequence
               if frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 10]  # fmt: skip
    assert hottest, "the hottest bin (heat 0.9-1.0) holds the peak"
    (section,) = sr.ContentSequence
    values = {item.ValueType: item for item in section.ContentSequence}
    assert values["TEXT"].TextValue.startswith("Prediction: lesion")
    assert float(values["NUM"].MeasuredValueSequence[0].NumericValue) == pytest.approx(float(probabilities[1]))
    objects = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in section.ContentSequence
               if item.ValueType == "COMPOSITE"}  # fmt: skip
    assert objects == {pm.SOPInstanceUID, seg.SOPInstanceUID}
    assert {sr.StudyInstanceUID, pm.StudyInstanceUID, seg.StudyInstanceUID} == {source_study(root)}


def source_study(root: Path) -> str:
    return source_headers(root / "study")[0].StudyInstanceUID
