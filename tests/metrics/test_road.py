"""ROAD: removal sets by hand, scores against pytorch-grad-cam's ROAD classes, and networks (a classifier and a
segmenter) whose evidence is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_xai.metrics import NoisyLinearImputer, ROADMetric, removal_masks, road, road_combined
from tests.helpers.road_nets import RegionMeanClassifier, tiny_cnn
from tests.helpers.segmenters import GAIN, intensity_logits, intensity_segmenter


def distinct_saliency(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """No ties, so a threshold and a ranking remove the same pixels."""
    pixels = int(np.prod(shape))
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(pixels, generator=generator) for _ in range(batch)])
    return orders.reshape(batch, 1, *shape).float() / pixels


def test_removal_masks_remove_exact_counts_in_saliency_order():
    saliency = distinct_saliency(2, (10, 10))
    masks = removal_masks(saliency, (10, 25, 90), "morf")
    assert masks.shape == (2, 3, 10, 10)
    assert masks.flatten(2).sum(dim=2).tolist() == [[90, 75, 10]] * 2
    # MoRF at 90 % kept removes the 10 highest values, LeRF the 10 lowest
    flat = saliency.flatten(1)
    assert set(masks[0, 2].flatten().nonzero().flatten().tolist()) == set(flat[0].topk(10).indices.tolist())
    lerf = removal_masks(saliency, (90,), "lerf")
    assert set(lerf[0, 0].flatten().nonzero().flatten().tolist()) == set((-flat[0]).topk(10).indices.tolist())


def test_removal_masks_break_ties_in_raster_order_and_never_remove_everything():
    # 95 % of the map is exactly zero: pytorch-grad-cam's strict threshold would remove every pixel at MoRF 50
    saliency = torch.zeros(1, 1, 10, 10)
    saliency[0, 0, 0, :5] = 1.0
    morf = removal_masks(saliency, (50,), "morf")[0, 0].flatten()
    expected = torch.zeros(100, dtype=torch.bool)
    expected[:5] = True  # the five salient pixels (flat 0..4) ...
    expected[55:] = True  # ... then the zero pixels with the largest flat index
    assert torch.equal(morf, expected)
    lerf = removal_masks(saliency, (50,), "lerf")[0, 0].flatten()
    # LeRF keeps the five salient pixels and removes the zero pixels with the smallest flat index
    assert lerf.sum() == 50 and not lerf[:5].any() and lerf[5:55].all()


def test_kept_count_rounds_half_up():
    saliency = distinct_saliency(1, (5, 5))  # 25 pixels: 10 % keeps 2.5 -> 3
    assert removal_masks(saliency, (10,), "morf").sum().item() == 22


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_matches_pytorch_grad_cam(order, score):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    model = tiny_cnn().eval()
    images = torch.rand(2, 3, 20, 20)  # 400 pixels: np.percentile + strict '<' keeps round(N p / 100) distinct values
    saliency = distinct_saliency(2, (20, 20))
    target_type = ClassifierOutputTarget if score == "logit" else ClassifierOutputSoftmaxTarget
    metric_type = ROADMostRelevantFirst if order == "morf" else ROADLeastRelevantFirst
    percentiles = (20, 50, 80)
    expected = []
    for percentile in percentiles:
        reference = metric_type(percentile)
        reference.perturbation.imputer.noise = 0.0
        expected.append(reference(images, saliency[:, 0].numpy(), [target_type(1), target_type(2)], model))
    ours = road(model, images, saliency, [1, 2], percentiles, order=order, score=score, imputer=NoisyLinearImputer(0.0))
    assert ours.percentiles == percentiles and ours.score_change.shape == (2, 3)
    np.testing.assert_allclose(ours.score_change.numpy(), np.stack(expected, axis=1), atol=1e-4, rtol=0)
    assert ours.score_change.abs().max() > 1e-2  # the comparison is not between two near-zero curves


def test_road_combined_matches_pytorch_grad_cam(monkeypatch):
    from pytorch_grad_cam.metrics import road as gradcam_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # ROADCombined builds its imputers internally with noise 0.01; switch only the noise off
    monkeypatch.setattr(gradcam_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, gradcam_road.neighbors_weights))
    model = tiny_cnn().eval()
    images = torch.rand(2, 3, 20, 20)
    saliency = distinct_saliency(2, (20, 20), seed=1)
    percentiles = [30, 60, 90]
    expected = gradcam_road.ROADCombined(percentiles)(
        images, saliency[:, 0].numpy(), [ClassifierOutputTarget(0), ClassifierOutputTarget(0)], model
    )
    ours = road_combined(model, images, saliency, 0, percentiles, imputer=NoisyLinearImputer(0.0))
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4, rtol=0)


def region_setup(spatial: tuple[int, ...]):
    region = torch.zeros(spatial, dtype=torch.bool)
    region[tuple(slice(n // 4, n // 2) for n in spatial)] = True
    images = 0.1 * torch.rand(2, 1, *spatial)
    images[:, :, region] = 1.0  # class 1 evidence lives in the region only
    return RegionMeanClassifier(region), images, region


@pytest.mark.parametrize("spatial", [(24, 24), (10, 10, 10)])
def test_map_marking_the_evidence_drops_morf_more_than_a_random_map(spatial):
    model, images, region = region_setup(spatial)
    pixels = int(np.prod(spatial))
    # the region gets the highest saliency; a smooth ramp breaks ties without changing the order
    faithful = region.float() + torch.arange(pixels).reshape(spatial) / (10.0 * pixels)
    faithful = faithful.expand(2, 1, *spatial)
    random_map = distinct_saliency(2, spatial, seed=3)
    percentiles = (30, 60, 90)
    good = road(model, images, faithful, 1, percentiles, imputer=NoisyLinearImputer(0.0))
    random_curve = road(model, images, random_map, 1, percentiles, imputer=NoisyLinearImputer(0.0))
    assert (good.mean_score_change < random_curve.mean_score_change - 1.0).all()
    # keeping the region (LeRF removes the rest first) barely moves the evidence
    lerf = road(model, images, faithful, 1, percentiles, order="lerf", imputer=NoisyLinearImputer(0.0))
    assert lerf.score_change[:, -1].abs().max() < 0.5
    assert (
        road_combined(model, images, faithful, 1, percentiles, imputer=NoisyLinearImputer(0.0)).min()
        > road_combined(model, images, random_map, 1, percentiles, imputer=NoisyLinearImputer(0.0)).max()
    )
    # the class flips once the region is gone: the paper's accuracy per percentage
    assert good.accuracy[0].item() == 0.0 and good.still_predicted.dtype == torch.bool


def test_3d_conv_net_runs_with_batch_and_per_sample_targets():
    model = tiny_cnn(spatial_dims=3, in_channels=1).eval()
    images = torch.rand(2, 1, 10, 9, 8)
    saliency = torch.rand(2, 1, 10, 9, 8)
    curve = road(
        model,
        images,
        saliency,
        [0, 2],
        (25, 75),
        imputer=NoisyLinearImputer(0.01, generator=torch.Generator().manual_seed(0)),
    )
    assert curve.score_change.shape == (2, 2) and torch.isfinite(curve.score_change).all()
    assert curve.accuracy.shape == (2,)


def test_chunked_forwards_equal_one_forward_and_default_class_is_prediction():
    model = tiny_cnn().eval()
    images = torch.rand(3, 3, 16, 16)
    saliency = torch.rand(3, 1, 16, 16)
    predicted = model(images).argmax(dim=1)
    whole = road(model, images, saliency, None, (20, 70), imputer=NoisyLinearImputer(0.0))
    chunked = road(model, images, saliency, predicted, (20, 70), imputer=NoisyLinearImputer(0.0), batch_size=2)
    torch.testing.assert_close(whole.score_change, chunked.score_change, atol=1e-5, rtol=0)


def test_model_modes_restored_and_no_graph_built():
    model = tiny_cnn()
    model.train()
    model[4].eval()  # a submodule in its own mode must come back as it was
    images = torch.rand(2, 3, 12, 12, requires_grad=True)
    first = road(model, images, torch.rand(2, 1, 12, 12), 0, (50,), imputer=NoisyLinearImputer(0.0))
    second = road(
        model, images, torch.rand(2, 1, 12, 12).argsort(dim=-1).float(), 0, (50,), imputer=NoisyLinearImputer(0.0)
    )
    assert model.training and not model[4].training and model[0].training
    assert not first.score_change.requires_grad and torch.isfinite(second.score_change).all()
    # eval mode inside: the dropout layer does not make two identical calls differ
    saliency = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(
        road(model, images, saliency, 0, (50,), imputer=NoisyLinearImputer(0.0)).score_change,
        road(model, images, saliency, 0, (50,), imputer=NoisyLinearImputer(0.0)).score_change,
    )


def test_seeded_noise_is_reproducible():
    model = tiny_cnn().eval()
    images, saliency = torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16)
    runs = [
        road(
            model,
            images,
            saliency,
            0,
            (40,),
            imputer=NoisyLinearImputer(0.05, generator=torch.Generator().manual_seed(7)),
        ).score_change
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(
        runs[0], road(model, images, saliency, 0, (40,), imputer=NoisyLinearImputer(0.0)).score_change
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"saliency": torch.rand(2, 2, 12, 12)}, "saliency must have shape"),
        ({"percentiles": (0, 50)}, r"each in \(0, 100\]"),
        ({"percentiles": (150,)}, r"each in \(0, 100\]"),
        ({"percentiles": (0.1,)}, "keeps no pixel"),
        ({"order": "random"}, "order must be one of"),
        ({"score": "softmax"}, "score must be one of"),
        ({"batch_size": 0}, "batch_size"),
        ({"class_idx": [0, 1, 2]}, "class_idx has 3 entries"),
    ],
)
def test_bad_input_messages(kwargs, message):
    arguments = {
        "model": tiny_cnn().eval(),
        "images": torch.rand(2, 3, 12, 12),
        "saliency": torch.rand(2, 1, 12, 12),
        "class_idx": 0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        road(**arguments)


def box_setup(spatial: tuple[int, ...]):
    """Two images, constant background and a brighter cube M; the cube grown by one voxel (``dilated``) is removed
    by MoRF at ``percentile``. Every known neighbour of the removed set is background, so the noise-free imputation
    (a discrete harmonic function with constant boundary values) is the background value: known by hand."""
    region = torch.zeros(spatial, dtype=torch.bool)
    dilated = torch.zeros(spatial, dtype=torch.bool)
    region[tuple(slice(n // 2 - 1, n // 2 + 1) for n in spatial)] = True
    dilated[tuple(slice(n // 2 - 2, n // 2 + 2) for n in spatial)] = True
    background, foreground = torch.tensor([0.1, 0.2]), torch.tensor([1.0, 0.8])
    shape = (2, 1, *([1] * len(spatial)))
    images = torch.where(region, foreground.reshape(shape), background.reshape(shape))
    imputed = torch.where(dilated, background.reshape(shape), images)
    pixels = region.numel()
    saliency = (dilated.float() + torch.arange(pixels).reshape(spatial) / (10.0 * pixels)).expand(2, 1, *spatial)
    percentile = 100.0 * (pixels - int(dilated.sum())) / pixels
    return images, imputed, saliency, percentile, region


@pytest.mark.parametrize("spatial", [(8, 8), (6, 6, 6)])
@pytest.mark.parametrize("mask_kind", ["pred", "box", "tensor"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_segmentation_score_is_the_class_mean_over_the_pixel_set(spatial, mask_kind, score):
    images, imputed, saliency, percentile, region = box_setup(spatial)
    classes = torch.tensor([1, 2])  # per sample: the bright cube (class 1), the background (class 2)
    if mask_kind == "pred":
        mask = None
        pixel_set = torch.stack([region, ~region]).float()[:, None]  # predicted region of each sample's class
    elif mask_kind == "box":
        mask = tuple(slice(n // 2 - 1, n // 2 + 2) for n in spatial)  # the cube and a layer of background
        pixel_set = torch.zeros(1, 1, *spatial)
        pixel_set[(slice(None), slice(None), *mask)] = 1.0
    else:
        mask = torch.roll(region, 1, dims=0)[None, None].float()  # e.g. a ground truth off by one voxel
        pixel_set = mask
    hand = intensity_logits if score == "logit" else (lambda x: intensity_logits(x).softmax(dim=1))

    def class_sum(x: torch.Tensor) -> torch.Tensor:
        maps = hand(x)[torch.arange(2), classes]
        return (maps * pixel_set[:, 0]).flatten(1).sum(dim=1)

    model = intensity_segmenter(len(spatial))
    curve = road(
        model, images, saliency, classes, (percentile,), pixel_set=mask, score=score, imputer=NoisyLinearImputer(0.0)
    )
    set_size = pixel_set.flatten(1).sum(dim=1)
    expected = (class_sum(imputed) - class_sum(images)) / set_size  # mean over the pixel set
    torch.testing.assert_close(curve.score_change[:, 0], expected, atol=1e-4, rtol=1e-5)
    assert expected[0] < -0.2  # the cube's class loses its evidence (the box's background dilutes the mean)
    # after imputation everything is background: class 1 is gone from sample 0, class 2 covers sample 1's set
    assert curve.still_predicted[:, 0].tolist() == [False, True]


@pytest.mark.parametrize("spatial", [(24, 24), (10, 10, 10)])
def test_segmentation_map_marking_the_pixel_set_drops_morf_more_than_a_random_map(spatial):
    region = torch.zeros(spatial, dtype=torch.bool)
    region[tuple(slice(n // 4, n // 2) for n in spatial)] = True
    images = 0.1 * torch.rand(2, 1, *spatial)
    images[:, :, region] = 1.0
    pixels = region.numel()
    faithful = (region.float() + torch.arange(pixels).reshape(spatial) / (10.0 * pixels)).expand(2, 1, *spatial)
    random_map = distinct_saliency(2, spatial, seed=3)
    model, percentiles = intensity_segmenter(len(spatial)), (30, 60, 90)
    noise = {"imputer": NoisyLinearImputer(0.01, generator=torch.Generator().manual_seed(0))}
    good = road(model, images, faithful, 1, percentiles, pixel_set="pred", **noise)
    random_curve = road(model, images, random_map, 1, percentiles, pixel_set="pred", **noise)
    # removing the whole region costs about GAIN * (1 - 0.05) per voxel of it (scores are means over the pixel set,
    # here the region); a random 10 % costs about a tenth of that
    assert (good.score_change[:, -1] < -0.8 * GAIN).all()
    assert (good.mean_score_change < random_curve.mean_score_change - GAIN / region.sum()).all()
    assert not good.still_predicted.any() and random_curve.still_predicted[:, -1].all()
    assert (
        road_combined(model, images, faithful, 1, percentiles, pixel_set="largest_component", **noise).min()
        > road_combined(model, images, random_map, 1, percentiles, pixel_set="largest_component", **noise).max()
    )


def test_segmentation_metric_passes_the_mask_and_needs_a_class():
    images, _, saliency, _, region = box_setup((8, 8))
    model, ground_truth = intensity_segmenter(2), region[None, None].float()
    metric = ROADMetric(model, (50, 90), order="combined", imputer=NoisyLinearImputer(0.0))
    rows = metric(saliency, images, class_idx=1, pixel_set=ground_truth)
    morf = road(model, images, saliency, 1, (50, 90), pixel_set=ground_truth, imputer=NoisyLinearImputer(0.0))
    torch.testing.assert_close(rows[:, :2], morf.score_change)
    expected = road_combined(
        model, images, saliency, 1, (50, 90), pixel_set=ground_truth, imputer=NoisyLinearImputer(0.0)
    )
    torch.testing.assert_close(rows[:, -1], expected)
    with pytest.raises(ValueError, match="class_idx is required for segmentation"):
        road(model, images, saliency, None, (50,))
    with pytest.raises(ValueError, match="pixel_set is only used for segmentation"):
        road(tiny_cnn().eval(), torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), 0, (50,), pixel_set="pred")


def test_segmentation_empty_pixel_set_warns_and_is_nan():
    images = torch.full((2, 1, 6, 6), 0.1)
    images[1, :, :3] = 0.9  # class 1 (x > 0.5) is predicted nowhere in sample 0, on the top half of sample 1
    with pytest.warns(UserWarning, match=r"empty for sample\(s\) \[0\]"):
        curve = road(intensity_segmenter(2), images, torch.rand(2, 1, 6, 6), 1, (50,), imputer=NoisyLinearImputer(0.0))
    assert torch.isnan(curve.score_change[0]).all() and not curve.still_predicted[0].any()
    assert torch.isfinite(curve.score_change[1]).all()


@pytest.mark.parametrize("order", ["morf", "combined"])
def test_metric_buffers_cases_and_reduces_per_column(order):
    model, images, region = region_setup((16, 16))
    saliency = torch.rand(2, 1, 16, 16)
    percentiles = (25, 75)
    metric = ROADMetric(model, percentiles, order=order, imputer=NoisyLinearImputer(0.0))
    first = metric(saliency, images, class_idx=1)
    second = metric(saliency.flip(-1), images.flip(-1))  # class_idx None: the predicted class (1 here)
    curves = {
        removal: road(model, images, saliency, 1, percentiles, removal, imputer=NoisyLinearImputer(0.0))
        for removal in ("morf", "lerf")
    }
    if order == "combined":
        named = ("morf", "lerf")  # row: the MoRF curve, the LeRF curve, then ROADCombined
        expected_last = road_combined(model, images, saliency, 1, percentiles, imputer=NoisyLinearImputer(0.0))
    else:
        named = ("morf",)  # row: the MoRF curve, then its mean
        expected_last = curves["morf"].mean_score_change
    assert first.shape == (2, len(named) * len(percentiles) + 1)
    torch.testing.assert_close(first[:, -1], expected_last)
    read_back = metric.curves(first[1])
    assert list(read_back) == list(named)
    for name in named:
        assert read_back[name].x == percentiles and read_back[name].x_label == "pixels kept (%)"
        torch.testing.assert_close(torch.tensor(read_back[name].y), curves[name].score_change[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(metric.aggregate(), torch.cat([first, second]).mean(dim=0))
    torch.testing.assert_close(metric.aggregate("mean").reshape(()), torch.cat([first, second]).mean())
    metric.get_not_nans = True
    reduced, not_nans = metric.aggregate()
    assert not_nans.tolist() == [4.0] * first.shape[1]
    metric.reset()
    with pytest.raises(ValueError, match="nothing to aggregate"):
        metric.aggregate()


def test_metric_skips_empty_pixel_sets_and_is_nan_when_all_are_empty():
    images = torch.full((2, 1, 6, 6), 0.1)
    images[1, :, :3] = 0.9  # class 1 (x > 0.5) is predicted nowhere in sample 0
    metric = ROADMetric(intensity_segmenter(2), (50,), order="morf", imputer=NoisyLinearImputer(0.0), get_not_nans=True)
    with pytest.warns(UserWarning, match="empty"):
        rows = metric(torch.rand(2, 1, 6, 6), images, class_idx=1)
    value, not_nans = metric.aggregate()
    torch.testing.assert_close(value, rows[1])  # the mean over the one defined case
    assert not_nans.tolist() == [1.0, 1.0]
    metric.reset()
    with pytest.warns(UserWarning, match="empty"):
        metric(torch.rand(1, 1, 6, 6), images[:1], class_idx=1)
    value, not_nans = metric.aggregate()
    assert torch.isnan(value).all() and not_nans.tolist() == [0.0, 0.0]  # no defined case: NaN, not MONAI's 0


def test_metric_accepts_lists_of_channel_first_tensors():
    model, images, _ = region_setup((16, 16))
    saliency = torch.rand(2, 1, 16, 16)
    metric = ROADMetric(model, (50,), order="lerf", imputer=NoisyLinearImputer(0.0))
    rows = metric(list(saliency), list(images))
    torch.testing.assert_close(
        rows, ROADMetric(model, (50,), order="lerf", imputer=NoisyLinearImputer(0.0))(saliency, images)
    )


def test_metric_needs_images_and_valid_options():
    metric = ROADMetric(tiny_cnn().eval(), (50,))
    with pytest.raises(ValueError, match="needs the model input"):
        metric(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"order must be one of \['morf', 'lerf', 'combined'\]"):
        ROADMetric(tiny_cnn(), order="both")
    with pytest.raises(ValueError, match="score must be one of"):
        ROADMetric(tiny_cnn(), score="prob")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = tiny_cnn().eval()
    images, saliency = torch.rand(2, 3, 20, 20), distinct_saliency(2, (20, 20))
    on_cpu = road(model, images, saliency, [0, 1], (30, 70), imputer=NoisyLinearImputer(0.0))
    on_gpu = road(model.cuda(), images.cuda(), saliency.cuda(), [0, 1], (30, 70), imputer=NoisyLinearImputer(0.0))
    assert on_gpu.score_change.device.type == "cuda"
    torch.testing.assert_close(on_gpu.score_change.cpu(), on_cpu.score_change, atol=1e-4, rtol=0)
