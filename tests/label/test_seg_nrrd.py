"""The heat bins as a Slicer ``.seg.nrrd``, read back with ITK (an independent NRRD reader): LPS geometry of an
oblique, flipped RAS affine, the label values, and Slicer's segment fields."""

from __future__ import annotations

import itk
import numpy as np
import pytest

from monai_xai.label import heat_bins, write_segmentation_nrrd


def oblique_affine() -> np.ndarray:
    """A RAS affine with a rotation about z, a flip of y and anisotropic voxels: rows and columns differ."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, -0.9, 2.5])
    affine[:3, 3] = [12.0, -30.0, 55.0]
    return affine


def test_geometry_and_labels_read_back_with_itk(tmp_path):
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 2, 3] = 4
    labels[5, 4, 0] = 1
    affine = oblique_affine()
    path = write_segmentation_nrrd(tmp_path / "heat.seg.nrrd", labels, affine, heat_bins(4), "Focus:\n  left")
    image = itk.imread(str(path))
    # ITK stores LPS physical points; voxel (i, j, k) of the label map lies at the RAS point affine @ (i, j, k, 1)
    for index in [(0, 0, 0), (5, 4, 0), (2, 2, 3)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint([int(i) for i in index]))
        ras = affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)
    np.testing.assert_array_equal(itk.array_from_image(image).transpose(), labels)
    fields = image.GetMetaDataDictionary()
    assert fields["Segment3_Name"] == "heat 0.75-1.00" and fields["Segment3_LabelValue"] == "4"
    assert fields["Segment3_Extent"] == "1 2 2 2 3 3" and fields["Segment1_Extent"] == "0 -1 0 -1 0 -1"
    assert fields["Segment0_Layer"] == "0" and fields["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert fields["monai_xai_description"] == "Focus: left"  # one line: a header field cannot hold newlines


def test_a_2d_label_map_is_one_slice(tmp_path):
    labels = np.zeros((5, 4), dtype=np.uint8)
    labels[1, 2] = 2
    affine = np.diag([0.5, 0.5, 1.0])
    image = itk.imread(str(write_segmentation_nrrd(tmp_path / "photo.seg.nrrd", labels, affine, heat_bins(2))))
    assert itk.array_from_image(image).shape == (1, 4, 5)
    np.testing.assert_allclose(np.asarray(image.GetSpacing()), (0.5, 0.5, 1.0))


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.seg\.nrrd"):
        write_segmentation_nrrd(tmp_path / "heat.nrrd", np.zeros((2, 2, 2)), np.eye(4), heat_bins(2))
    with pytest.raises(ValueError, match=r"label values \[7\] have no bin"):
        write_segmentation_nrrd(tmp_path / "heat.seg.nrrd", np.full((2, 2, 2), 7), np.eye(4), heat_bins(2))
    with pytest.raises(ValueError, match="affine must be"):
        write_segmentation_nrrd(tmp_path / "heat.seg.nrrd", np.zeros((2, 2, 2)), np.eye(2), heat_bins(2))
