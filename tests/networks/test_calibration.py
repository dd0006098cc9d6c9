"""Temperature scaling applied at the network's output: calibrated logits, same weights, names and maps."""

from __future__ import annotations

import copy

import pytest
import torch

from monai_xai.cams import CAMExplainer
from monai_xai.metrics import removal_masks, road
from monai_xai.networks import classification_backbone, is_calibrated, scale_logits


def _pair(temperature: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    raw = classification_backbone("resnet18", num_classes=3).eval()
    return raw, scale_logits(copy.deepcopy(raw), temperature)


def test_logits_are_divided_and_the_checkpoint_and_layer_names_are_unchanged() -> None:
    raw, scaled = _pair(2.5)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scaled(images), raw(images) / 2.5)
    assert scaled.logit_temperature == 2.5
    assert scaled.state_dict().keys() == raw.state_dict().keys()
    assert [name for name, _ in scaled.named_modules()] == [name for name, _ in raw.named_modules()]
    reloaded = scale_logits(classification_backbone("resnet18", num_classes=3).eval(), 2.5)
    reloaded.load_state_dict(raw.state_dict())  # a checkpoint of the trained network loads strictly
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), raw(images) / 2.5)


def test_maps_are_those_of_the_raw_network_and_probability_scores_are_calibrated() -> None:
    """Gradient CAMs of logit / T are those of the logit scaled by 1 / T, the same after normalisation; a score of
    probabilities (ROAD) sees softmax(logit / T)."""
    raw, scaled = _pair(3.0)
    images = torch.randn(2, 3, 64, 64)
    maps_raw = CAMExplainer(raw, "layer4", ["gradcam", "layercam"])(images, class_idx=[0, 2])
    maps_scaled = CAMExplainer(scaled, "layer4", ["gradcam", "layercam"])(images, class_idx=[0, 2])
    for method in ("gradcam", "layercam"):
        torch.testing.assert_close(maps_scaled[method], maps_raw[method])
    torch.manual_seed(1)
    saliency = torch.rand(2, 1, 64, 64)
    target = torch.tensor([0, 2])
    removed = removal_masks(saliency, [50], "morf")  # (B, 1, H, W): the half of each image ROAD replaces
    imputed = images * ~removed
    with torch.no_grad():
        before, after = (torch.softmax(raw(x) / 3.0, dim=1)[torch.arange(2), target] for x in (images, imputed))
    curve = road(scaled, images, saliency, target, [50], score="probability", imputer=lambda x, m: x * ~m)
    torch.testing.assert_close(curve.score_change[:, 0], after - before)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_a_temperature_that_is_not_positive_and_finite_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        scale_logits(torch.nn.Linear(2, 2), temperature)


def test_scaling_twice_is_refused_and_one_leaves_the_network_as_it_is() -> None:
    network = scale_logits(torch.nn.Linear(2, 2), 2.0)
    with pytest.raises(ValueError, match="already divided by 2.0"):
        scale_logits(network, 2.0)
    identity = torch.nn.Linear(2, 2)
    x = torch.randn(3, 2)
    expected = identity(x)
    torch.testing.assert_close(scale_logits(identity, 1.0)(x), expected)


def test_is_calibrated_only_with_a_temperature_other_than_one() -> None:
    assert not is_calibrated(torch.nn.Linear(2, 2))
    assert not is_calibrated(scale_logits(torch.nn.Linear(2, 2), 1.0))
    scaled = scale_logits(torch.nn.Linear(2, 2), 0.5)
    assert is_calibrated(scaled) and is_calibrated(torch.nn.DataParallel(scaled))
