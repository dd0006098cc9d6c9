"""Which DICOM series a loaded image came from, as the DICOM writer finds it from the image's meta data alone."""

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_xai.dicom import SERIES_UID_KEY
from monai_xai.handlers.dicom_writer import source_series
from tests.helpers.dicom_series import write_ct_series


def _image(source: str, **meta) -> MetaTensor:
    return MetaTensor(torch.zeros(1, 2, 2, 2), meta={"filename_or_obj": source, **meta})


def test_the_source_series_is_found_from_the_folder_the_uid_the_selection_or_one_of_its_files(tmp_path):
    volume = np.random.default_rng(0).uniform(0, 1, (6, 5, 4))
    main = write_ct_series(tmp_path / "study", volume, series_number=3)
    scout = write_ct_series(tmp_path / "study" / "scout", volume[:, :, :2], series_number=1)
    folder = str(tmp_path / "study")
    assert source_series(_image(folder, **{SERIES_UID_KEY: scout.uid})).uid == scout.uid  # the uid the reader kept
    assert source_series(_image(folder), selector=3).uid == main.uid  # a mixed batch dropped the uid: the selection
    a_file = next((tmp_path / "study" / "scout").glob("*.dcm"))
    assert source_series(_image(str(a_file))).uid == scout.uid  # a list of files: the series holding the first
    nifti = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), str(nifti))
    (tmp_path / "empty").mkdir()
    assert source_series(_image(str(nifti))) is None
    assert source_series(_image(str(tmp_path / "empty"))) is None
    assert source_series(torch.zeros(1, 2, 2, 2)) is None  # an array without meta data
