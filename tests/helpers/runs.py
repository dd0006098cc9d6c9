"""A small classification evaluator run shared by the metric-handler and writer tests."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.inferers import SimpleInferer

from monai_xai.handlers import SaliencyWriter, XAIMetricHandler, XAITimingHandler
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import NoisyLinearImputer
from tests.helpers.engines import case_dataset, collect_outputs, make_evaluator, stack_outputs
from tests.helpers.nets import TinyResNet

METHODS = ("gradcam", "hirescam")


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
        ["ehr_auc", "heat_diff", "deletion", "road_morf"],
        METHODS,
        network=network,
        metric_args={
            "deletion": {"steps": 8},
            "road_morf": {"percentiles": [25, 75], "imputer": NoisyLinearImputer(0.0)},
        },
        region_key="mask",
    )
    writer = SaliencyWriter(out, METHODS)
    evaluator = make_evaluator(
        network, case_dataset(images, mask=masks), inferer, [inferer, XAITimingHandler(METHODS), writer, metrics]
    )
    keys = ("xai_class", *(f"saliency_{m}" for m in METHODS), *(f"xai_seconds_{m}" for m in METHODS))
    outputs = stack_outputs(collect_outputs(evaluator), keys)
    return {"evaluator": evaluator, "outputs": outputs, "images": images, "masks": masks, "net": network, "out": out}
