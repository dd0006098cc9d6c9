"""ROAD and deletion on a 3D segmentation evaluator: the handler scores the class and pixel set the maps explain."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from monai_xai.handlers import XAIMetricHandler
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import NoisyLinearImputer, deletion_insertion
from monai_xai.metrics.road import road
from tests.helpers.engines import case_dataset, collect_outputs, make_evaluator, stack_outputs
from tests.helpers.nets import tiny_unet3d

METRIC_ARGS = {
    "deletion": {"steps": 4, "score": "logit"},
    "road_morf": {"percentiles": [50], "imputer": NoisyLinearImputer(0.0)},
}


def run_segmentation(
    pixel_set_key: str | None, pixel_set: str = "pred", score: str = "logit"
) -> tuple[dict[str, torch.Tensor], object]:
    """Two 12^3 cases of a tiny UNet explained for class 1; returns the maps, classes and the engine state."""
    torch.manual_seed(0)
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 12, 12, 12)
    labels = torch.zeros(2, 1, 12, 12, 12)
    labels[0, :, 2:7, 3:8, 4:9] = 1
    labels[1, :, 5:10, 4:9, 2:7] = 1
    inferer = XAIInferer(
        SimpleInferer(),
        "model.1.submodule",
        ["gradcam"],
        class_idx=1,
        pixel_set=pixel_set,
        pixel_set_key=pixel_set_key,
        score=score,
    )
    metrics = XAIMetricHandler(
        ["deletion", "road_morf"], ["gradcam"], network=network, metric_args=METRIC_ARGS, score=score
    )
    evaluator = make_evaluator(network, case_dataset(images, label=labels), inferer, [inferer, metrics])
    outputs = stack_outputs(collect_outputs(evaluator), ("saliency_gradcam", "xai_class"))
    return {**outputs, "images": images, "labels": labels, "net": network}, evaluator.state


@pytest.mark.parametrize("pixel_set_key", [None, "label"])
def test_segmentation_rerun_metrics_equal_direct_calls(pixel_set_key):
    run, state = run_segmentation(pixel_set_key)
    maps, classes = run["saliency_gradcam"], run["xai_class"]
    assert classes.tolist() == [1, 1]
    # the pixel set the maps explain: the predicted class-1 region (XAIInferer's default) or the label's class-1 region
    mask = None if pixel_set_key is None else (run["labels"] == 1).float()
    network, images = run["net"], run["images"]
    deletion = deletion_insertion(network, images, maps, classes, steps=4, score="logit", pixel_set=mask).auc
    torch.testing.assert_close(state.metric_details["deletion_gradcam"].reshape(-1), deletion, atol=1e-4, rtol=1e-5)
    morf = road(network, images, maps, classes, [50], pixel_set=mask, imputer=NoisyLinearImputer(0.0)).mean_score_change
    torch.testing.assert_close(state.metric_details["road_morf_gradcam"][:, -1], morf, atol=1e-4, rtol=1e-5)
    # the mask matters: scoring the other pixel set gives other values
    other = (run["labels"] == 1).float() if pixel_set_key is None else None
    other_morf = road(
        network, images, maps, classes, [50], pixel_set=other, imputer=NoisyLinearImputer(0.0)
    ).mean_score_change
    assert (other_morf - morf).abs().max() > 1e-2


def test_whole_image_probability_target_is_scored_as_explained():
    """pixel_set="image", score="probability": ROAD scores the mean lesion probability over the volume, as the maps
    explain; with the logit (the ROAD metric's own default) it would give other values."""
    run, state = run_segmentation(None, pixel_set="image", score="probability")
    network, images, maps, classes = run["net"], run["images"], run["saliency_gradcam"], run["xai_class"]
    morf = road(
        network, images, maps, classes, [50], pixel_set="image", score="probability", imputer=NoisyLinearImputer(0.0)
    )
    torch.testing.assert_close(
        state.metric_details["road_morf_gradcam"][:, -1], morf.mean_score_change, atol=1e-5, rtol=1e-5
    )
    logit = road(
        network, images, maps, classes, [50], pixel_set="image", imputer=NoisyLinearImputer(0.0)
    ).mean_score_change
    assert (logit - morf.mean_score_change).abs().max() > 1e-4  # 100x the tolerance above
    deletion = deletion_insertion(network, images, maps, classes, steps=4, score="logit", pixel_set="image").auc
    torch.testing.assert_close(state.metric_details["deletion_gradcam"].reshape(-1), deletion, atol=1e-4, rtol=1e-5)
