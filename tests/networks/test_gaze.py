"""The gaze-saliency network (Qiu, ch. 4) and its two losses: shapes, the DenseNet features really reaching the
decoder, what each training stage freezes, and the triplet and KL losses against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from monai_xai.apps.gaze import TargetBatch, load_stage_start, stage_view
from monai_xai.networks import (
    GAZE_CAM_LAYER,
    GazeKLLoss,
    GazeSaliencyNet,
    TripletLoss,
    gaze_kl_loss,
    gaze_map,
    triplet_loss,
)
from monai_xai.networks.gaze import _densenet_encoder_channels

TINY = {
    "densenet_block_config": (1, 1, 1, 1),
    "densenet_growth_rate": 4,
    "densenet_init_features": 8,
    "unet_channels": (4, 8, 8, 8, 8, 8),
    "classifier_channels": 8,
}


def tiny_net() -> GazeSaliencyNet:
    torch.manual_seed(0)
    return GazeSaliencyNet(**TINY)


def test_shapes_and_densenet201_encoder() -> None:
    network = tiny_net().eval()
    images = torch.rand(2, 1, 80, 64)
    logits, gaze = network.diagnose_and_gaze(images)
    assert logits.shape == (2, 3) and gaze.shape == (2, 1, 80, 64)
    torch.testing.assert_close(network(images), logits)
    assert network.densenet_encoder(images).shape == (2, network.encoder_channels, 2, 2)  # stride 32
    embedding = network.embed(images)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    assert network.densenet_logits(images).shape == (2, 3)
    assert dict(network.named_modules())[GAZE_CAM_LAYER] is network.classifier.features
    # DenseNet-201: 64 + 6*32 -> 128, + 12*32 -> 256, + 48*32 = 1792 -> 896 channels before the last dense block
    assert _densenet_encoder_channels(64, 32, (6, 12, 48, 32)) == 896
    assert GazeSaliencyNet().encoder_channels == 896
    with pytest.raises(ValueError, match="at least two dense blocks"):
        GazeSaliencyNet(densenet_block_config=(4,))


def test_gaze_map_is_the_spatial_softmax_scaled_to_peak_one() -> None:
    logits = torch.tensor([[[[0.0, math.log(3.0)], [0.0, 0.0]]]])  # softmax: 1/6, 3/6, 1/6, 1/6
    torch.testing.assert_close(gaze_map(logits), torch.tensor([[[[1 / 3, 1.0], [1 / 3, 1 / 3]]]]))


def test_the_decoder_receives_the_densenet_features() -> None:
    # train mode: at random initialisation, batch statistics keep the deep decoder's activations from fading
    network = tiny_net().train()
    images = torch.rand(2, 1, 64, 64)
    before = network.gaze_logits(images)
    # only the DenseNet changes: the UNet's own encoder and decoder are untouched
    with torch.no_grad():
        network.densenet.features.conv0.weight.mul_(-3.0)
    after = network.gaze_logits(images)
    assert (before - after).abs().max() > 1e-2
    # and they enter at the decoder's start, concatenated to the UNet's bottleneck
    seen = []
    handle = network.unet.fusion.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    network.gaze_logits(images)
    handle.remove()
    assert seen == [(2, network.unet.channels[-1] + network.encoder_channels, 2, 2)]
    with pytest.raises(ValueError, match="extra features with"):
        network.unet(images)


def _train_step(view: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, loss: torch.nn.Module) -> None:
    optimizer = torch.optim.Adam(view.trainable_parameters(), lr=1e-2)
    view.train()
    optimizer.zero_grad()
    loss(view(images), target).backward()
    optimizer.step()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _unchanged(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(before[name], value) for name, value in module.state_dict().items())


def test_stage2_freezes_the_densenet_and_stage3_both_encoders() -> None:
    network = tiny_net()
    images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 0])
    gaze = torch.rand(4, 1, 64, 64)
    densenet, unet, classifier = _state(network.densenet), _state(network.unet), _state(network.classifier)

    _train_step(stage_view(network, 2), images, gaze, GazeKLLoss())
    assert _unchanged(densenet, network.densenet)  # weights and batch-norm statistics
    assert not _unchanged(unet, network.unet) and _unchanged(classifier, network.classifier)

    unet = _state(network.unet)
    _train_step(stage_view(network, 3), images, labels, torch.nn.CrossEntropyLoss())
    assert _unchanged(densenet, network.densenet) and _unchanged(unet, network.unet)
    assert not _unchanged(classifier, network.classifier)

    _train_step(stage_view(network, 1), images, labels, torch.nn.CrossEntropyLoss())
    assert not _unchanged(densenet, network.densenet)
    densenet = _state(network.densenet)
    _train_step(stage_view(network, 1, triplet=True), images, labels, TripletLoss(margin=1.0))
    assert not _unchanged(densenet, network.densenet)
    with pytest.raises(ValueError, match="stage must be 1"):
        stage_view(network, 4)
    with pytest.raises(ValueError, match="part of stage 1"):
        stage_view(network, 2, triplet=True)


def test_load_stage_start_needs_the_previous_stage(tmp_path) -> None:
    network = tiny_net()
    assert load_stage_start(network, tmp_path, 1) is None
    with pytest.raises(FileNotFoundError, match="run stage 1 first"):
        load_stage_start(network, tmp_path, 2)
    trained = GazeSaliencyNet(**TINY)
    torch.save(trained.state_dict(), tmp_path / "stage1.pt")
    assert load_stage_start(network, tmp_path, 2).endswith("stage1.pt")
    torch.testing.assert_close(network.state_dict(), trained.state_dict())
    batch = {"image": torch.zeros(2, 1, 4, 4), "label": torch.tensor([1, 2]), "gaze": torch.ones(2, 1, 4, 4)}
    assert TargetBatch("gaze")(batch)[1].shape == (2, 1, 4, 4)
    with pytest.raises(KeyError, match="no 'fixations'"):
        TargetBatch("fixations")(batch)


def test_triplet_loss_by_hand() -> None:
    # 1D points: class 0 at 0 and 1, class 1 at 3 and 10
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    labels = torch.tensor([0, 0, 1, 1])
    margin = 2.0
    # anchor, positive, negative: max(0, d(a,p) - d(a,n) + margin)
    by_hand = [
        max(0.0, 1 - 3 + 2),  # a=0 p=1 n=3: 0
        max(0.0, 1 - 10 + 2),  # a=0 p=1 n=10: 0
        max(0.0, 1 - 2 + 2),  # a=1 p=0 n=3: 1
        max(0.0, 1 - 9 + 2),  # a=1 p=0 n=10: 0
        max(0.0, 7 - 3 + 2),  # a=3 p=10 n=0: 6
        max(0.0, 7 - 2 + 2),  # a=3 p=10 n=1: 7
        max(0.0, 7 - 10 + 2),  # a=10 p=3 n=0: 0
        max(0.0, 7 - 9 + 2),  # a=10 p=3 n=1: 0
    ]
    loss = triplet_loss(embeddings, labels, margin=margin)
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand))  # 14 / 8
    assert loss.item() == pytest.approx(1.75)
    # and torch's own TripletMarginLoss on the same eight triplets, listed explicitly
    index = {0: 0, 1: 1, 3: 2, 10: 3}
    triplets = [(0, 1, 3), (0, 1, 10), (1, 0, 3), (1, 0, 10), (3, 10, 0), (3, 10, 1), (10, 3, 0), (10, 3, 1)]
    anchor, positive, negative = (embeddings[[index[t[k]] for t in triplets]] for k in range(3))
    reference = torch.nn.TripletMarginLoss(margin=margin, eps=0.0)(anchor, positive, negative)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    # 2D, random: the same as torch's loss over every valid triplet
    torch.manual_seed(1)
    points, classes = torch.randn(7, 3), torch.tensor([0, 1, 2, 0, 1, 0, 2])
    valid = [
        (a, p, n)
        for a, p, n in itertools.product(range(7), repeat=3)
        if a != p and classes[a] == classes[p] and classes[n] != classes[a]
    ]
    a, p, n = (torch.tensor([t[k] for t in valid]) for k in range(3))
    expected = torch.nn.TripletMarginLoss(margin=0.5, eps=0.0)(points[a], points[p], points[n])
    assert triplet_loss(points, classes[:, None], 0.5).item() == pytest.approx(expected.item(), abs=1e-5)


def test_triplet_loss_without_triplets_and_bad_input() -> None:
    embeddings = torch.randn(3, 2, requires_grad=True)
    loss = triplet_loss(embeddings, torch.tensor([1, 1, 1]))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match=r"\(B, D\) embeddings"):
        triplet_loss(torch.randn(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="one label per embedding"):
        triplet_loss(torch.randn(3, 2), torch.tensor([0, 1]))


def test_gaze_kl_loss_by_hand() -> None:
    # predicted logits log(1), log(1), log(2), 0 -> P = (1, 1, 2, 1) / 5; gaze (0, 1, 3, 0) -> Q = (0, 1/4, 3/4, 0)
    logits = torch.log(torch.tensor([1.0, 1.0, 2.0, 1.0])).reshape(1, 1, 2, 2)
    gaze = torch.tensor([0.0, 1.0, 3.0, 0.0]).reshape(1, 1, 2, 2)
    by_hand = 0.25 * math.log(0.25 / 0.2) + 0.75 * math.log(0.75 / 0.4)
    assert gaze_kl_loss(logits, gaze).item() == pytest.approx(by_hand, rel=1e-5)
    # a batch averages; a perfect prediction gives 0; the module form is the same
    perfect = torch.log(torch.tensor([1e-9, 1.0, 3.0, 1e-9])).reshape(1, 1, 2, 2)
    batch = gaze_kl_loss(torch.cat([logits, perfect]), torch.cat([gaze, gaze]))
    assert batch.item() == pytest.approx(by_hand / 2, rel=1e-4)
    assert GazeKLLoss()(logits, gaze * 7).item() == pytest.approx(by_hand, rel=1e-5)  # scale-free
    with pytest.raises(ValueError, match="one shape"):
        gaze_kl_loss(logits, gaze[..., :1])
    with pytest.raises(ValueError, match="all zero"):
        gaze_kl_loss(logits, torch.zeros_like(gaze))
    with pytest.raises(ValueError, match="non-negative"):
        gaze_kl_loss(logits, -gaze)
