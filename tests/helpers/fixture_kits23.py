"""A tiny KiTS23 data set in the published layout (real NIfTI files), and an MSD-style copy of it.

``write_kits23(root)`` writes ``root/dataset/`` as the kits23 repository holds it after ``kits23_download_data``::

    dataset/kits23.json                       per-case records (the reader must not need them)
    dataset/case_0000N/imaging.nii.gz         int16 CT in HU, 16 x 48 x 48 voxels
    dataset/case_0000N/segmentation.nii.gz    uint8: 0 background, 1 kidney, 2 tumour, 3 cyst
    dataset/case_00000/instances/kidney_instance-1_annotation-1.nii.gz

Arrays are stored as KiTS stores them, slices first: axis 0 runs inferior (3 mm), axis 1 posterior, axis 2 left
(0.8 mm in-plane), with an origin away from zero; so only a pipeline that reorients (RAS) and resamples puts the
voxels where they belong, and only a correct inversion writes a prediction back on this grid. Each case is an
abdomen-like slab: air (-1000 HU) around a body of fat (-100 HU) and soft tissue (40 HU), a kidney ellipsoid
(160 HU, arterial-phase cortex) holding a tumour (90 HU) and a cyst (5 HU), with 10 HU of noise; positions vary by
case, so that the classes can be learnt and the CAM metrics have a region to find.

``write_msd_copy(dataset, root)`` writes the same cases in the MSD layout (``dataset.json``, ``imagesTr/``,
``labelsTr/``, ``imagesTs/``, and a macOS ``._`` file in ``imagesTr/`` as in the published Task09 archive).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["KITS_SHAPE", "KITS_AFFINE", "KITS_SPACING", "write_kits23", "write_msd_copy"]

KITS_SHAPE = (16, 48, 48)  # slices, rows, columns
KITS_SPACING = (3.0, 0.8, 0.8)  # mm along the array axes
# axis 0 -> inferior, axis 1 -> posterior, axis 2 -> left (orientation codes I, P, L), origin off zero
KITS_AFFINE = np.array(
    [
        [0.0, 0.0, -KITS_SPACING[2], 12.5],
        [0.0, -KITS_SPACING[1], 0.0, -40.0],
        [-KITS_SPACING[0], 0.0, 0.0, 310.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
_HU = {"air": -1000, "fat": -100, "tissue": 40, "kidney": 160, "tumour": 90, "cyst": 5}


def _inside(millimetres: np.ndarray, centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Voxels of the ellipsoid (``centre``, ``radii`` in mm along the array axes); ``millimetres`` is (3, *shape)."""
    return sum(((axis - c) / r) ** 2 for axis, c, r in zip(millimetres, centre, radii)) <= 1.0


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, segmentation uint8) of one case, both of :data:`KITS_SHAPE`."""
    millimetres = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(KITS_SHAPE, KITS_SPACING)), indexing="ij"))
    middle = tuple((n - 1) * s / 2 for n, s in zip(KITS_SHAPE, KITS_SPACING))
    in_plane = (np.inf, 17.0, 17.0)
    body = _inside(millimetres, middle, in_plane)
    image = np.full(KITS_SHAPE, _HU["air"], dtype=float)
    image[body] = _HU["fat"]
    image[_inside(millimetres, middle, (np.inf, 14.0, 14.0))] = _HU["tissue"]
    side = rng.choice([-1.0, 1.0])
    kidney_centre = (
        middle[0] + rng.uniform(-3, 3),
        middle[1] + rng.uniform(-2, 2),
        middle[2] + side * 6.5 + rng.uniform(-1, 1),
    )
    kidney = _inside(millimetres, kidney_centre, (14.0, 8.0, 6.0))
    tumour = _inside(millimetres, (kidney_centre[0] + 4.0, kidney_centre[1] - 3.0, kidney_centre[2]), (5.0, 4.0, 4.0))
    cyst = _inside(millimetres, (kidney_centre[0] - 5.0, kidney_centre[1] + 3.5, kidney_centre[2]), (4.0, 3.0, 3.0))
    segmentation = np.zeros(KITS_SHAPE, dtype=np.uint8)
    for label, (name, region) in enumerate((("kidney", kidney), ("tumour", tumour), ("cyst", cyst)), start=1):
        image[region] = _HU[name]
        segmentation[region] = label
    image[body] += rng.normal(0.0, 10.0, size=int(body.sum()))
    return np.round(image).astype(np.int16), segmentation


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, KITS_AFFINE)
    image.set_qform(KITS_AFFINE, code=1)
    image.set_sform(KITS_AFFINE, code=1)
    nib.save(image, path)


def write_kits23(root: Path, n_cases: int = 6, seed: int = 0) -> Path:
    """Write ``n_cases`` cases in the KiTS23 layout under ``root/dataset`` and return that folder (the reader's
    ``dataset_dir``)."""
    dataset = root / "dataset"
    rng = np.random.default_rng(seed)
    records = []
    for index in range(n_cases):
        case = f"case_{index:05d}"
        image, segmentation = _case(rng)
        _save(image, dataset / case / "imaging.nii.gz")
        _save(segmentation, dataset / case / "segmentation.nii.gz")
        records.append({"case_id": case, "malignant": True, "tumor_histologic_subtype": "clear_cell_rcc"})
        if index == 0:
            kidney = (segmentation > 0).astype(np.uint8)
            _save(kidney, dataset / case / "instances" / "kidney_instance-1_annotation-1.nii.gz")
    (dataset / "kits23.json").write_text(json.dumps(records, indent=1))
    return dataset


def write_msd_copy(dataset: Path, root: Path) -> Path:
    """Copy the cases of a :func:`write_kits23` folder into an MSD-style task folder ``root`` and return it: all but
    the last case labelled (``imagesTr/kits_NNN.nii.gz`` + ``labelsTr/``), the last one unlabelled in
    ``imagesTs/``."""
    cases = sorted(path for path in dataset.iterdir() if path.name.startswith("case_"))
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training = []
    for index, case in enumerate(cases[:-1]):
        name = f"kits_{index:03d}.nii.gz"
        shutil.copy(case / "imaging.nii.gz", root / "imagesTr" / name)
        shutil.copy(case / "segmentation.nii.gz", root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    shutil.copy(cases[-1] / "imaging.nii.gz", root / "imagesTs" / "kits_900.nii.gz")
    (root / "imagesTr" / "._kits_000.nii.gz").write_bytes(b"\0\5\26\7 macOS resource fork")
    content = {
        "name": "KiTS-like",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "kidney", "2": "tumour", "3": "cyst"},
        "numTraining": len(training),
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/kits_900.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(content, indent=4))
    return root
