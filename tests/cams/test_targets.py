import warnings

import pytest
import torch

from monai_xai.cams.targets import ClassTarget, SegmentationTarget, build_target


def test_class_target_logit_probability_and_sample_ids():
    outputs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = ClassTarget(torch.tensor([2, 0]))
    assert target(outputs).tolist() == [3.0, 4.0]
    # rows 0, 1 are copies of sample 1 (class 0), row 2 of sample 0 (class 2)
    assert target(outputs[[0, 1, 0]], torch.tensor([1, 1, 0])).tolist() == [1.0, 4.0, 3.0]
    exp = torch.exp(outputs)
    expected = torch.stack([exp[0, 2] / exp[0].sum(), exp[1, 0] / exp[1].sum()])
    assert torch.allclose(ClassTarget(torch.tensor([2, 0]), "probability")(outputs), expected)
    single = torch.tensor([[0.0], [2.0]])
    assert torch.allclose(ClassTarget(torch.tensor([0, 0]), "probability")(single), 1 / (1 + torch.exp(-single[:, 0])))


def test_segmentation_target_sums_class_logits_over_pixel_set():
    outputs = torch.randn(2, 3, 4, 5, 6)
    pixel_set = (torch.rand(2, 1, 4, 5, 6) > 0.5).float()
    classes = torch.tensor([1, 2])
    scores = SegmentationTarget(classes, pixel_set)(outputs)
    for b in range(2):
        expected = sum(
            outputs[b, classes[b], i, j, k].item()
            for i in range(4)
            for j in range(5)
            for k in range(6)
            if pixel_set[b, 0, i, j, k]
        )
        assert scores[b].item() == pytest.approx(expected, abs=1e-4)
    copies = SegmentationTarget(classes, pixel_set)(outputs[[1, 1]], torch.tensor([1, 1]))
    assert torch.allclose(copies, scores[[1, 1]])


def test_segmentation_target_probability_sums_softmax_or_sigmoid():
    outputs = torch.randn(1, 3, 4, 4)
    pixel_set = torch.zeros(1, 1, 4, 4)
    pixel_set[0, 0, 1, 2] = pixel_set[0, 0, 3, 0] = 1.0
    probs = torch.exp(outputs) / torch.exp(outputs).sum(dim=1, keepdim=True)
    score = SegmentationTarget(torch.tensor([2]), pixel_set, "probability")(outputs)
    assert score.item() == pytest.approx((probs[0, 2, 1, 2] + probs[0, 2, 3, 0]).item(), abs=1e-6)
    single = SegmentationTarget(torch.tensor([0]), pixel_set, "probability")(outputs[:, :1])
    expected = 1 / (1 + torch.exp(-outputs[0, 0, 1, 2])) + 1 / (1 + torch.exp(-outputs[0, 0, 3, 0]))
    assert single.item() == pytest.approx(expected.item(), abs=1e-6)


def test_image_pixel_set_is_every_voxel_and_model_independent():
    outputs = torch.randn(2, 3, 4, 5, 6)
    target = build_target(outputs, class_idx=2, pixel_set="image", score="probability")
    assert target.pixel_set.shape == (2, 1, 4, 5, 6) and bool((target.pixel_set == 1).all())
    # hand computation: the expected volume of class 2, sum of its softmax probability over all 120 voxels
    probs = torch.exp(outputs) / torch.exp(outputs).sum(dim=1, keepdim=True)
    torch.testing.assert_close(target(outputs), probs[:, 2].flatten(1).sum(dim=1))
    box = build_target(outputs, class_idx=2, pixel_set=(slice(None),) * 3, score="probability")
    torch.testing.assert_close(target(outputs), box(outputs))
    # unlike "pred", the pixel set does not depend on the outputs it is built from
    torch.testing.assert_close(build_target(-outputs, class_idx=2, pixel_set="image").pixel_set, target.pixel_set)


def test_build_target_classification_predicted_and_given_class():
    outputs = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    assert build_target(outputs).class_idx.tolist() == [1, 0]
    assert build_target(outputs, class_idx=2).class_idx.tolist() == [2, 2]
    assert build_target(outputs, class_idx=[2, 1]).class_idx.tolist() == [2, 1]


def test_pred_mask_multi_and_single_channel_2d():
    outputs = torch.randn(2, 3, 6, 7)
    target = build_target(outputs, class_idx=[1, 2], pixel_set="pred")
    assert torch.equal(target.pixel_set[0, 0], (outputs[0].argmax(0) == 1).float())
    assert torch.equal(target.pixel_set[1, 0], (outputs[1].argmax(0) == 2).float())
    default = build_target(outputs, class_idx=1).pixel_set  # pixel_set=None means "pred"
    assert torch.equal(default, (outputs.argmax(1, keepdim=True) == 1).float())
    single = torch.randn(2, 1, 6, 7)
    assert torch.equal(build_target(single, class_idx=0).pixel_set, (single > 0).float())


def test_largest_component_uses_full_connectivity_3d():
    logits = torch.full((1, 2, 6, 6, 6), -1.0)
    logits[:, 0] = 1.0  # background predicted everywhere ...
    foreground = torch.zeros(6, 6, 6, dtype=torch.bool)
    foreground[0, 0, 0] = foreground[1, 1, 1] = foreground[2, 2, 2] = True  # 3 voxels touching only at corners
    foreground[4:6, 4:6, 0] = True  # 4 face-connected voxels: largest with 6-connectivity, not with 26
    logits[0, 1][foreground] = 2.0  # ... except where class 1 wins
    target = build_target(logits, class_idx=1, pixel_set="largest_component")
    expected = torch.zeros(6, 6, 6)
    expected[4:6, 4:6, 0] = 1.0
    assert torch.equal(target.pixel_set[0, 0], expected)
    foreground[3, 3, 3] = foreground[3, 2, 2] = True  # the diagonal chain now has 5 voxels
    logits[0, 1][foreground] = 2.0
    chain = build_target(logits, class_idx=1, pixel_set="largest_component").pixel_set[0, 0]
    assert chain.sum() == 5 and chain[0, 0, 0] == 1 and chain[4, 4, 0] == 0


def test_tensor_voxel_and_box_masks():
    outputs = torch.randn(2, 2, 4, 5, 6)
    given = torch.zeros(1, 1, 4, 5, 6)
    given[..., 1, 2, 3] = 1
    target = build_target(outputs, class_idx=1, pixel_set=given)
    assert target.pixel_set.shape == (2, 1, 4, 5, 6) and torch.equal(target.pixel_set[1], given[0])
    voxel = build_target(outputs, class_idx=0, pixel_set=(1, 2, 3)).pixel_set
    assert torch.equal(voxel, given.expand(2, -1, -1, -1, -1))
    box = build_target(outputs, class_idx=0, pixel_set=(slice(0, 2), slice(1, 4), slice(None))).pixel_set
    assert box.sum() == 2 * (2 * 3 * 6) and box[:, :, :2, 1:4].min() == 1
    bool_mask = build_target(outputs, class_idx=0, pixel_set=given.bool()).pixel_set
    assert torch.equal(bool_mask, voxel)


def test_empty_pixel_set_warns_and_flags_the_sample():
    outputs = torch.zeros(2, 2, 4, 4)
    outputs[0, 1, 1, 1] = 1.0  # class 1 predicted at one pixel of sample 0, nowhere in sample 1
    with pytest.warns(UserWarning, match=r"empty for sample\(s\) \[1\]"):
        target = build_target(outputs, class_idx=1)
    assert target.empty.tolist() == [False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_target(outputs, class_idx=1, warn_empty=False)


def test_errors_say_what_to_do():
    seg = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="class_idx is required for segmentation"):
        build_target(seg)
    with pytest.raises(ValueError, match=r"out of range: the model has 3 output classes"):
        build_target(seg, class_idx=3)
    with pytest.raises(ValueError, match=r"out of range"):
        build_target(torch.randn(2, 3), class_idx=[0, -1])
    with pytest.raises(ValueError, match=r"pixel_set must have shape \(B or 1, 1, \*spatial\)"):
        build_target(seg, class_idx=1, pixel_set=torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="pixel_set spatial shape .* resample"):
        build_target(seg, class_idx=1, pixel_set=torch.ones(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        build_target(seg, class_idx=1, pixel_set=torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"pixel_set must be one of \[.*\], got 'blob'"):
        build_target(seg, class_idx=1, pixel_set="blob")
    with pytest.raises(ValueError, match="one int .* per spatial dim, i.e. 2 entries"):
        build_target(seg, class_idx=1, pixel_set=(1, 2, 3))
    with pytest.raises(ValueError, match="outside the outputs' spatial shape"):
        build_target(seg, class_idx=1, pixel_set=(1, 9))
    with pytest.raises(ValueError, match="pixel_set is only used for segmentation"):
        build_target(torch.randn(2, 3), pixel_set="pred")
    with pytest.raises(ValueError, match="score must be one of"):
        build_target(seg, class_idx=1, score="prob")


def test_class_target_predicted_is_argmax_or_positive_single_logit():
    outputs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 0.0, 1.0]])
    target = ClassTarget(torch.tensor([2, 0, 0]))
    assert target.predicted(outputs).tolist() == [True, False, True]
    # rows 0, 1 are copies of sample 1 (class 0), row 2 of sample 0 (class 2): the class follows sample_ids
    assert target.predicted(outputs, torch.tensor([1, 1, 0])).tolist() == [False, False, False]
    assert target.predicted(outputs[[2, 2, 0]], torch.tensor([1, 2, 0])).tolist() == [True, True, True]
    single = ClassTarget(torch.tensor([0, 0, 0]))  # one logit: class 0 is the positive class, predicted if logit > 0
    assert single.predicted(torch.tensor([[0.5], [-0.5], [0.0]])).tolist() == [True, False, False]


def test_segmentation_target_predicted_needs_half_of_the_pixel_set_weight():
    # 1 x 4 image, pixel set weights [1, 1, 0.5, 0] (total 2.5): class 1 must keep >= 1.25 of that weight
    pixel_set = torch.tensor([1.0, 1.0, 0.5, 0.0]).reshape(1, 1, 1, 4)
    target = SegmentationTarget(torch.tensor([1]), pixel_set)

    def outputs_where_class1(wins: list[int]) -> torch.Tensor:
        logits = torch.zeros(1, 3, 1, 4)
        logits[0, 0] = 1.0
        logits[0, 1, 0, wins] = 2.0
        return logits

    assert target.predicted(outputs_where_class1([0, 2])).tolist() == [True]  # 1.5 of 2.5
    assert target.predicted(outputs_where_class1([0])).tolist() == [False]  # 1.0 of 2.5
    assert target.predicted(outputs_where_class1([2, 3])).tolist() == [False]  # 0.5: weight 0 pixels do not count
    # rows follow sample_ids: sample 0 explains class 1, sample 1 class 2 over the same pixel set
    pair = SegmentationTarget(torch.tensor([1, 2]), pixel_set.expand(2, -1, -1, -1))
    rows = torch.cat([outputs_where_class1([0, 1]), outputs_where_class1([0, 1])])
    assert pair.predicted(rows, torch.tensor([1, 0])).tolist() == [False, True]
    single = SegmentationTarget(torch.tensor([0]), pixel_set)  # one channel: predicted where logit > 0
    assert single.predicted(torch.tensor([1.0, 1.0, -1.0, -1.0]).reshape(1, 1, 1, 4)).tolist() == [True]
    assert single.predicted(torch.tensor([1.0, -1.0, -1.0, 1.0]).reshape(1, 1, 1, 4)).tolist() == [False]
    empty = SegmentationTarget(torch.tensor([1]), torch.zeros(1, 1, 1, 4))
    assert empty.predicted(outputs_where_class1([0, 1, 2, 3])).tolist() == [False]


def test_non_tensor_outputs_are_rejected():
    with pytest.raises(TypeError, match="must return one tensor"):
        build_target([torch.randn(2, 3, 4, 4)], class_idx=1)
