"""Several classes of a segmenter explained at once (``ClassSet``): the target against hand sums, and the maps against
the sum of the per-class maps for methods that are linear in the gradient."""

import pytest
import torch
from monai.networks.nets import UNet

from monai_xai.cams import CAMExplainer, ClassSet, as_class_choice
from monai_xai.cams.targets import SegmentationTarget, build_target, class_sets


@pytest.fixture
def segmenter() -> torch.nn.Module:
    """MONAI UNet, 1 -> 4 classes (background, kidney, tumour, cyst), for (B, 1, 16, 16, 16) inputs."""
    torch.manual_seed(0)
    return UNet(3, 1, 4, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def test_as_class_choice_parses_config_strings():
    assert as_class_choice("foreground") == ClassSet()
    assert as_class_choice(" 1+3 ") == ClassSet((1, 3))
    assert as_class_choice(2) == 2 and as_class_choice([1, 2]) == [1, 2] and as_class_choice(None) is None
    with pytest.raises(ValueError, match=r"'foreground'.*'1\+2\+3'.*got 'kidney'"):
        as_class_choice("kidney", "xai_class")
    assert str(ClassSet((1, 2))) == "1+2" and str(ClassSet()) == "foreground"


def test_class_set_indices_and_errors():
    assert ClassSet().indices(4) == (1, 2, 3)
    assert ClassSet().indices(1) == (0,)  # a single-channel segmenter's one class
    with pytest.raises(ValueError, match="distinct indices of the network's 3 output classes"):
        ClassSet((1, 3)).indices(3)
    with pytest.raises(ValueError, match="distinct"):
        ClassSet((1, 1)).indices(3)
    assert class_sets(ClassSet((2, 1)), 3, 4, torch.device("cpu")).tolist() == [[2, 1]] * 3


def test_multi_class_target_is_the_sum_of_each_class_over_its_own_set():
    torch.manual_seed(1)
    outputs = torch.randn(2, 4, 3, 4, 5)
    pixel_sets = (torch.rand(2, 2, 3, 4, 5) > 0.5).float()
    classes = torch.tensor([[1, 3], [2, 1]])
    scores = SegmentationTarget(classes, pixel_sets)(outputs)
    for b in range(2):
        expected = sum(
            outputs[b, classes[b, k], i, j, m].item()
            for k in range(2)
            for i in range(3)
            for j in range(4)
            for m in range(5)
            if pixel_sets[b, k, i, j, m]
        )
        assert scores[b].item() == pytest.approx(expected, abs=1e-4)
    assert SegmentationTarget(classes, pixel_sets).size.tolist() == pixel_sets.flatten(1).sum(1).tolist()
    with pytest.raises(ValueError, match="one channel per explained class"):
        SegmentationTarget(classes, pixel_sets[:, :1])


def test_foreground_over_predictions_counts_each_voxel_once_with_its_predicted_class():
    torch.manual_seed(2)
    outputs = torch.randn(3, 4, 5, 6, 7)
    target = build_target(outputs, ClassSet(), "pred")
    assert target.class_idx.tolist() == [[1, 2, 3]] * 3
    predicted = outputs.argmax(dim=1)
    # independent formula: the logit of the predicted class at every voxel not predicted as background
    expected = torch.where(predicted > 0, outputs.max(dim=1).values, 0).flatten(1).sum(1)
    assert torch.allclose(target(outputs), expected, atol=1e-4)
    assert target.predicted(outputs).all()
    # swapping classes 1 and 2 everywhere: each M_k is now mostly another class
    swapped = outputs[:, [0, 2, 1, 3]]
    assert not target.predicted(swapped).all()
    # the sets are disjoint and cover the predicted foreground
    assert torch.equal(target.pixel_set.sum(dim=1), (predicted > 0).float())


def test_multi_class_voxel_image_tensor_and_empty_sets():
    outputs = torch.randn(2, 3, 4, 4)
    voxel = build_target(outputs, ClassSet((1, 2)), (1, 2)).pixel_set
    assert voxel.shape == (2, 2, 4, 4) and voxel.sum().item() == 4 and voxel[:, :, 1, 2].eq(1).all()
    assert build_target(outputs, ClassSet((1, 2)), "image").pixel_set.eq(1).all()
    with pytest.warns(UserWarning, match="pixel_set='empty'"):
        assert build_target(outputs, ClassSet((1, 2)), "empty").empty.all()
    truth = torch.zeros(2, 2, 4, 4)
    truth[:, 0, 0, 0], truth[:, 1, 3, 3] = 1, 1
    assert torch.equal(build_target(outputs, ClassSet((1, 2)), truth).pixel_set, truth)
    one_set = truth[:, :1]
    assert torch.equal(build_target(outputs, ClassSet((1, 2)), one_set).pixel_set, one_set.expand(-1, 2, -1, -1))
    with pytest.raises(ValueError, match=r"1 or 2 \(one per explained class\)"):
        build_target(outputs, ClassSet((1, 2)), torch.zeros(2, 3, 4, 4))


def test_class_set_is_refused_for_classifiers():
    with pytest.raises(ValueError, match="only explained for segmentation outputs"):
        build_target(torch.randn(2, 3), ClassSet((1, 2)))


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_raw_maps_of_a_class_set_are_the_sum_of_the_per_class_maps(segmenter, method):
    """Grad-CAM's and HiResCAM's raw maps are linear in the target's gradient, which is the sum of the classes'
    gradients: an oracle for the multi-class target that does not use it."""
    torch.manual_seed(3)
    images = torch.randn(2, 1, 16, 16, 16)
    explainer = CAMExplainer(segmenter, "model.1.submodule", method)
    with torch.no_grad():
        predicted = segmenter(images).argmax(dim=1, keepdim=True)
    per_class = [
        explainer(images, class_idx=k, pixel_set=(predicted == k).float(), raw=True)[method] for k in (1, 2, 3)
    ]
    together = explainer(images, class_idx=ClassSet(), pixel_set="pred", raw=True)[method]
    assert torch.allclose(together, sum(per_class), atol=1e-5)
    assert together.abs().amax() > 0


def test_sliding_window_explains_a_class_set(segmenter):
    """A window covering the whole volume gives the whole-volume map."""
    torch.manual_seed(4)
    images = torch.randn(1, 1, 16, 16, 16)
    whole = CAMExplainer(segmenter, "model.1.submodule", "gradcam")(images, ClassSet((1, 3)), "image")["gradcam"]
    windowed = CAMExplainer(segmenter, "model.1.submodule", "gradcam", roi_size=(16, 16, 16), sw_mode="constant")
    assert torch.allclose(windowed(images, ClassSet((1, 3)), "image")["gradcam"], whole, atol=1e-5)
    truth = torch.zeros(1, 2, 16, 16, 16)
    truth[:, 0, 2:6, 2:6, 2:6], truth[:, 1, 10:14, 10:14, 10:14] = 1, 1
    small = CAMExplainer(segmenter, "model.1.submodule", "gradcam", roi_size=(8, 8, 8))
    maps = small(images, ClassSet((1, 3)), truth)["gradcam"]
    assert maps.shape == (1, 1, 16, 16, 16) and torch.isfinite(maps).all() and maps.amax() > 0


def test_peak_is_the_voxel_of_each_images_highest_class_score():
    torch.manual_seed(5)
    outputs = torch.randn(3, 4, 5, 6, 7)
    target = build_target(outputs, torch.tensor([1, 2, 3]), "peak")
    for b, k in enumerate((1, 2, 3)):
        where = (outputs[b, k] == outputs[b, k].max()).nonzero()[0].tolist()
        assert target.pixel_set[b, 0].sum() == 1 and target.pixel_set[b, 0][tuple(where)] == 1
    assert torch.allclose(target(outputs), outputs[[0, 1, 2], [1, 2, 3]].flatten(1).max(dim=1).values)
    several = build_target(outputs, ClassSet((1, 3)), "peak").pixel_set
    assert several.shape == (3, 2, 5, 6, 7) and several.flatten(2).sum(2).eq(1).all()


def test_a_sliding_window_refuses_sets_only_the_whole_volume_defines(segmenter):
    windowed = CAMExplainer(segmenter, "model.1.submodule", "gradcam", roi_size=(8, 8, 8))
    for name in ("peak", "largest_component"):
        with pytest.raises(ValueError, match=f"pixel_set='{name}' is a property of the whole volume"):
            windowed(torch.randn(1, 1, 16, 16, 16), 1, name)
