"""Speed of the randomisation checks Quantus also has (random logit, eMPRT, sMPRT), side by side with Quantus 0.6 in
one process, printed as a Markdown table with ratios.

One 2D case: a torchvision ResNet18 (random weights, 1000 classes) on a batch of 3x224x224 images, GradCAM at
``layer4`` through :class:`~monai_xai.explanation.ExplainStep`. Both sides explain with that same step (Quantus gets it
as its ``explain_func``, numpy in and out) and compute the same statistic per image:

- random logit: Spearman between the maps of the label and of a random other class (``quantus.RandomLogit``);
- eMPRT: the rise of the maps' discrete entropy (100 bins) from the trained to the fully re-initialised network
  (``quantus.EfficientMPRT``);
- sMPRT: Spearman between the noise-smoothed maps (``--samples`` copies, noise 0.1 of the range) of the trained and
  the fully re-initialised network (``quantus.SmoothMPRT`` with ``layer_order="bottom_up"``, ``skip_layers=True``:
  the last, fully randomised step only).

Ours is :func:`monai_xai.sanity.trust.batch_trust_statistics` with the randomised network made by
:func:`~monai_xai.sanity.randomize_weights` (the trained and the randomised explanation are timed with it: Quantus
makes both inside its call). Quantus is not a dependency of the package: ``pip install --no-deps quantus==0.6.0``
(``make install`` does). The 3D cost of the checks on the demo bundles is measured on the demo study (its "sanity and
reliability" progress bars), see docs/benchmarks.md.

Times are medians of ``--repeats`` runs after one warm-up. ``--quick`` runs 2 images of 64^2 as a smoke test of the
script; its numbers say nothing about the goals.

Usage::

    python benchmarks/trust.py                # 8 images of 224^2 (a few minutes on a CPU)
    python benchmarks/trust.py --quick
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torchvision
from shared_machine import median_seconds

from monai_xai.enums import SanityCheck
from monai_xai.explanation import ExplainRequest, ExplainStep, ExplainTarget
from monai_xai.sanity import randomize_weights
from monai_xai.sanity.trust import batch_trust_statistics

CHECKS = {
    "random logit": SanityCheck.RANDOM_LOGIT,
    "eMPRT": SanityCheck.EMPRT,
    "sMPRT": SanityCheck.SMPRT,
}


def ours(check: SanityCheck, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, samples: int):
    step = ExplainStep(ExplainRequest("gradcam", "layer4"))

    def run() -> None:
        trained = step(model, images, target=ExplainTarget(labels, None))
        # the random logit test needs no randomised network; eMPRT compares with its maps, sMPRT smooths its own
        randomised_network = model if check == SanityCheck.RANDOM_LOGIT else randomize_weights(model, 42)
        randomised = {}
        if check == SanityCheck.EMPRT:
            randomised = step(randomised_network, images, target=trained.target).maps
        batch_trust_statistics(model, images, step, trained, randomised, randomised_network, [check], n_samples=samples)

    return run


def theirs(check: SanityCheck, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, samples: int):
    import quantus

    step = ExplainStep(ExplainRequest("gradcam", "layer4"))

    def explain_func(model, inputs, targets, **kwargs):
        batch = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        target = ExplainTarget(torch.as_tensor(np.asarray(targets)).long(), None)
        return step(model, batch, target=target).maps["gradcam"].detach().numpy()

    if check == SanityCheck.RANDOM_LOGIT:
        metric = quantus.RandomLogit(
            num_classes=1000, seed=42, similarity_func=quantus.similarity_func.correlation_spearman,
            disable_warnings=True,
        )  # fmt: skip
    elif check == SanityCheck.EMPRT:
        metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, seed=42, disable_warnings=True)
    else:
        metric = quantus.SmoothMPRT(
            layer_order="bottom_up", seed=42, nr_samples=samples, noise_magnitude=0.1, skip_layers=True,
            return_last_correlation=True, disable_warnings=True,
        )  # fmt: skip
    x, y = images.numpy(), labels.numpy()
    return lambda: metric(model, x, y, a_batch=None, explain_func=explain_func, device="cpu", channel_first=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images of 64^2: checks the script runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8, help="sMPRT's noisy copies per image")
    args = parser.parse_args()
    batch, size = (2, 64) if args.quick else (8, 224)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ResNet18 {batch}x3x{size}^2, GradCAM layer4")
    print("\n| check | ours (s) | Quantus (s) | Quantus / ours |\n|---|---|---|---|")
    for name, check in CHECKS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mine = median_seconds(ours(check, model, images, labels, args.samples), args.repeats, warmup=1)
            other = median_seconds(theirs(check, model, images, labels, args.samples), args.repeats, warmup=1)
        print(f"| {name} | {mine:.3f} | {other:.3f} | {other / mine:.2f}x |")


if __name__ == "__main__":
    main()
