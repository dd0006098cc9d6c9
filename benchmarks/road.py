"""Speed of ROAD (noisy linear imputation + forwards), side by side with pytorch-grad-cam in one process, with ratios.

Cases (all saliency maps are smooth random fields, like upsampled CAMs, with a tiny jitter so that no two pixels tie):

- ``impute``: imputation alone for the 18 masks of MoRF + LeRF at 9 percentiles of one 3x224x224 image:
  ``noisy_linear_impute`` on all 18 at once vs pytorch-grad-cam's ``NoisyLinearImputer`` mask by mask
  (goal: >= 3x faster on a 2-core CPU).
- ``road2d``: end-to-end ``road_combined`` (MoRF + LeRF, 9 percentiles) on a batch of 4 3x224x224 images through a
  torchvision ResNet50 (random weights) vs (i) the bare forward passes ROAD cannot avoid (the batch once plus the
  72 imputed images, in the same chunks; goal <= 1.3x) and (ii) pytorch-grad-cam's ``ROADCombined`` with the same
  percentiles.
- ``road3d``: ``road`` (MoRF, 9 percentiles) on one 1x96x96x96 volume through MONAI's ``DenseNet121``
  (spatial_dims=3, 2 classes, random weights; goal <= 60 s on a CPU), and pytorch-grad-cam's
  ``ROADMostRelevantFirst`` on a 32^3 volume (``--gradcam-volume``; DenseNet121 needs >= 32^3), whose output is NaN
  ("Matrix is exactly singular" from scipy): its imputer only knows 2D neighbourhoods.

Times are medians of ``--repeats`` runs (``time.perf_counter``, CUDA synchronised). ``--quick`` shrinks every size
(64^2 images, batch 2, 32^3 volume) as a smoke test of the script; its numbers say nothing about the goals.

Threads follow monai-xai's policy (:mod:`monai_xai.threads`: one per usable CPU that other processes leave free)
unless ``--threads`` fixes them; ``benchmarks/shared_machine.py`` runs these cases idle and next to a competing load.

Usage::

    python benchmarks/road.py                     # full sizes, all cases (many minutes on a CPU)
    python benchmarks/road.py --quick
    python benchmarks/road.py --cases road3d --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_xai.metrics import noisy_linear_impute, removal_masks, road, road_combined  # noqa: E402
from monai_xai.threads import apply_thread_policy  # noqa: E402

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
CASE_NAMES = ("impute", "road2d", "road3d")


def timed(run: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def smooth_saliency(batch: int, spatial: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    """CAM-like maps: a 7^d random field upsampled to ``spatial``, plus a 1e-6 jitter against ties."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, *(7,) * len(spatial), generator=generator)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    field = F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)
    return (field + 1e-6 * torch.rand(field.shape, generator=generator)).to(device)


def case_impute(size: int, repeats: int, device: torch.device) -> list[tuple[str, float, str]]:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    saliency = smooth_saliency(1, (size, size), device)
    removed = torch.cat([removal_masks(saliency, PERCENTILES, order)[0] for order in ("morf", "lerf")])[:, None]
    ours, _ = timed(lambda: noisy_linear_impute(image.expand(18, -1, -1, -1), removed, noise=0.01), repeats, device)
    imputer = NoisyLinearImputer(noise=0.01)
    image_cpu, kept_cpu = image[0].cpu(), (~removed[:, 0]).float().cpu()
    theirs, _ = timed(lambda: [imputer(image_cpu, kept) for kept in kept_cpu], repeats, device)
    label = f"18 masks, 3x{size}x{size}"
    return [
        (f"impute: monai-xai ({label})", ours, ""),
        (f"impute: pytorch-grad-cam NoisyLinearImputer ({label})", theirs, f"{theirs / ours:.1f}x slower than ours"),
    ]


def case_road2d(size: int, batch: int, road_batch: int | None, repeats: int, device: torch.device):
    import torchvision
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = torchvision.models.resnet50(weights=None).to(device).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    saliency = smooth_saliency(batch, (size, size), device, seed=1)
    targets = [3] * batch
    imputed_count = 2 * len(PERCENTILES) * batch
    forwards, _ = timed(lambda: _bare_forwards(model, images, 2 * len(PERCENTILES), road_batch), repeats, device)
    ours, combined = timed(
        lambda: road_combined(model, images, saliency, targets, PERCENTILES, batch_size=road_batch), repeats, device
    )
    gradcam = ROADCombined(percentiles=list(PERCENTILES))
    cams = saliency[:, 0].cpu().numpy()
    theirs, reference = timed(
        lambda: gradcam(images, cams, [ClassifierOutputTarget(t) for t in targets], model), repeats, device
    )
    label = f"ResNet50, {batch}x3x{size}x{size}, 9 pct x 2 orders"
    difference = np.abs(combined.cpu().numpy() - reference).max()
    return [
        (f"road2d: bare forwards ({batch + imputed_count} images)", forwards, ""),
        (f"road2d: monai-xai road_combined ({label})", ours, f"{ours / forwards:.2f}x the bare forwards"),
        (
            f"road2d: pytorch-grad-cam ROADCombined ({label})",
            theirs,
            f"{theirs / ours:.1f}x slower than ours; largest difference {difference:.3f} (independent noise)",
        ),
    ]


def case_road3d(volume: int, gradcam_volume: int, repeats: int, device: torch.device):
    from monai.networks.nets import DenseNet121
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(device).eval()
    spatial = (volume,) * 3
    images = torch.rand(1, 1, *spatial, generator=torch.Generator().manual_seed(2)).to(device)
    saliency = smooth_saliency(1, spatial, device, seed=2)
    forwards, _ = timed(lambda: _bare_forwards(model, images, len(PERCENTILES), None), repeats, device)
    ours, curve = timed(lambda: road(model, images, saliency, 1, PERCENTILES, order="morf"), repeats, device)
    rows = [
        (f"road3d: bare forwards (1 + 9 volumes {volume}^3)", forwards, ""),
        (
            f"road3d: monai-xai road MoRF (DenseNet121 3D, 1x{volume}^3, 9 pct)",
            ours,
            f"{ours / forwards:.2f}x the bare forwards; finite: {bool(torch.isfinite(curve.score_change).all())}",
        ),
    ]
    small = torch.rand(1, 1, *(gradcam_volume,) * 3, generator=torch.Generator().manual_seed(3)).to(device)
    small_saliency = smooth_saliency(1, (gradcam_volume,) * 3, device, seed=3)[:, 0].cpu().numpy()
    try:
        theirs, value = timed(
            lambda: ROADMostRelevantFirst(50)(small, small_saliency, [ClassifierOutputTarget(1)], model), 1, device
        )
        rows.append(
            (f"road3d: pytorch-grad-cam ROADMostRelevantFirst(50) ({gradcam_volume}^3)", theirs, f"returns {value}")
        )
    except Exception as error:  # the reference is not meant for 3D; report how it fails
        rows.append(
            (f"road3d: pytorch-grad-cam ROADMostRelevantFirst(50) ({gradcam_volume}^3)", float("nan"), repr(error))
        )
    return rows


def _bare_forwards(model: torch.nn.Module, images: torch.Tensor, copies: int, chunk: int | None) -> None:
    """The forwards ROAD cannot avoid: the batch once, then ``copies`` perturbed versions of it in ``chunk``s."""
    perturbed_stand_in = images.repeat(copies, *(1,) * (images.ndim - 1))
    with torch.no_grad():
        model(images)
        for part in perturbed_stand_in.split(chunk or perturbed_stand_in.shape[0]):
            model(part)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (pytorch-grad-cam imputes on the CPU anyway)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the thread policy)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--size", type=int, default=224, help="2D image size")
    parser.add_argument("--batch", type=int, default=4, help="2D batch for road2d")
    parser.add_argument("--road-batch-size", type=int, default=None, help="road batch_size (None: all at once)")
    parser.add_argument("--volume", type=int, default=96, help="3D volume size for road3d")
    parser.add_argument("--gradcam-volume", type=int, default=32, help="3D size for the pytorch-grad-cam NaN check")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.volume = 64, 2, 32
    threads = apply_thread_policy(args.threads)
    device = torch.device(args.device)
    rows: list[tuple[str, float, str]] = []
    if "impute" in args.cases:
        rows += case_impute(args.size, args.repeats, device)
    if "road2d" in args.cases:
        rows += case_road2d(args.size, args.batch, args.road_batch_size, args.repeats, device)
    if "road3d" in args.cases:
        rows += case_road3d(args.volume, args.gradcam_volume, args.repeats, device)
    print(f"\ndevice {device}, torch {torch.__version__}, {threads}, quick={args.quick}\n")
    print("| case | seconds | note |\n|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
