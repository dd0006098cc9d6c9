"""Series found, chosen and read with the geometry and values they were written with (tests/helpers/dicom_series)."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_xai.dicom import DicomSeriesReader, find_series, read_volume, register_dicom_reader, select_series
from tests.helpers.dicom_series import write_ct_series

SHAPE = (20, 16, 12)  # columns, rows, slices: all different, so a swapped axis cannot pass


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, SHAPE)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A folder with two series (oblique phantom, and a 3-slice axial one), a text file and a nested folder."""
    root = tmp_path_factory.mktemp("study")
    phantom = write_ct_series(root / "a", _volume(), series_number=3)
    scout = write_ct_series(
        root / "a" / "nested", _volume(1)[:, :, :3], rotation=np.eye(3), series_number=1, spacing=(0.5, 0.7, 5.0)
    )
    (root / "a" / "notes.txt").write_text("not DICOM")
    return root / "a", phantom, scout


def test_finds_both_series_and_reads_each_with_its_geometry_and_rescaled_values(study):
    folder, phantom, scout = study
    found = find_series(folder)
    assert [series.number for series in found] == [1, 3]
    for written, series in zip((scout, phantom), found):
        assert series.uid == written.uid
        np.testing.assert_allclose(series.affine_lps, written.affine_lps, atol=1e-5)
        assert tuple(ds.SOPInstanceUID for ds in series.datasets) == written.sop_uids
    volume = read_volume(found[1])
    assert volume.shape == SHAPE and volume.dtype == np.float32
    # stored values are rounded to the slope: the read values are within half a step of the written ones
    assert np.abs(volume - _volume()).max() <= phantom.slope / 2 + 1e-6


def test_selection_by_number_uid_or_predicate_and_an_error_listing_the_series(study):
    folder, phantom, scout = study
    found = find_series(folder)
    assert select_series(found, 3).uid == phantom.uid
    assert select_series(found, "1").uid == scout.uid
    assert select_series(found, phantom.uid).uid == phantom.uid
    assert select_series(found, lambda series: series.shape[2] > 3).uid == phantom.uid
    with pytest.raises(ValueError, match=r"(?s)2 series match.*SeriesNumber 1.*SeriesNumber 3"):
        select_series(found)
    with pytest.raises(ValueError, match="no series matches"):
        select_series(found, 7)


def test_an_inner_missing_slice_is_an_error(tmp_path):
    written = write_ct_series(tmp_path / "s", _volume())
    middle = written.sop_uids[SHAPE[2] // 2]
    for path in written.folder.glob("*.dcm"):
        if middle in path.read_bytes().decode("latin-1"):
            path.unlink()
    with pytest.raises(ValueError, match="not evenly spaced"):
        find_series(tmp_path / "s")


def test_load_imaged_reads_a_series_folder_and_a_nifti_file_in_one_pipeline(study, tmp_path):
    folder, phantom, _ = study
    nifti = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), nifti)
    pipeline = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    assert register_dicom_reader(pipeline, DicomSeriesReader(series=3)) == 1
    readers = list(pipeline.transforms[0]._loader.readers)
    assert register_dicom_reader(pipeline) == 0  # the reader (and its series=3) stays; nothing piles up per request
    assert pipeline.transforms[0]._loader.readers == readers
    from_dicom = pipeline({"image": str(folder)})["image"]
    assert from_dicom.shape == (1, *SHAPE)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(from_dicom.affine.numpy(), lps_to_ras @ phantom.affine_lps, atol=1e-5)
    assert from_dicom.meta["dicom_series_uid"] == phantom.uid
    assert torch.allclose(from_dicom[0], torch.as_tensor(_volume(), dtype=torch.float32), atol=phantom.slope)
    from_nifti = pipeline({"image": str(nifti)})["image"]
    assert from_nifti.shape == (1, 4, 5, 6)
