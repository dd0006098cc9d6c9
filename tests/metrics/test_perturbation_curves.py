import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.networks.layers import GaussianFilter
from torch import nn

from monai_xai.metrics import DeletionInsertionMetric, confidence_change, deletion_insertion
from tests.helpers.region_nets import RegionLinearClassifier
from tests.helpers.segmenters import intensity_logits, intensity_segmenter

# weights [[1, 2], [3, 4]] on an image of ones: class-1 logit 10
HAND_WEIGHT = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None]
# order by descending saliency: voxel 1 (w 2), voxel 2 (w 3), voxel 3 (w 4), voxel 0 (w 1)
HAND_SALIENCY = torch.tensor([[0.1, 0.4], [0.3, 0.2]])[None, None]


def test_deletion_hand_values_on_logits():
    model = RegionLinearClassifier(HAND_WEIGHT)
    images = torch.ones(1, 1, 2, 2)
    # steps=4: logits 10, 10-2=8, 8-3=5, 5-4=1, 1-1=0; AUC = (10/2 + 8 + 5 + 1 + 0/2) / 4 = 4.75
    curve = deletion_insertion(model, images, HAND_SALIENCY, class_idx=1, steps=4, score="logit")
    assert torch.allclose(curve.scores, torch.tensor([[10.0, 8.0, 5.0, 1.0, 0.0]]))
    assert torch.allclose(curve.auc, torch.tensor([4.75]))
    # steps=2 replaces floor(k*4/2) = 0, 2, 4 voxels: 10, 10-2-3=5, 0; AUC = 0.5*(10+5)/2 + 0.5*(5+0)/2 = 5
    curve = deletion_insertion(model, images, HAND_SALIENCY, class_idx=1, steps=2, score="logit")
    assert torch.allclose(curve.scores, torch.tensor([[10.0, 5.0, 0.0]]))
    assert torch.allclose(curve.auc, torch.tensor([5.0]))


def test_insertion_hand_values_and_softmax_probability():
    model = RegionLinearClassifier(HAND_WEIGHT)
    images = torch.ones(1, 1, 2, 2)
    # insertion from zeros: 0, 2, 5, 9, 10; AUC = (0/2 + 2 + 5 + 9 + 10/2) / 4 = 5.25
    curve = deletion_insertion(
        model, images, HAND_SALIENCY, class_idx=1, mode="insertion", steps=4, substrate="zeros", score="logit"
    )
    assert torch.allclose(curve.scores, torch.tensor([[0.0, 2.0, 5.0, 9.0, 10.0]]))
    assert torch.allclose(curve.auc, torch.tensor([5.25]))
    # softmax over logits (0, z) gives class 1 probability sigmoid(z), class 0 probability sigmoid(-z)
    probability = deletion_insertion(
        model, images, HAND_SALIENCY, class_idx=0, mode="insertion", steps=4, substrate="zeros"
    )
    assert torch.allclose(probability.scores, torch.sigmoid(-torch.tensor([[0.0, 2.0, 5.0, 9.0, 10.0]])))


def test_ties_follow_flattened_index_order():
    model = RegionLinearClassifier(HAND_WEIGHT)
    # all voxels tie: removed in index order 0, 1, 2, 3 -> 10, 9, 7, 4, 0
    curve = deletion_insertion(
        model, torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), class_idx=1, steps=4, score="logit"
    )
    assert torch.allclose(curve.scores, torch.tensor([[10.0, 9.0, 7.0, 4.0, 0.0]]))


# class-1 logits 10 x - 5 = [[5, 3], [-3, 4]]: class 1 predicted at voxels 0, 1, 3, class 2 (logit 5 - 10 x) at voxel 2
SEG_IMAGE = torch.tensor([[1.0, 0.8], [0.2, 0.9]])


def _seg_inputs(spatial_dims: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SEG_IMAGE and HAND_SALIENCY as a (batch, 1, [1,] 2, 2) batch: the 3D case is one slice of depth 1."""
    shape = (1, 1, *([1] * (spatial_dims - 2)), 2, 2)
    return SEG_IMAGE.reshape(shape).expand(batch, *shape[1:]), HAND_SALIENCY.reshape(shape).expand(batch, *shape[1:])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_segmentation_deletion_hand_values_per_sample_class(spatial_dims):
    images, saliency = _seg_inputs(spatial_dims, 2)
    # deletion order: voxels 1, 2, 3, 0 into zeros (class-1 logit -5, class-2 logit 5), pixel set = predicted region
    # sample 0, class 1 over {0, 1, 3}: 5+3+4=12, 5-5+4=4, 4, 5-5-5=-5, -15, each / 3 voxels (mean over the set)
    # sample 1, class 2 over {2}: 3, 3, 5, 5, 5 (one voxel)
    curve = deletion_insertion(
        intensity_segmenter(spatial_dims), images, saliency, class_idx=[1, 2], steps=4, score="logit"
    )
    expected = torch.tensor([[12.0 / 3, 4.0 / 3, 4.0 / 3, -5.0 / 3, -15.0 / 3], [3.0, 3.0, 5.0, 5.0, 5.0]])
    torch.testing.assert_close(curve.scores, expected)
    # AUC = (first / 2 + middle three + last / 2) / 4
    torch.testing.assert_close(curve.auc, torch.tensor([(6 + 4 + 4 - 5 - 7.5) / 12, (1.5 + 3 + 5 + 5 + 2.5) / 4]))


def test_segmentation_box_mask_and_probability_score():
    images, saliency = _seg_inputs(2, 1)
    model = intensity_segmenter(2)
    # the box is the first row (voxels 0 and 1), whatever is predicted there
    box = deletion_insertion(model, images, saliency, class_idx=1, steps=4, score="logit", pixel_set=(0, slice(None)))
    torch.testing.assert_close(box.scores, torch.tensor([[8.0, 0.0, 0.0, 0.0, -10.0]]) / 2)  # mean over 2 voxels
    # probability: the softmax over the 3 classes of each voxel, averaged over the predicted region {0, 1, 3}
    probability = deletion_insertion(model, images, saliency, class_idx=1, steps=4)
    region = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    by_hand = [
        (intensity_logits(x).softmax(dim=1)[0, 1] * region).sum() / 3 for x in (images, torch.zeros_like(images))
    ]
    torch.testing.assert_close(probability.scores[0, [0, -1]], torch.stack(by_hand))
    assert probability.scores[0, 0] > 0.8 and probability.scores[0, -1] < 0.04


def test_segmentation_metric_passes_the_mask_and_needs_a_class():
    images, saliency = _seg_inputs(3, 2)
    model = intensity_segmenter(3)
    ground_truth = torch.zeros(1, 1, 1, 2, 2)
    ground_truth[..., 1, :] = 1.0  # second row: voxels 2 and 3
    metric = DeletionInsertionMetric(model, steps=4, score="logit")
    rows = metric(y_pred=saliency, y=images, class_idx=[1, 2], pixel_set=ground_truth)
    # class 1 over {2, 3}: -3+4=1, 1, -5+4=-1, -10, -10; class 2 over {2, 3}: 3-4=-1, -1, 5-4=1, 10, 10; / 2 voxels
    expected = torch.tensor([[1.0, 1.0, -1.0, -10.0, -10.0], [-1.0, -1.0, 1.0, 10.0, 10.0]]) / 2
    torch.testing.assert_close(rows[:, 0], torch.trapezoid(expected, dx=0.25, dim=1))
    with pytest.raises(ValueError, match="class_idx is required for segmentation"):
        deletion_insertion(model, images, saliency, steps=4)
    with pytest.raises(ValueError, match="pixel_set is only used for segmentation"):
        deletion_insertion(
            RegionLinearClassifier(HAND_WEIGHT), torch.ones(1, 1, 2, 2), HAND_SALIENCY, steps=4, pixel_set="pred"
        )


def _region_problem(seed: int, spatial: tuple[int, ...]):
    generator = torch.Generator().manual_seed(seed)
    region = torch.zeros(1, *spatial)
    corner = tuple(slice(0, max(1, n // 2)) for n in spatial)
    region[(slice(None), *corner)] = 1.0
    weight = region * torch.rand(1, *spatial, generator=generator)  # decision depends only on the region
    images = torch.rand(3, 2, *spatial, generator=generator)  # non-negative: every voxel adds evidence
    contribution = (images * weight).sum(dim=1, keepdim=True)  # exact share of each voxel in the class-1 logit
    return RegionLinearClassifier(weight), images, contribution


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 12))
def test_perfect_map_deletes_faster_and_inserts_faster_than_its_reversal(seed, steps):
    model, images, contribution = _region_problem(seed, (5, 6))
    args = dict(class_idx=1, steps=steps, substrate="zeros")
    # removing the voxels with the largest contribution first lowers the logit the most at every step
    perfect = deletion_insertion(model, images, contribution, **args)
    reversal = deletion_insertion(model, images, -contribution, **args)
    assert (perfect.scores <= reversal.scores + 1e-6).all()
    assert (perfect.auc <= reversal.auc + 1e-6).all()
    perfect_in = deletion_insertion(model, images, contribution, mode="insertion", **args)
    reversal_in = deletion_insertion(model, images, -contribution, mode="insertion", **args)
    assert (perfect_in.auc >= reversal_in.auc - 1e-6).all()


def test_3d_batched_curves_match_per_sample_runs_and_any_batch_size():
    model, images, contribution = _region_problem(0, (3, 4, 5))
    full = deletion_insertion(model, images, contribution, steps=6, batch_size=4)
    one = deletion_insertion(model, images, contribution, steps=6, batch_size=1)
    assert full.scores.shape == (3, 7) and full.auc.shape == (3,)
    assert torch.allclose(full.scores, one.scores)
    for b in range(3):
        alone = deletion_insertion(model, images[b : b + 1], contribution[b : b + 1], steps=6)
        assert torch.allclose(alone.scores[0], full.scores[b])
    reversal = deletion_insertion(model, images, -contribution, steps=6)
    assert (full.auc <= reversal.auc + 1e-6).all()


def test_default_class_is_the_prediction_and_per_sample_classes():
    model = RegionLinearClassifier(torch.ones(1, 2, 2))
    images = torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2)])  # predicted classes 1 and 0
    saliency = torch.rand(2, 1, 2, 2)
    default = deletion_insertion(model, images, saliency, steps=2)
    explicit = deletion_insertion(model, images, saliency, class_idx=[1, 0], steps=2)
    assert torch.allclose(default.scores, explicit.scores)
    assert (default.scores[:, 0] > 0.5).all()  # the predicted class has probability above 1/2 at the start


def test_insertion_starts_from_the_blurred_image_and_ends_at_the_image():
    model, images, contribution = _region_problem(1, (6, 6))
    curve = deletion_insertion(model, images, contribution, class_idx=1, mode="insertion", steps=3, blur_sigma=2.0)
    blurred = GaussianFilter(2, sigma=2.0)(images)
    assert torch.allclose(curve.scores[:, 0], model(blurred).softmax(1)[:, 1])
    assert torch.allclose(curve.scores[:, -1], model(images).softmax(1)[:, 1])
    assert not torch.allclose(blurred, images)


def test_tensor_substrate_is_broadcast():
    model = RegionLinearClassifier(HAND_WEIGHT)
    # deleting into a substrate of 2s: logit goes from 10 to 20 by the same order
    curve = deletion_insertion(
        model,
        torch.ones(1, 1, 2, 2),
        HAND_SALIENCY,
        class_idx=1,
        steps=4,
        substrate=torch.tensor(2.0),
        score="logit",
    )
    assert torch.allclose(curve.scores, torch.tensor([[10.0, 12.0, 15.0, 19.0, 20.0]]))


def test_model_runs_in_eval_mode_and_every_module_mode_is_restored():
    model = RegionLinearClassifier(torch.ones(1, 4, 4), dropout=0.5)
    wrapper = nn.Sequential(model)
    wrapper.train()
    images, saliency = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    first = deletion_insertion(wrapper, images, saliency, steps=4)
    second = deletion_insertion(wrapper, images, saliency, steps=4)
    assert torch.equal(first.scores, second.scores)  # dropout is off: the call ran in eval mode
    assert wrapper.training and model.training and model.dropout.training
    model.dropout.eval()  # mixed modes come back as they were, not as wrapper.train(True) would set them
    deletion_insertion(wrapper, images, saliency, steps=4)
    assert wrapper.training and model.training and not model.dropout.training


def test_mode_is_restored_when_the_model_fails():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))  # returns (N,): no class dimension
    model.train()
    with pytest.raises(ValueError, match=r"\(B, C\) or \(B, C, \*spatial\)"):
        deletion_insertion(model, torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), class_idx=0, steps=4)
    assert all(module.training for module in model.modules())


def test_bad_inputs_raise_clear_errors():
    model = RegionLinearClassifier(HAND_WEIGHT)
    images = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="mode"):
        deletion_insertion(model, images, HAND_SALIENCY, mode="remove")
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, images, HAND_SALIENCY, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        deletion_insertion(model, images, HAND_SALIENCY, batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        deletion_insertion(model, images, HAND_SALIENCY[..., :1])
    # the default 100 steps are more than the 4 voxels (tests/reliability/test_budgets.py): 4 steps below
    with pytest.raises(ValueError, match="substrate"):
        deletion_insertion(model, images, HAND_SALIENCY, steps=4, substrate="noise")
    with pytest.raises(ValueError, match="broadcast"):
        deletion_insertion(model, images, HAND_SALIENCY, steps=4, substrate=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="class_idx"):
        deletion_insertion(model, images, HAND_SALIENCY, steps=4, class_idx=[0, 1])
    with pytest.raises(ValueError, match=r"class_idx \[2\] out of range: the model has 2 output classes"):
        deletion_insertion(model, images, HAND_SALIENCY, steps=4, class_idx=2)


def test_cumulative_metric_two_iterations_equal_one_over_the_concatenation():
    model, images, contribution = _region_problem(2, (4, 4))
    split = DeletionInsertionMetric(model, steps=4, get_not_nans=True)
    split(y_pred=contribution[:1], y=images[:1], class_idx=1)
    split(y_pred=contribution[1:], y=images[1:], class_idx=[1, 1])
    whole = DeletionInsertionMetric(model, steps=4)
    whole(y_pred=contribution, y=images, class_idx=1)
    mean, count = split.aggregate()
    expected = deletion_insertion(model, images, contribution, class_idx=1, steps=4).auc
    assert count.item() == 3
    assert torch.allclose(mean, whole.aggregate())
    assert torch.allclose(mean, expected.mean())
    with pytest.raises(ValueError, match="y=images"):
        whole(y_pred=contribution)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curves_stay_on_the_gpu_and_match_the_cpu(mode):
    model, images, contribution = _region_problem(3, (4, 5, 6))
    on_cpu = deletion_insertion(model, images, contribution, mode=mode, steps=5)
    on_gpu = deletion_insertion(model.cuda(), images.cuda(), contribution.cuda(), mode=mode, steps=5)
    assert on_gpu.scores.is_cuda and on_gpu.auc.is_cuda
    assert torch.allclose(on_gpu.scores.cpu(), on_cpu.scores, atol=1e-5)


def test_segmentation_empty_pixel_set_gives_nan_curve():
    images = torch.full((2, 1, 4, 4), 0.1)
    images[1, :, :2] = 0.9  # class 1 (x > 0.5) is predicted nowhere in sample 0
    with pytest.warns(UserWarning, match=r"empty for sample\(s\) \[0\]"):
        curve = deletion_insertion(intensity_segmenter(2), images, torch.rand(2, 1, 4, 4), class_idx=1, steps=4)
    assert torch.isnan(curve.scores[0]).all() and torch.isnan(curve.auc[0])
    assert torch.isfinite(curve.scores[1]).all()


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_confidence_change_matches_pytorch_grad_cam(score):
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    images, maps = torch.randn(4, 3, 8, 8), torch.rand(4, 1, 8, 8)
    classes = [0, 2, 1, 2]
    target = ClassifierOutputSoftmaxTarget if score == "probability" else ClassifierOutputTarget
    expected = CamMultImageConfidenceChange()(images, maps[:, 0].numpy(), [target(c) for c in classes], model)
    ours = confidence_change(model, images, maps, class_idx=classes, score=score)
    torch.testing.assert_close(ours, torch.from_numpy(expected))


def test_confidence_change_hand_value_segmentation_and_bad_maps():
    model = RegionLinearClassifier(HAND_WEIGHT)
    # logit 10 on ones; the map keeps x = saliency: 0.1 + 0.8 + 0.9 + 0.8 = 2.6 -> change 2.6 - 10
    change = confidence_change(model, torch.ones(1, 1, 2, 2), HAND_SALIENCY, class_idx=1, score="logit")
    assert change.item() == pytest.approx(-7.4)
    # segmentation: mean class-1 logit over the predicted set {0, 1, 3} with GAIN 10: before (5 + 3 + 4) / 3 = 4,
    # after x * s = 0.1, 0.32, 0.18: (10 * 0.1 - 5 + 10 * 0.32 - 5 + 10 * 0.18 - 5) / 3 = -3
    images, saliency = _seg_inputs(2, 1)
    change = confidence_change(intensity_segmenter(2), images, saliency, class_idx=1, score="logit")
    assert change.item() == pytest.approx(-3.0 - 4.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        confidence_change(model, torch.ones(1, 1, 2, 2), HAND_SALIENCY * 3, class_idx=1)
