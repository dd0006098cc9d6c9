"""describe(): every field checked on maps of known geometry, 2D and 3D, and the patient's sides from the affine.

The maps are lesions drawn by hand: a region of known centre, semi-axes and spacing at value 1 on a background of 0.1,
so the hot area (half way to the peak) is exactly the drawn region and each number has a closed form.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from monai.data import MetaTensor

from monai_xai.describe import ENGLISH, describe

BACKGROUND = 0.1


def _ellipse(shape, centre, semi_axes, spacing=None) -> torch.Tensor:
    """(*shape) bool: voxels whose centre lies in the ellipse/ellipsoid (centre and semi-axes in voxels along the
    array axes; with ``spacing``, semi-axes in mm)."""
    spacing = spacing or (1.0,) * len(shape)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    distance = sum(((g - c) * s / a) ** 2 for g, c, a, s in zip(grids, centre, semi_axes, spacing))
    return distance <= 1


def _lesion_map(region: torch.Tensor) -> torch.Tensor:
    return torch.where(region, 1.0, BACKGROUND).double()


def test_2d_lesion_of_known_size_shape_and_place_with_a_calibrated_prediction() -> None:
    # MONAI's 2D layout: axis 0 = column (x), axis 1 = row (y). Lesion right of centre and low in the image, 3:1 wide.
    shape, spacing = (128, 96), (0.5, 0.5)
    region = _ellipse(shape, centre=(96, 70), semi_axes=(12.0, 4.0), spacing=spacing)
    affine = torch.diag(torch.tensor([*spacing, 1.0, 1.0], dtype=torch.float64))
    result = describe(
        MetaTensor(_lesion_map(region)[None], affine=affine),
        probabilities=[0.9374, 0.05, 0.0126],
        class_names=["NV", "MEL", "BCC"],
        calibrated=True,
    )
    (main,) = result.regions
    geometry = main.geometry
    assert geometry.voxels == int(region.sum())
    assert geometry.size == pytest.approx(region.sum().item() * 0.25)
    assert geometry.size == pytest.approx(math.pi * 12 * 4, rel=0.03)  # the ellipse's area in mm^2
    assert geometry.centroid == pytest.approx((96, 70), abs=0.05)
    assert geometry.axis_lengths == pytest.approx((24, 8), rel=0.05)  # full axes in mm
    assert geometry.fraction == pytest.approx(region.double().mean().item())
    assert geometry.contrast == pytest.approx(1.0 / BACKGROUND)
    assert (main.size_word, main.shape, main.boundary, main.intensity) == ("small", "elongated", "smooth", "sharply")
    assert main.location == ("lower", "right")
    assert (result.predicted, result.predicted_name, result.confidence) == (0, "NV", 0.9374)
    assert result.alternatives == () and result.calibrated and not result.flat
    assert result.threshold == pytest.approx((1 + BACKGROUND) / 2)
    assert result.text == (
        f"Prediction: NV (93.74% confidence, calibrated). Focus: small ({geometry.size:.0f} mm²), elongated region "
        "with a smooth boundary in the lower-right part of the image, standing out sharply from the rest of the map."
    )
    row = result.as_dict()
    assert row["region_location"] == "lower-right" and row["region_shape"] == "elongated" and row["n_regions"] == 1
    assert row["text"] == result.text


@pytest.mark.parametrize(
    ("centre", "semi_axes", "words"),
    [
        ((20, 20), (6.0, 6.0), (("upper", "left"), "round", "small")),
        ((48, 10), (5.0, 5.0), (("upper",), "round", "small")),
        ((48, 48), (30.0, 28.0), ((), "round", "large")),
        ((10, 80), (4.0, 9.0), (("lower", "left"), "elongated", "small")),
    ],
)
def test_2d_sides_shape_and_size_words(centre, semi_axes, words) -> None:
    region = _ellipse((96, 96), centre, semi_axes)
    (main,) = describe(_lesion_map(region)).regions
    assert (main.location, main.shape, main.size_word) == words


@pytest.mark.parametrize(("background", "word"), [(0.1, "sharply"), (0.5, "clearly"), (0.9, "faintly")])
def test_intensity_word_follows_the_contrast_with_the_rest_of_the_map(background, word) -> None:
    region = _ellipse((64, 64), (32, 32), (8.0, 8.0))
    (main,) = describe(torch.where(region, 1.0, background)).regions
    assert main.geometry.contrast == pytest.approx(1 / background) and main.intensity == word


def test_a_3d_disc_is_flat_and_a_ball_round() -> None:
    disc = _ellipse((48, 48, 48), (24, 24, 24), (14.0, 14.0, 4.0))
    ball = _ellipse((48, 48, 48), (24, 24, 24), (9.0, 9.0, 9.0))
    assert describe(_lesion_map(disc)).regions[0].shape == "flat"
    assert describe(_lesion_map(ball)).regions[0].shape == "round"


def test_rows_and_columns_read_as_such_with_axes_2d_rc() -> None:
    region = _ellipse((96, 96), centre=(80, 15), semi_axes=(5.0, 5.0))  # row 80 (low), column 15 (left)
    assert describe(_lesion_map(region), axes_2d="rc").regions[0].location == ("lower", "left")
    assert describe(_lesion_map(region)).regions[0].location == ("upper", "right")


def test_a_ragged_outline_is_irregular_and_its_ellipse_is_not() -> None:
    grids = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    radius = torch.hypot(grids[0] - 48, grids[1] - 48)
    angle = torch.atan2(grids[1] - 48, grids[0] - 48)
    star = radius <= 20 + 8 * torch.cos(9 * angle)
    (main,) = describe(_lesion_map(star)).regions
    assert main.boundary == "irregular" and main.geometry.irregularity > 1.5
    disk = radius <= 20
    (main,) = describe(_lesion_map(disk)).regions
    assert main.boundary == "smooth" and main.geometry.irregularity < 1.15


LESION_CENTRE_MM = (-26.0, 22.0, 22.0)  # world (RAS): the patient's left, anterior, superior of the volume's centre
LESION_SEMI_AXES_MM = (15.0, 8.0, 8.0)


def _grid_affine(linear: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(4, 4) affine with this linear part whose volume centre is the world origin."""
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((torch.tensor(shape, dtype=torch.float64) - 1) / 2)
    return affine


def _world_lesion(shape: tuple[int, ...], affine: torch.Tensor) -> torch.Tensor:
    """(*shape) bool: voxels whose world (RAS) centre lies in the lesion ellipsoid, whatever the grid."""
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), -1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    centre, semi_axes = torch.tensor(LESION_CENTRE_MM), torch.tensor(LESION_SEMI_AXES_MM)
    return (((world - centre) / semi_axes) ** 2).sum(-1) <= 1


SHAPE_3D = (60, 80, 40)
RAS_AFFINE = _grid_affine(torch.diag(torch.tensor([1.5, 1.0, 2.0], dtype=torch.float64)), SHAPE_3D)


def test_3d_lesion_volume_shape_and_patient_sides() -> None:
    region = _world_lesion(SHAPE_3D, RAS_AFFINE)
    result = describe(_lesion_map(region), RAS_AFFINE)
    (main,) = result.regions
    assert main.geometry.size == pytest.approx(region.sum().item() * 3.0)
    assert main.geometry.size == pytest.approx(4 / 3 * math.pi * 15 * 8 * 8, rel=0.03)  # mm^3
    assert main.geometry.axis_lengths == pytest.approx((30, 16, 16), rel=0.06)
    assert (main.shape, main.location) == ("elongated", ("L", "A", "S"))
    volume_ml = main.geometry.size / 1000
    assert f"small ({volume_ml:.1f} ml), elongated region" in result.text
    assert "in the left, anterior and superior part of the volume (patient terms)" in result.text


def test_the_same_anatomy_stored_lps_or_oblique_or_with_an_lps_affine_gives_the_same_sides() -> None:
    heat = _lesion_map(_world_lesion(SHAPE_3D, RAS_AFFINE))
    expected = describe(heat, RAS_AFFINE).regions[0].location
    assert expected == ("L", "A", "S")
    # stored in LPS voxel order: axes 0 and 1 reversed, the affine says so (still RAS world, as nibabel gives it)
    lps_stored = _grid_affine(torch.diag(torch.tensor([-1.5, -1.0, 2.0], dtype=torch.float64)), SHAPE_3D)
    assert describe(_lesion_map(_world_lesion(SHAPE_3D, lps_stored)), lps_stored).regions[0].location == expected
    torch.testing.assert_close(_world_lesion(SHAPE_3D, lps_stored), _world_lesion(SHAPE_3D, RAS_AFFINE).flip(0, 1))
    # the same grid with an ITK/DICOM affine (LPS world)
    to_lps = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
    assert describe(heat, to_lps @ RAS_AFFINE, space="LPS").regions[0].location == expected
    assert describe(heat, to_lps @ RAS_AFFINE, space="RAS").regions[0].location == ("R", "P", "S")  # wrong space
    # an oblique grid, rotated 20 degrees about the patient's z axis, sampling the same anatomy
    angle = math.radians(20)
    rotation = torch.eye(3, dtype=torch.float64)
    rotation[:2, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    oblique = _grid_affine(rotation @ RAS_AFFINE[:3, :3], SHAPE_3D)
    assert describe(_lesion_map(_world_lesion(SHAPE_3D, oblique)), oblique).regions[0].location == expected


def test_a_flat_or_empty_map_has_no_focus() -> None:
    for heat in (torch.zeros(32, 32), torch.full((16, 16, 16), 0.3)):
        result = describe(heat, probabilities=[0.2, 0.8], class_names=["normal", "pneumonia"])
        assert result.flat and result.regions == () and result.threshold is None
        assert result.text == "Prediction: pneumonia (80.00% confidence, uncalibrated). No focus: the map is flat."
        assert result.as_dict()["n_regions"] == 0


def test_two_hot_regions_are_counted_and_the_largest_described() -> None:
    region = _ellipse((96, 96), (20, 48), (10.0, 10.0)) | _ellipse((96, 96), (75, 48), (6.0, 6.0))
    result = describe(_lesion_map(region))
    assert len(result.regions) == 2
    assert result.regions[0].geometry.voxels > result.regions[1].geometry.voxels
    assert result.regions[0].location == ("left",) and result.regions[1].location == ("right",)
    assert "2 separate hot regions; the largest is described." in result.text


def test_overlap_with_a_segmentation_and_close_alternatives() -> None:
    hot = _ellipse((64, 64), (32, 32), (8.0, 8.0))
    tumour = _ellipse((64, 64), (32, 36), (8.0, 8.0))  # shifted down: partly covered
    result = describe(
        _lesion_map(hot),
        probabilities=[0.5, 0.4, 0.1],
        class_names=["glioma", "meningioma", "pituitary"],
        explained=1,
        masks={"predicted tumour": tumour, "empty": torch.zeros(64, 64, dtype=torch.bool)},
    )
    both = (hot & tumour).sum().item()
    covered, inside = result.overlaps["predicted tumour"]
    assert covered == pytest.approx(both / tumour.sum().item()) and inside == pytest.approx(both / hot.sum().item())
    assert math.isnan(result.overlaps["empty"][0]) and result.overlaps["empty"][1] == 0
    assert f"It covers {100 * covered:.0f}% of the predicted tumour ({100 * inside:.0f}% of the hot area" in result.text
    assert "empty" not in result.text
    assert "Close alternatives: meningioma (40.00%)." in result.text and "The map explains meningioma." in result.text
    assert result.alternatives == (("meningioma", 0.4),)
    assert result.as_dict()["covers_predicted tumour"] == pytest.approx(covered)
    assert math.isnan(result.as_dict()["covers_empty"]) and result.as_dict(json_safe=True)["covers_empty"] is None


def test_atlas_labels_under_the_region_are_named_with_their_hemisphere() -> None:
    hot = _ellipse((64, 64, 64), (20, 32, 32), (8.0, 8.0, 8.0))
    atlas = torch.zeros(64, 64, 64, dtype=torch.long)
    atlas[:20] = 37  # the lower half of the region along axis 0
    atlas[20:] = 5
    names = {37: "Hippocampus_L", 5: "Frontal_Sup_Orb_L"}
    result = describe(_lesion_map(hot), atlas=atlas, atlas_names=names)
    shares = dict(result.regions[0].atlas)
    assert shares["Hippocampus_L"] == pytest.approx((hot[:20].sum() / hot.sum()).item())
    assert sum(shares.values()) == pytest.approx(1.0)
    first, second = result.regions[0].atlas
    assert f"In the {'left hippocampus' if first[0] == 'Hippocampus_L' else 'left frontal sup orb'}" in result.text


def test_trust_notes_and_a_translation() -> None:
    region = _ellipse((48, 48), (24, 24), (6.0, 6.0))
    passed = describe(_lesion_map(region), method="gradcam", sanity_passed=True)
    assert passed.text.endswith("The gradcam map passed the randomisation check for this model: top-down.")
    failed = describe(_lesion_map(region), method="eigencam", sanity_passed=False)
    assert "Caution: the eigencam map failed the randomisation check" in failed.text
    unknown = describe(_lesion_map(region), method="gradcam")
    assert "randomisation" not in unknown.text
    german = dataclasses.replace(
        ENGLISH,
        prediction="Vorhersage: {name} ({percent:.1f} % Konfidenz, {calibration}).",
        uncalibrated="unkalibriert",
    )
    text = describe(_lesion_map(region), probabilities=[0.1, 0.9], class_names=["a", "b"], wording=german).text
    assert text.startswith("Vorhersage: b (90.0 % Konfidenz, unkalibriert).")
    # every word comes from the wording, the 2D sides and size words too
    corner = _ellipse((48, 48), (40, 40), (4.0, 4.0))
    sides = {"upper": "oben", "lower": "unten", "left": "links", "right": "rechts"}
    sizes = {"small": "klein", "medium": "mittel", "large": "groß"}
    german = dataclasses.replace(german, image_sides=sides, size_words=sizes)
    text = describe(_lesion_map(corner), wording=german).text
    assert "klein (" in text and "in the unten-rechts part of the image" in text


def test_sizes_are_in_pixels_without_an_affine_and_thresholds_can_be_otsu() -> None:
    region = _ellipse((64, 64), (32, 32), (8.0, 8.0))
    result = describe(_lesion_map(region))
    assert f"small ({int(region.sum())} pixels)" in result.text
    # a photo resized to half its size: the affine counts the original file's pixels
    resized = torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    assert f"small ({4 * int(region.sum())} pixels)" in describe(_lesion_map(region), resized, units="pixels").text
    assert f"({4 * int(region.sum())} mm²)" in describe(_lesion_map(region), resized).text
    tiny = _ellipse((32, 32, 32), (16, 16, 16), (2.0, 2.0, 2.0))
    assert f"small ({int(tiny.sum())} mm³)" in describe(_lesion_map(tiny), torch.eye(4)).text  # below 0.1 ml
    otsu = describe(_lesion_map(region), threshold="otsu")
    assert otsu.regions[0].geometry.voxels == int(region.sum())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"saliency": torch.full((8, 8), math.nan)}, "NaN or inf"),
        ({"saliency": torch.rand(2, 1, 8, 8)}, "must be \\(\\*spatial\\) or \\(1, \\*spatial\\)"),
        ({"masks": {"tumour": torch.ones(4, 4, dtype=torch.bool)}}, "not on the map's grid"),
        ({"atlas": torch.ones(8, 8, dtype=torch.long)}, "come with atlas_names"),
        ({"probabilities": [2.0, -1.0]}, "apply softmax to logits first"),
        ({"probabilities": [0.5, 0.5], "class_names": ["a", "b", "c"]}, "3 class names for 2 probabilities"),
        ({"threshold": 1.5}, "fraction in \\(0, 1\\]"),
        ({"affine": torch.eye(3)}, "affine must be \\(4, 4\\)"),
        ({"units": "inches"}, 'units must be "mm" or "pixels"'),
    ],
)
def test_bad_input_says_what_is_wrong(kwargs, message) -> None:
    arguments = {"saliency": torch.rand(8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        describe(**arguments)
