"""XAI metric and timing handlers on a real evaluator, checked against the plain metric functions."""

from __future__ import annotations

import pytest
import torch

from monai_xai.handlers import XAIMetricHandler
from monai_xai.metrics import (
    NoisyLinearImputer,
    confidence_change,
    deletion_insertion,
    ehr_auc,
    heat_diff,
    otsu_threshold,
    region_mask,
    saliency_auprc,
    saliency_iou,
)
from monai_xai.metrics.road import road
from tests.helpers.runs import METHODS


def test_region_metrics_match_the_functions(classification_run):
    state, outputs, masks = (
        classification_run["evaluator"].state,
        classification_run["outputs"],
        classification_run["masks"],
    )
    for method in METHODS:
        maps = outputs[f"saliency_{method}"]
        expected_ehr = ehr_auc(maps, masks)
        torch.testing.assert_close(state.metric_details[f"ehr_auc_{method}"].reshape(-1), expected_ehr)
        assert state.metrics[f"ehr_auc_{method}"] == pytest.approx(float(expected_ehr.mean()), abs=1e-6)
        assert state.metrics[f"heat_diff_{method}"] == pytest.approx(float(heat_diff(maps, masks).mean()), abs=1e-6)
        # iou without a threshold binarises each map at its own Otsu threshold
        iou = saliency_iou(maps, masks, threshold=otsu_threshold(maps))
        torch.testing.assert_close(state.metric_details[f"iou_{method}"].reshape(-1), iou)
        torch.testing.assert_close(state.metric_details[f"auprc_{method}"].reshape(-1), saliency_auprc(maps, masks))


def test_rerun_metrics_use_the_explained_class(classification_run):
    run = classification_run
    state, outputs = run["evaluator"].state, run["outputs"]
    for method in METHODS:
        maps = outputs[f"saliency_{method}"]
        curve = deletion_insertion(run["net"], run["images"], maps, class_idx=outputs["xai_class"], steps=8)
        torch.testing.assert_close(state.metric_details[f"deletion_{method}"].reshape(-1), curve.auc)
        change = confidence_change(run["net"], run["images"], maps, class_idx=outputs["xai_class"])
        torch.testing.assert_close(state.metric_details[f"confidence_increase_{method}"].reshape(-1), change)
        morf = road(
            run["net"], run["images"], maps, outputs["xai_class"], percentiles=[25, 75], imputer=NoisyLinearImputer(0.0)
        )
        # ROAD is reported by its mean over percentiles; the curve is kept for plots and MLflow
        assert state.metrics[f"road_morf_{method}"] == pytest.approx(float(morf.mean_score_change.mean()), abs=1e-5)
        curve_means = morf.score_change.mean(dim=0)
        kept = state.metric_curves[f"road_morf_{method}"]["morf"]
        assert kept.x == (25, 75) and kept.y == pytest.approx(curve_means.tolist(), abs=1e-5)


def test_timing_records_every_case(classification_run):
    state, outputs = classification_run["evaluator"].state, classification_run["outputs"]
    for method in METHODS:
        per_case = outputs[f"xai_seconds_{method}"].double()
        torch.testing.assert_close(state.metric_details[f"xai_seconds_{method}"].reshape(-1), per_case)
        assert state.metrics[f"xai_seconds_{method}"] == pytest.approx(float(per_case.mean()))
        assert bool((per_case > 0).all())


def test_region_mask_variants():
    label = torch.tensor([0, 1, 2, 2]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    classes = torch.tensor([1, 2])
    foreground = torch.tensor([0.0, 1, 1, 1]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    torch.testing.assert_close(region_mask(label, classes, None), foreground)
    by_class = torch.stack([torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 1])]).reshape(2, 1, 2, 2)
    torch.testing.assert_close(region_mask(label, classes, "class"), by_class)
    torch.testing.assert_close(region_mask(label, classes, 2), by_class[1:].repeat(2, 1, 1, 1))
    one_hot = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(region_mask(one_hot, classes, "class"), by_class)
    torch.testing.assert_close(region_mask(one_hot, classes, None), foreground)
    with pytest.raises(ValueError, match="not a region"):
        region_mask(torch.tensor([1, 2]), classes, None)


def test_metric_handler_errors():
    with pytest.raises(ValueError, match="unknown XAI metrics"):
        XAIMetricHandler(["ehr"], ["gradcam"])
    with pytest.raises(ValueError, match='"network": "@network"'):
        XAIMetricHandler(["road_combined"], ["gradcam"])
    with pytest.raises(ValueError, match="not metrics"):
        XAIMetricHandler(["ehr_auc"], ["gradcam"], metric_args={"ehr": {}})
