"""describe() on maps read from real NIfTI files as a bundle reads them (MONAI LoadImage): RAS- and LPS-stored copies
of one volume, and mricron's ch2 brain with a lesion implanted in a known AAL region."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage
from scipy import ndimage

from monai_xai.describe import describe, read_label_names

TEMPLATES = Path("/usr/share/mricron/templates")
HIPPOCAMPUS_L, HIPPOCAMPUS_R = 37, 38


def _load(path: Path, reader: str = "NibabelReader") -> torch.Tensor:
    return LoadImage(image_only=True, reader=reader)(str(path))


@pytest.mark.parametrize("reader", ["NibabelReader", "ITKReader"])
def test_a_volume_saved_ras_and_lps_reads_back_with_the_same_patient_sides(tmp_path, reader) -> None:
    """The lesion lies at low RAS x (patient's left), high y (anterior), middle z; the LPS copy stores the voxels
    reversed along x and y with an affine that says so."""
    heat = np.full((40, 48, 30), 0.1, dtype=np.float32)
    heat[4:12, 34:44, 12:18] = 1.0
    ras = np.diag([2.0, 1.5, 3.0, 1.0])
    lps = ras @ np.array([[-1, 0, 0, 39], [0, -1, 0, 47], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    nib.save(nib.Nifti1Image(heat, ras), tmp_path / "ras.nii.gz")
    nib.save(nib.Nifti1Image(heat[::-1, ::-1].copy(), lps), tmp_path / "lps.nii.gz")
    assert nib.aff2axcodes(lps) == ("L", "P", "S")
    words = [describe(_load(tmp_path / f"{name}.nii.gz", reader)).regions[0] for name in ("ras", "lps")]
    assert words[0].location == words[1].location == ("L", "A")
    assert words[0].geometry.size == pytest.approx(words[1].geometry.size) == pytest.approx(8 * 10 * 6 * 9.0)
    texts = [describe(_load(tmp_path / f"{name}.nii.gz", reader)).text for name in ("ras", "lps")]
    assert texts[0] == texts[1] and "in the left and anterior part of the volume" in texts[0]


@pytest.mark.skipif(not (TEMPLATES / "aal.nii.gz").is_file(), reason="Debian package mricron-data not installed")
@pytest.mark.parametrize(("label", "side", "name"), [(HIPPOCAMPUS_L, "L", "left"), (HIPPOCAMPUS_R, "R", "right")])
def test_a_lesion_implanted_in_the_hippocampus_of_ch2_is_named_with_its_hemisphere(tmp_path, label, side, name) -> None:
    """The map is hot on a 4 mm ball inside the AAL hippocampus (the voxel of that region farthest from its border),
    written beside ch2 with ch2's affine; the atlas and its names table are mricron's own files."""
    brain = nib.load(TEMPLATES / "ch2.nii.gz")
    atlas = np.asarray(nib.load(TEMPLATES / "aal.nii.gz").dataobj)
    inside = atlas == label
    depth = ndimage.distance_transform_edt(inside)
    centre = np.unravel_index(depth.argmax(), depth.shape)
    grid = np.indices(atlas.shape)
    lesion = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 4**2  # 1 mm voxels
    assert (inside[lesion]).all()
    image = np.asarray(brain.dataobj).astype(np.float32)
    image[lesion] = image.max()  # the implanted lesion, for a reader who opens the files
    nib.save(nib.Nifti1Image(image, brain.affine), tmp_path / "ch2_lesion.nii.gz")
    heat = ndimage.gaussian_filter(lesion.astype(np.float32), 1.0)
    nib.save(nib.Nifti1Image(heat, brain.affine), tmp_path / "map.nii.gz")

    names = read_label_names(TEMPLATES / "aal.nii.txt")
    assert names[HIPPOCAMPUS_L] == "Hippocampus_L" and len(names) == 116
    result = describe(
        _load(tmp_path / "map.nii.gz"), atlas=_load(TEMPLATES / "aal.nii.gz"), atlas_names=names, method="gradcam"
    )
    (main,) = result.regions
    assert main.atlas[0][0] == names[label] and main.atlas[0][1] > 0.9
    assert main.location[0] == side and "I" in main.location  # the hippocampus lies low in the brain
    assert f"In the {name} hippocampus (" in result.text
    assert f"in the {name} and inferior part of the volume" in result.text


def test_label_names_tables_are_read_and_bad_lines_named(tmp_path) -> None:
    table = tmp_path / "labels.txt"
    table.write_text("# index name\n1\tKidney_L\n2 Tumour 9\n\n")
    assert read_label_names(table) == {1: "Kidney_L", 2: "Tumour"}
    table.write_text("1 Kidney_L\nkidney\n")
    with pytest.raises(ValueError, match="labels.txt:2: expected '<index> <name>'"):
        read_label_names(table)


@pytest.mark.skipif(not (TEMPLATES / "aal.nii.gz").is_file(), reason="Debian package mricron-data not installed")
def test_cli_describes_a_map_on_its_own_grid_with_the_atlas_resampled_to_it(tmp_path) -> None:
    """`monai-xai describe` on a 2 mm map of a right-hippocampus lesion, with the 1 mm AAL atlas and a tumour mask."""
    atlas_image = nib.load(TEMPLATES / "aal.nii.gz")
    atlas = np.asarray(atlas_image.dataobj)
    depth = ndimage.distance_transform_edt(atlas == HIPPOCAMPUS_R)
    centre_world = atlas_image.affine @ np.array([*np.unravel_index(depth.argmax(), depth.shape), 1.0])
    affine = atlas_image.affine @ np.diag([2.0, 2.0, 2.0, 1.0])  # same origin, 2 mm voxels
    shape = tuple(-(-n // 2) for n in atlas.shape)
    centre = (np.linalg.inv(affine) @ centre_world)[:3]
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), centre)))
    heat = np.exp(-((distance / 1.5) ** 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(heat, affine), tmp_path / "map.nii.gz")
    tumour = (heat >= 0.5 * heat.max()).astype(np.uint8)  # the hot area itself
    nib.save(nib.Nifti1Image(tumour, affine), tmp_path / "tumour.nii.gz")
    script = Path(sys.executable).parent / "monai-xai"
    command = [str(script), "describe", str(tmp_path / "map.nii.gz"), "--atlas", str(TEMPLATES / "aal.nii.gz")]
    command += [
        "--atlas_names",
        str(TEMPLATES / "aal.nii.txt"),
        "--masks",
        f"{{'tumour': '{tmp_path / 'tumour.nii.gz'}'}}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "In the right hippocampus (" in finished.stdout
    assert "It covers 100% of the tumour" in finished.stdout
    as_json = subprocess.run([*command, "--as_json"], capture_output=True, text=True, timeout=120)
    record = json.loads(as_json.stdout)
    assert record["region_atlas"].startswith("Hippocampus_R") and record["covers_tumour"] == 1.0
    # the atlas must come with its names
    missing = subprocess.run(command[:5], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "give the atlas and its names table together" in missing.stderr
