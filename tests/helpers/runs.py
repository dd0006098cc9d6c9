"""A small classification evaluator run shared by the metric-handler and writer tests."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.inferers import SimpleInferer

from monai_xai.handlers import XAIMetricHandler, XAIMLflowHandler, XAITimingHandler, explanation_writers
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import NoisyLinearImputer
from tests.helpers.engines import case_dataset, collect_outputs, make_evaluator, stack_outputs
from tests.helpers.nets import TinyResNet

METHODS = ("gradcam", "hirescam")
TRACKED_METHODS = ("gradcam", "layercam")


def explain_classification_cases(out: Path) -> dict:
    """3 2D cases (batches of 2 and 1) explained with :data:`METHODS`, scored by region and re-run metrics, timed and
    written to ``out``; returns the evaluator, the stacked outputs, the inputs and the network."""
    torch.manual_seed(0)
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(3, 1, 16, 16)
    masks = torch.zeros(3, 1, 16, 16)
    masks[:, :, 4:10, 3:9] = 1
    inferer = XAIInferer(SimpleInferer(), "layer4", METHODS)
    metrics = XAIMetricHandler(
        ["ehr_auc", "heat_diff", "deletion", "road_morf", "iou", "auprc", "confidence_increase"],
        METHODS,
        network=network,
        metric_args={
            "deletion": {"steps": 8},
            "road_morf": {"percentiles": [25, 75], "imputer": NoisyLinearImputer(0.0)},
        },
        region_key="mask",
    )
    writers = explanation_writers(out, METHODS)
    evaluator = make_evaluator(
        network, case_dataset(images, mask=masks), inferer, [inferer, XAITimingHandler(METHODS), *writers, metrics]
    )
    keys = ("xai_class", *(f"saliency_{m}" for m in METHODS), *(f"xai_seconds_{m}" for m in METHODS))
    outputs = stack_outputs(collect_outputs(evaluator), keys)
    return {"evaluator": evaluator, "outputs": outputs, "images": images, "masks": masks, "net": network, "out": out}


def explain_with_tracking(
    output_dir, tracking_uri: str | None, run_name: str, metrics=("heat_diff",), server_timeout: float = 2.0
):
    """2 2D cases explained with :data:`TRACKED_METHODS`, scored, written to ``output_dir`` and tracked in MLflow
    (experiment ``xai_test``); returns the finished evaluator. ``server_timeout``: the handler's, short for the
    tests of dead servers."""
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(2, 1, 16, 16)
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 2:9, 4:12] = 1
    inferer = XAIInferer(SimpleInferer(), "layer4", TRACKED_METHODS)
    tracker = XAIMLflowHandler(
        output_dir,
        tracking_uri=tracking_uri,
        params={"xai_methods": list(TRACKED_METHODS), "xai_target_layer": "layer4", "road_percentiles": [20, 80]},
        experiment_name="xai_test",
        run_name=run_name,
        server_timeout=server_timeout,
    )
    handlers = [
        inferer,
        *explanation_writers(output_dir, TRACKED_METHODS),
        XAIMetricHandler(
            list(metrics),
            TRACKED_METHODS,
            network=network,
            metric_args={"road_combined": {"percentiles": [20, 80], "imputer": NoisyLinearImputer(0.0)}},
            region_key="mask",
        ),
        tracker,
    ]
    evaluator = make_evaluator(network, case_dataset(images, mask=masks), inferer, handlers)
    evaluator.run()
    return evaluator
