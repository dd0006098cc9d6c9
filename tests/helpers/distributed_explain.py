"""Explain a small dataset with the XAI handlers, in one process or split over ranks (``torchrun``, gloo on CPU).

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers/distributed_explain.py <out_dir>``
writes ``<out_dir>/metrics.json`` (rank 0) with ``engine.state.metrics`` and the per-case details; the test compares
it with :func:`explain` run in one process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset, DistributedSampler
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer

from monai_xai.handlers import XAIMetricHandler, XAITimingHandler, explanation_writers
from monai_xai.inferers import XAIInferer
from tests.helpers.engines import case_dataset
from tests.helpers.nets import TinyResNet

METHODS = ("gradcam", "hirescam")
N_CASES = 6


def explain(out_dir: Path) -> dict:
    """Run the evaluator (on this rank's share of the cases when distributed); returns metrics and details."""
    torch.manual_seed(0)
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(N_CASES, 1, 16, 16)
    masks = torch.zeros(N_CASES, 1, 16, 16)
    for case in range(N_CASES):
        masks[case, :, case : case + 6, 3:9] = 1
    dataset = Dataset(case_dataset(images, mask=masks))
    distributed = dist.is_available() and dist.is_initialized()
    sampler = DistributedSampler(dataset, shuffle=False, even_divisible=False) if distributed else None
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=0)
    inferer = XAIInferer(SimpleInferer(), "layer4", METHODS)
    handlers = [
        inferer,
        XAITimingHandler(METHODS),
        *explanation_writers(out_dir, METHODS, png=False),
        XAIMetricHandler(
            ["heat_diff", "ehr_auc", "deletion"], METHODS, network=network, metric_args={"deletion": {"steps": 4}},
            region_key="mask",
        ),
    ]  # fmt: skip
    evaluator = SupervisedEvaluator(torch.device("cpu"), loader, network, inferer=inferer, val_handlers=handlers)
    evaluator.run()
    details = {name: value.reshape(-1).tolist() for name, value in evaluator.state.metric_details.items()}
    return {"metrics": dict(evaluator.state.metrics), "details": details}


if __name__ == "__main__":
    output = Path(sys.argv[1])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="gloo")
    result = explain(output)
    if not dist.is_initialized() or dist.get_rank() == 0:
        (output / "metrics.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()
