"""CT series written slice by slice with pydicom from a known geometry, the ground truth of the DICOM tests.

The geometry is stated here, independently of :mod:`monai_xai.dicom`: voxel ``(i, j, k)`` of ``volume`` (column i,
row j of slice k) lies at ``origin + i * dx * row_dir + j * dy * col_dir + k * dz * normal`` in patient LPS mm, with
``row_dir``, ``col_dir``, ``normal`` the columns of ``rotation``. Files are written in a shuffled order with shuffled
names and InstanceNumbers, so nothing but the geometry tags can put the slices in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

# an oblique orientation: 20 degrees about the patient's L axis, then 12 degrees about P
OBLIQUE = Rotation.from_euler("xy", [20.0, 12.0], degrees=True).as_matrix()


@dataclass(frozen=True)
class WrittenSeries:
    """What was written: the truth the tests compare with.

    Attributes:
        folder: where the files are.
        uid: SeriesInstanceUID.
        number: SeriesNumber.
        affine_lps: (4, 4) voxel (i, j, k) -> LPS mm.
        sop_uids: the SOPInstanceUIDs in slice order k = 0, 1, ...
        frame_of_reference: FrameOfReferenceUID.
        slope, intercept: the modality rescale.
    """

    folder: Path
    uid: str
    number: int
    affine_lps: np.ndarray
    sop_uids: tuple[str, ...]
    frame_of_reference: str
    slope: float
    intercept: float

    def world(self, voxel) -> np.ndarray:
        """LPS mm of voxel (i, j, k)."""
        return (self.affine_lps @ np.append(np.asarray(voxel, dtype=float), 1.0))[:3]


def write_ct_series(
    folder: Path,
    volume: np.ndarray,
    spacing=(1.0, 1.0, 1.5),
    rotation: np.ndarray = OBLIQUE,
    origin=(-30.0, -20.0, 40.0),
    slope: float = 0.0005,
    intercept: float = -0.25,
    series_number: int = 3,
    study_uid: str | None = None,
    frame_of_reference: str | None = None,
    seed: int = 0,
    description: str = "phantom",
) -> WrittenSeries:
    """Write ``volume`` ([i, j, k], real-world values) as a CT series: stored = round((value - intercept) / slope)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns, rows, slices = volume.shape
    row_dir, col_dir, normal = (np.asarray(rotation, dtype=float)[:, axis] for axis in range(3))
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row_dir * spacing[0], col_dir * spacing[1], normal * spacing[2]
    affine[:3, 3] = origin
    stored = np.round((volume - intercept) / slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("the volume does not fit uint16 with this rescale")
    study_uid = study_uid or generate_uid()
    series_uid, frame_of_reference = generate_uid(), frame_of_reference or generate_uid()
    sop_uids = tuple(generate_uid() for _ in range(slices))
    order = np.random.default_rng(seed).permutation(slices)
    for position, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uids[k]
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Lesion", "PH001", "19700101", "O"
        ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = study_uid, "1", "20260101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
        ds.Modality, ds.Manufacturer = "CT", "tests"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.InstanceNumber = int(position + 1)  # shuffled on purpose: never the slice order
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{value:.6f}" for value in affine[:3, 3] + k * affine[:3, 2]]
        ds.ImageOrientationPatient = [f"{value:.8f}" for value in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # (between rows, between columns)
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope}", f"{intercept}", "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(np.uint16)).tobytes()
        path = folder / f"slice_{order[(position * 7) % slices]:04d}_{position}.dcm"
        if int(pydicom.__version__.split(".")[0]) < 3:
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
        else:
            ds.save_as(path, enforce_file_format=True)
    return WrittenSeries(folder, series_uid, series_number, affine, sop_uids, frame_of_reference, slope, intercept)


def read_headers(folder: Path) -> list[Dataset]:
    """Every DICOM file in ``folder``, headers only."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]


def frame_world(dataset: Dataset, frame: int, row: int, column: int) -> np.ndarray:
    """LPS mm of pixel (row, column) of frame ``frame`` of a multi-frame object (Parametric Map, SEG), by hand from
    its functional groups: the frame's ImagePositionPatient + column * column spacing * row direction + row * row
    spacing * column direction."""
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    position = dataset.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
    return (
        np.array([float(v) for v in position])
        + column * column_spacing * orientation[:3]
        + row * row_spacing * orientation[3:]
    )
