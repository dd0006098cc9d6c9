"""Phantom generator: determinism, ground truth consistency, geometry round-trips through nibabel and MONAI."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_xai.data import (
    ensure_phantom_dataset,
    generate_phantom,
    phantom_slice,
    write_phantom_dataset,
)

SPACING = (1.0, 1.0, 1.5)
SEEDS = range(6)


def _surround(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Voxels within ``width`` voxels of ``mask`` but outside it."""
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


@pytest.fixture(scope="module")
def dataset_3d(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom3d"), n_cases=10, seed=7, positive_fraction=0.5)


def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    first, again, other = generate_phantom(3), generate_phantom(3), generate_phantom(4)
    for field in ("image", "mask", "affine", "anatomy", "distractors"):
        assert np.array_equal(getattr(first, field), getattr(again, field)), field
    assert not np.array_equal(first.image, other.image)


def test_dtypes_shapes_and_labels():
    for seed in SEEDS:
        positive = generate_phantom(seed, shape=(40, 44, 32), lesion=True)
        negative = generate_phantom(seed, shape=(40, 44, 32), lesion=False)
        for case in (positive, negative):
            assert case.image.shape == case.mask.shape == case.anatomy.shape == (40, 44, 32)
            assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
            assert np.isfinite(case.image).all() and case.image.min() >= 0  # Rician magnitude is non-negative
        assert positive.label == 1 and positive.mask.sum() > 0
        assert negative.label == 0 and negative.mask.sum() == 0


def test_lesions_and_distractors_lie_inside_the_anatomy():
    for seed in SEEDS:
        case = generate_phantom(seed, distractor_probability=1.0)
        assert case.distractors.any()
        assert not (case.mask.astype(bool) & ~case.anatomy).any()
        assert not (case.distractors.astype(bool) & ~case.anatomy).any()
        # the head fills a realistic part of the field of view and the background outside it is dark
        assert 0.25 < case.anatomy.mean() < 0.6
        assert case.image[~ndimage.binary_dilation(case.anatomy, iterations=2)].mean() < 0.1


def test_num_lesions_one_gives_one_connected_lesion():
    for seed in SEEDS:
        _, count = ndimage.label(generate_phantom(seed, num_lesions=1).mask)
        assert count == 1


def test_lesion_contrast_is_visible_against_its_surroundings():
    for seed in SEEDS:
        case = generate_phantom(seed, distractor_probability=0.0, noise_std=0.025)
        lesion = case.mask.astype(bool)
        difference = case.image[lesion].mean() - case.image[_surround(lesion)].mean()
        assert difference > 0.1  # contrast at least 0.2 minus partial volume at the soft edge
        assert difference > 4 * 0.025


def test_lesion_contrast_parameter_controls_the_visible_difference():
    # Same seed, same random draws: only the added intensity changes, geometry stays identical.
    faint = generate_phantom(5, lesion_contrast=(0.05, 0.05), distractor_probability=0.0)
    strong = generate_phantom(5, lesion_contrast=(0.4, 0.4), distractor_probability=0.0)
    assert np.array_equal(faint.mask, strong.mask)
    lesion = faint.mask.astype(bool)
    surround = _surround(lesion)
    faint_difference = faint.image[lesion].mean() - faint.image[surround].mean()
    strong_difference = strong.image[lesion].mean() - strong.image[surround].mean()
    assert strong_difference - faint_difference > 0.2


def test_distractors_do_not_depend_on_the_class():
    with_distractors = [generate_phantom(s, lesion=False, distractor_probability=1.0) for s in SEEDS]
    assert all(case.distractors.any() and case.label == 0 for case in with_distractors)
    assert not any(generate_phantom(s, distractor_probability=0.0).distractors.any() for s in SEEDS)


def test_affine_has_the_spacing_and_centres_the_volume():
    case = generate_phantom(0, shape=(48, 48, 48), spacing=SPACING)
    assert np.allclose(np.linalg.norm(case.affine[:3, :3], axis=0), SPACING)
    centre_world = case.affine @ np.array([23.5, 23.5, 23.5, 1.0])
    assert np.allclose(centre_world[:3], 0.0)
    shifted = generate_phantom(0, spacing=SPACING, origin=(10.0, -20.0, 5.0))
    assert np.allclose(shifted.affine[:3, 3], (10.0, -20.0, 5.0))


def test_phantom_slice_cuts_through_the_lesion_and_keeps_world_coordinates():
    for seed in SEEDS:
        volume = generate_phantom(seed, lesion=seed % 2 == 0)
        flat = phantom_slice(volume, seed=seed)
        assert flat.image.shape == flat.mask.shape == (48, 48)
        assert flat.label == volume.label == int(flat.mask.any())
        if volume.label:  # the slice holds the largest lesion cross-section
            assert flat.mask.sum() == volume.mask.sum(axis=(0, 1)).max()
        index = next(z for z in range(48) if np.array_equal(volume.image[:, :, z], flat.image))
        voxel = np.array([5, 9, 0, 1.0])
        assert np.allclose(flat.affine @ voxel, volume.affine @ np.array([5, 9, index, 1.0]))


def test_phantom_slice_rejects_2d_input_and_bad_axis():
    volume = generate_phantom(0)
    with pytest.raises(ValueError, match="needs a 3D case"):
        phantom_slice(phantom_slice(volume, seed=0), seed=0)
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        phantom_slice(volume, seed=0, axis=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (48, 48)}, "shape must be 3 sizes"),
        ({"shape": (48, 48, 8)}, "at least 16"),
        ({"spacing": (1.0, 0.0, 1.5)}, "spacing must be 3 positive"),
        ({"lesion_radius_mm": (5.0, 2.0)}, "lesion_radius_mm must be"),
        ({"lesion_contrast": (0.0, 0.2)}, "lesion_contrast must be"),
        ({"distractor_probability": 1.5}, "distractor_probability"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
        ({"num_lesions": 0}, "num_lesions must be >= 1"),
    ],
)
def test_generate_phantom_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_phantom(0, **kwargs)


def test_datalist_loads_with_monai_and_matches_the_files(dataset_3d):
    from monai.data import load_decathlon_datalist

    splits = {
        key: load_decathlon_datalist(str(dataset_3d), data_list_key=key) for key in ("training", "validation", "test")
    }
    assert [len(items) for items in splits.values()] == [7, 1, 2]
    assert sorted(item["label"] for items in splits.values() for item in items) == [0] * 5 + [1] * 5
    for items in splits.values():
        for item in items:
            assert set(item) == {"image", "mask", "label"}
            mask = nib.load(item["mask"]).get_fdata()
            assert int(mask.any()) == item["label"]
    # stratified: the 2-case test split holds one case of each class
    assert sorted(item["label"] for item in splits["test"]) == [0, 1]


def test_written_dataset_is_reproducible(dataset_3d, tmp_path):
    again = write_phantom_dataset(tmp_path / "again", n_cases=10, seed=7, positive_fraction=0.5)
    assert json.loads(again.read_text()) == json.loads(dataset_3d.read_text())
    for name in ("images/case_004.nii.gz", "masks/case_004.nii.gz"):
        reference = nib.load(dataset_3d.parent / name)
        assert np.array_equal(nib.load(again.parent / name).get_fdata(), reference.get_fdata())


def test_spacing_and_affine_round_trip_through_nibabel_and_monai(dataset_3d):
    from monai.data.utils import affine_to_spacing
    from monai.transforms import LoadImaged

    item = json.loads(dataset_3d.read_text())["training"][0]
    path = dataset_3d.parent / item["image"]
    image = nib.load(path)
    assert np.allclose(image.header.get_zooms(), SPACING)
    expected_affine = generate_phantom(0).affine  # every case shares the grid
    assert np.allclose(image.affine, expected_affine)

    loaded = LoadImaged(keys=("image", "mask"))({"image": str(path), "mask": str(dataset_3d.parent / item["mask"])})
    for key in ("image", "mask"):
        assert tuple(loaded[key].shape) == (48, 48, 48)
        assert np.allclose(affine_to_spacing(loaded[key].affine).numpy(), SPACING)
        assert np.allclose(loaded[key].meta["pixdim"][1:4], SPACING)
        assert np.allclose(loaded[key].affine.numpy(), expected_affine)
    assert np.array_equal(loaded["image"].numpy(), image.get_fdata(dtype=np.float32))


def test_2d_dataset_has_2d_images_with_in_plane_spacing(tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.data.utils import affine_to_spacing
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    path = write_phantom_dataset(tmp_path, n_cases=6, seed=1, positive_fraction=0.5, split=(0.5, 0.0, 0.5), dim=2)
    items = load_decathlon_datalist(str(path), data_list_key="training") + load_decathlon_datalist(
        str(path), data_list_key="test"
    )
    assert len(items) == 6
    load = LoadImaged(keys=("image", "mask"))
    channel_first = EnsureChannelFirstd(keys=("image", "mask"))
    for item in items:
        loaded = channel_first(load(item))
        assert tuple(loaded["image"].shape) == (1, 48, 48)
        assert np.allclose(affine_to_spacing(loaded["image"].affine, r=2).numpy(), (1.0, 1.0))
        assert int(loaded["mask"].any()) == item["label"]


def test_ensure_phantom_dataset_reuses_matching_data_and_refuses_other_parameters(tmp_path):
    path = ensure_phantom_dataset(tmp_path, n_cases=3, seed=2)
    written_at = path.stat().st_mtime_ns
    assert ensure_phantom_dataset(tmp_path, n_cases=3, seed=2) == path
    assert path.stat().st_mtime_ns == written_at
    with pytest.raises(ValueError, match="delete that folder or point dataset_dir elsewhere"):
        ensure_phantom_dataset(tmp_path, n_cases=4, seed=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_cases": 0}, "n_cases must be >= 1"),
        ({"positive_fraction": -0.1}, "positive_fraction must be in"),
        ({"split": (0.5, 0.5)}, "split must be 3"),
        ({"split": (0.5, 0.3, 0.3)}, "summing to 1"),
        ({"dim": 4}, "dim must be 2 or 3"),
    ],
)
def test_write_phantom_dataset_rejects_bad_arguments(tmp_path, kwargs, message):
    arguments = {"n_cases": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        write_phantom_dataset(tmp_path, **arguments)


def test_a_folder_with_files_is_refused_unless_overwrite(tmp_path):
    """Writing into a folder that holds an earlier data set used to mix both: 10 old cases stayed beside 3 new ones."""
    write_phantom_dataset(tmp_path, n_cases=10, seed=7, shape=(24, 24, 20))
    with pytest.raises(ValueError, match=r"already holds \['datalist.json', 'images', 'masks'\].*overwrite=True"):
        write_phantom_dataset(tmp_path, n_cases=3, seed=8, shape=(24, 24, 20))
    path = write_phantom_dataset(tmp_path, n_cases=3, seed=8, shape=(24, 24, 20), overwrite=True)
    assert len(list((tmp_path / "images").iterdir())) == 3 == len(list((tmp_path / "masks").iterdir()))
    assert json.loads(path.read_text())["phantom"]["n_cases"] == 3
    (tmp_path / "notes.txt").write_text("mine")
    write_phantom_dataset(tmp_path, n_cases=2, seed=8, shape=(24, 24, 20), overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the phantom data set is replaced
    # ensure_phantom_dataset restarts a write that stopped before its datalist
    partial = tmp_path / "partial"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "case_000.nii.gz").write_bytes(b"half")
    assert ensure_phantom_dataset(partial, 2, seed=1, shape=(24, 24, 20)).is_file()
    assert len(list((partial / "images").iterdir())) == 2
