"""``result_volume: "dicom_seg"``: a MONAI Label explain request on a study of a DICOM datastore returns the heat
bins as a DICOM SEG of the source series, whether the task gets the datastore's cached series folder or the NIfTI the
datastore converted from it (here with its first axis flipped, so only world coordinates can map it back). Read back
with pydicom, the geometry done by hand: every frame lies on a source slice and holds exactly the bins of the task's
own float heatmap there; any other image is a 422."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from fastapi import HTTPException

from monai_xai.data.phantom import generate_phantom
from monai_xai.dicom import DicomSeriesReader, find_series
from monai_xai.heat_bins import quantize_heatmap
from monai_xai.label import BundleExplainTask
from tests.helpers.dicom_series import frame_world, write_ct_series

N_BINS, MIN_HEAT = 5, 0.2


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    """The cache of MONAI Label's DICOMweb datastore for one series: ``<uid>/`` (the series, slices shuffled,
    oblique) and ``<uid>.nii.gz`` (its conversion, first axis flipped)."""
    root = tmp_path_factory.mktemp("dicomweb")
    phantom = generate_phantom(
        11,
        shape=(40, 36, 24),
        num_lesions=1,
        lesion_radius_mm=(5.0, 6.0),
        lesion_contrast=(0.45, 0.5),
        distractor_probability=0.0,
    )  # fmt: skip  (a bright lesion: the intensity segmenter's class)
    written = write_ct_series(root / "series", phantom.image.clip(0, 1), series_number=3)
    folder = (root / "series").rename(root / written.uid)
    (series,) = find_series(folder)
    volume, meta = DicomSeriesReader().get_data(series)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, volume.shape[0] - 1
    nib.save(nib.Nifti1Image(volume[::-1].copy(), meta["affine"] @ flip), str(root / f"{written.uid}.nii.gz"))
    return written, folder, root / f"{written.uid}.nii.gz"


@pytest.fixture(scope="module")
def task(bundles_dir):
    return BundleExplainTask(str(bundles_dir / "lesion_segmentation_3d"), {}, methods=["gradcam"])


def _request(image: Path, result_volume: str) -> dict:
    return {"image": str(image), "device": "cpu", "result_volume": result_volume, "bins": N_BINS, "min_heat": MIN_HEAT}


def _slice_of(seg, frame: int, written) -> int:
    origins = np.array([written.world((0, 0, k)) for k in range(len(written.sop_uids))])
    distances = np.linalg.norm(origins - frame_world(seg, frame, 0, 0), axis=1)
    assert distances.min() < 1e-3, "a SEG frame off the source slices"
    return int(distances.argmin())


def _labels_on_series(seg, written, shape) -> np.ndarray:
    """The SEG as a label volume [i, j, k] on the series' grid, each frame placed by its own position."""
    labels = np.zeros(shape, dtype=np.uint8)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        k = _slice_of(seg, frame, written)
        labels[:, :, k][seg.pixel_array[frame].T > 0] = segment
    return labels


def test_a_series_folder_gets_a_seg_of_its_series_holding_the_heatmaps_bins(task, datastore):
    written, folder, _ = datastore
    # a folder has no extension to copy: MONAI Label returns the array unless the request names one, as clients do
    heatmap_file, _ = task({**_request(folder, "heatmap"), "result_extension": ".nii.gz"})
    heatmap = nib.load(heatmap_file)
    assert heatmap.shape == (40, 36, 24)  # on the series' own grid (the task read the folder with DicomSeriesReader)
    np.testing.assert_allclose(heatmap.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ written.affine_lps, atol=1e-3)
    expected = quantize_heatmap(torch.as_tensor(np.asarray(heatmap.dataobj)), N_BINS, MIN_HEAT).numpy()
    assert expected.max() == N_BINS
    seg_file, result = task(_request(folder, "dicom_seg"))
    seg = pydicom.dcmread(seg_file)
    assert seg.Modality == "SEG" and "description" in result and "label_names" not in result
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.uid
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(written.sop_uids)
    assert seg.FrameOfReferenceUID == written.frame_of_reference
    assert [item.SegmentLabel for item in seg.SegmentSequence] == [
        f"heat {k / 5:.1f}-{(k + 1) / 5:.1f}" for k in range(5)
    ]
    labels = _labels_on_series(seg, written, heatmap.shape)
    assert (labels != expected).mean() < 1e-3  # the same bins, voxel for voxel (float rounding at bin edges aside)
    for path in (heatmap_file, seg_file):
        Path(path).unlink()


def test_the_datastores_converted_nifti_gets_the_same_seg_of_its_series(task, datastore):
    """The converted NIfTI is flipped along its first axis: the heatmap goes back to the series by world coordinates,
    so the SEG is the one the series folder gets."""
    written, folder, converted = datastore
    from_folder, _ = task(_request(folder, "dicom_seg"))
    from_nifti, _ = task(_request(converted, "dicom_seg"))
    shape = (40, 36, 24)
    labels_folder = _labels_on_series(pydicom.dcmread(from_folder), written, shape)
    labels_nifti = _labels_on_series(pydicom.dcmread(from_nifti), written, shape)
    assert labels_folder.max() == N_BINS
    assert (labels_folder != labels_nifti).mean() < 1e-3
    assert pydicom.dcmread(from_nifti).ReferencedSeriesSequence[0].SeriesInstanceUID == written.uid
    for path in (from_folder, from_nifti):
        Path(path).unlink()


def test_an_image_that_is_no_dicom_series_is_a_422_before_the_network_runs(task, studies_dir):
    with pytest.raises(HTTPException) as raised:
        task(_request(studies_dir / "case_000.nii.gz", "dicom_seg"))
    assert raised.value.status_code == 422 and "needs an image of a DICOM datastore" in raised.value.detail
    assert str(studies_dir) not in raised.value.detail
