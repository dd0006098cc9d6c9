"""A small explaining evaluator tracked in MLflow whose network fails: ``python tracked_run.py <tracking_uri> <out_dir>
<error|interrupt> <stats_first: 0|1>``. The test reads the run's status from the tracking store after the process ends.

``error`` raises a RuntimeError in the network's second forward pass, ``interrupt`` a KeyboardInterrupt (what Ctrl-C
raises). With ``stats_first`` a MONAI ``StatsHandler``, which re-raises errors itself, is attached before the MLflow
handler, so the MLflow handler's own exception handler never runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.handlers import StatsHandler
from monai.inferers import SimpleInferer

from monai_xai.handlers import XAIMLflowHandler, explanation_writers
from monai_xai.inferers import XAIInferer
from tests.helpers.engines import case_dataset, make_evaluator
from tests.helpers.nets import TinyResNet


class FailsOnSecondBatch(TinyResNet):
    def __init__(self, failure: type[BaseException]) -> None:
        super().__init__(spatial_dims=2, num_classes=3)
        self.failure, self.calls = failure, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # the evaluator's own forward pass
            self.calls += 1
            if self.calls == 2:
                raise self.failure("the network failed on purpose")
        return super().forward(x)


def main(tracking_uri: str, out_dir: str, kind: str, stats_first: bool) -> None:
    network = FailsOnSecondBatch(KeyboardInterrupt if kind == "interrupt" else RuntimeError).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    tracker = XAIMLflowHandler(Path(out_dir), tracking_uri=tracking_uri, run_name=f"{kind}_{int(stats_first)}")
    handlers = [StatsHandler(iteration_log=False)] if stats_first else []
    handlers += [inferer, *explanation_writers(Path(out_dir), ["gradcam"]), tracker]
    make_evaluator(network, case_dataset(torch.randn(4, 1, 16, 16)), inferer, handlers).run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1")
