"""A model-zoo spleen-style bundle explained with the overlay alone: no layer, no class, maps on the CT's own grid.

The CT is stored LPS at 0.8 x 0.8 x 2.5 mm and the bundle resamples it to RAS 1.5 x 1.5 x 2 mm, so the preprocessed
grid and the original one differ in shape, orientation and spacing; the maps must come back voxel for voxel on the
CT's grid, as the bundle's own inverted prediction does.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from monai_xai.bundle import explain_bundle
from monai_xai.handlers import SaliencyWriter
from tests.helpers.bundles import make_spleen_style_bundle
from tests.helpers.engines import CONFIGS, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    bundle = make_spleen_style_bundle(tmp_path_factory.mktemp("spleen") / "bundle")
    config_files = [bundle / "configs" / "inference.json", CONFIGS / "explain.json"]
    original = run_bundle(config_files, "--xai_methods", "['gradcam','hirescam']", cwd=bundle)
    assert original.returncode == 0, original.stderr[-4000:]
    preprocessed = run_bundle(
        config_files,
        "--xai_methods", "['gradcam']",
        "--xai_maps_grid", "preprocessed",
        "--xai_output_dir", str(bundle / "eval" / "xai_preprocessed"),
        cwd=bundle,
    )  # fmt: skip
    assert preprocessed.returncode == 0, preprocessed.stderr[-4000:]
    return bundle, original.stderr


def test_maps_are_written_on_the_ct_grid_next_to_the_bundles_prediction(explained):
    bundle, _ = explained
    ct = nib.load(str(bundle / "data" / "ct0.nii.gz"))
    (prediction_file,) = (bundle / "eval").rglob("ct0_seg.nii.gz")
    prediction = nib.load(str(prediction_file))
    assert prediction.shape == ct.shape  # the bundle's own inversion, which the maps must match
    for method in ("gradcam", "hirescam"):
        saved = nib.load(str(bundle / "eval" / "xai" / "ct0" / f"ct0_{method}.nii.gz"))
        assert saved.shape == ct.shape
        np.testing.assert_allclose(saved.affine, ct.affine, atol=1e-4)
        values = np.asarray(saved.dataobj)
        assert values.min() >= 0 and values.max() <= 1 + 1e-6 and values.max() > 0.5
    with open(bundle / "eval" / "xai" / "cases.csv") as stream:
        assert {row["class"] for row in csv.DictReader(stream)} == {"1"}  # the foreground of a 2-class segmenter


def test_the_preprocessed_grid_stays_an_option_and_resamples_to_the_same_map(explained):
    """The preprocessed-grid map has the network's grid (RAS, 1.5 x 1.5 x 2 mm); resampled into the CT's grid by
    world coordinates (nibabel, independent of MONAI's inverse) it agrees with the original-grid map."""
    bundle, _ = explained
    ct = nib.load(str(bundle / "data" / "ct0.nii.gz"))
    small = nib.load(str(bundle / "eval" / "xai_preprocessed" / "ct0" / "ct0_gradcam.nii.gz"))
    assert nib.aff2axcodes(small.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.abs(np.diag(small.affine))[:3], (1.5, 1.5, 2.0), atol=1e-4)
    assert small.shape != ct.shape
    original = np.asarray(nib.load(str(bundle / "eval" / "xai" / "ct0" / "ct0_gradcam.nii.gz")).dataobj)
    from nibabel.processing import resample_from_to

    resampled = np.asarray(resample_from_to(small, ct, order=1).dataobj)
    inside = resampled > 0  # voxels of the CT grid that the preprocessed grid covers
    assert inside.mean() > 0.6
    correlation = np.corrcoef(resampled[inside], original[inside])[0, 1]
    assert correlation > 0.95


def test_original_grid_needs_an_invertible_preprocessing(tmp_path):
    with pytest.raises(ValueError, match="xai_preprocessing.*--xai_maps_grid preprocessed"):
        SaliencyWriter(["gradcam"], grid="original", preprocessing=None)
    with pytest.raises(ValueError, match="must be one of"):
        SaliencyWriter(["gradcam"], grid="ct")


def test_a_map_of_a_resampled_image_is_inverted_onto_its_file(tmp_path):
    """The writer's inversion on its own: a map that is the preprocessed image itself comes back as the file's
    image (up to interpolation), with its affine."""
    array = np.zeros((20, 18, 6), dtype=np.float32)
    array[5:15, 4:12, 2:5] = 1.0
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(tmp_path / "ct.nii.gz"))
    preprocessing = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", "RAS"),
            Spacingd("image", (1.5, 1.5, 2.0)),
        ]
    )
    image = preprocessing({"image": str(tmp_path / "ct.nii.gz")})["image"]
    writer = SaliencyWriter(["gradcam"], grid="original", preprocessing=preprocessing)
    back = writer._on_grid({"gradcam": image.clone(), "hirescam": 1 - image}, image)
    np.testing.assert_allclose(back["hirescam"].numpy(), 1 - back["gradcam"].numpy(), atol=1e-5)  # one inversion
    back = back["gradcam"]
    assert tuple(back.shape[1:]) == array.shape
    np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-5)
    assert torch.corrcoef(torch.stack([back[0].flatten(), torch.as_tensor(array).flatten()]))[0, 1] > 0.9


def test_each_foreground_class_is_explained_in_turn_without_a_class(tmp_path):
    """`monai-xai explain` (explain_bundle) on a segmenter with two foreground classes named in its metadata and no
    xai_class: one results folder per class, each map explaining its own class, on the CT's grid."""
    bundle = make_spleen_style_bundle(tmp_path / "bundle", classes=("background", "spleen", "left kidney"))
    runs = explain_bundle(bundle, overlays=("explain",), xai_methods=["hirescam"], xai_report=False)
    folders = [run.folder for run in runs]
    assert folders == [bundle / "eval" / "xai" / "spleen", bundle / "eval" / "xai" / "left_kidney"]
    ct = nib.load(str(bundle / "data" / "ct0.nii.gz"))
    maps = []
    for folder, class_idx in zip(folders, (1, 2)):
        with open(folder / "cases.csv") as stream:
            assert [row["class"] for row in csv.DictReader(stream)] == [str(class_idx)]
        saved = nib.load(str(folder / "ct0" / "ct0_hirescam.nii.gz"))
        assert saved.shape == ct.shape
        maps.append(np.asarray(saved.dataobj))
    assert not np.allclose(maps[0], maps[1], atol=1e-3)  # two classes, two explanations
