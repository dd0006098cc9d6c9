"""Speed and memory of the input attributions against Captum called directly, side by side in one process, printed as
a Markdown table with ratios.

For each case (a 3D MONAI UNet and a 3D SwinUNETR, random weights, a segmentation target: class 1 summed over a box)
and each attribution method:

- ``AttributionExplainer`` given the prediction (as the explanation step calls it) vs the same Captum method called
  directly with the hand-written summing forward function ``lambda x: (model(x)[:, 1] * mask).sum()`` and the same
  steps, samples, windows and batching (goal <= 1.10x its time);
- the peak memory of each: CUDA's peak allocation on a GPU; on the CPU (``--cpu-memory``) the peak resident set of a
  child process that runs only that call.

And a sliding-window attribution (Integrated Gradients; Saliency) of a volume larger than the window vs the sum of the
times of Captum called directly on each window's crop with its crop of the box (goal <= 1.2x: what the windows
themselves cost, plus the first window's forward pass, padding and blending; a box needs no window's prediction).

Times are medians of ``--repeats`` runs after ``--warmup`` runs (``time.perf_counter``, CUDA synchronised). Full sizes
(96^3, UNet of the spleen bundle, SwinUNETR with 48 features) take long on a CPU; ``--quick`` runs small sizes as a
smoke test of the script (its numbers say little about the goals).

Usage::

    python benchmarks/attributions.py --quick
    python benchmarks/attributions.py --cases unet3d --methods saliency integrated_gradients --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

CASE_NAMES = ("unet3d", "swinunetr_3d")
METHODS = (
    "saliency",
    "input_x_gradient",
    "deeplift",
    "integrated_gradients",
    "smoothgrad",
    "vargrad",
    "gradient_shap",
    "occlusion",
    "feature_ablation",
    "kernel_shap",
)


@dataclass
class Case:
    """A network, one volume, the box its class-1 scores are summed over, and the attribution settings."""

    name: str
    model: nn.Module
    images: torch.Tensor
    mask: torch.Tensor
    settings: dict
    batch_size: int


def _box(size: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, size, device=device)
    mask[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3, size // 4 : 3 * size // 4] = 1
    return mask


def build_case(name: str, quick: bool, device: torch.device, swin_size: int = 96) -> Case:
    """The benchmark's network and volume; ``swin_size``: SwinUNETR's cube side (a multiple of 32, at least 64)."""
    from monai.networks.nets import SwinUNETR, UNet

    if name == "unet3d":
        size = 32 if quick else 96
        channels = (8, 16, 32, 64) if quick else (16, 32, 64, 128, 256)
        # the spleen_ct_segmentation bundle's network at full size
        model = UNet(3, 1, 2, channels, (2,) * (len(channels) - 1), num_res_units=2, norm="batch")
    elif name == "swinunetr_3d":
        size = 64 if quick else swin_size  # its five halvings need at least 64
        model = SwinUNETR(in_channels=1, out_channels=2, feature_size=12 if quick else 48, spatial_dims=3)
    else:
        raise ValueError(f"unknown case {name!r}; choose from {CASE_NAMES}.")
    settings = {
        "steps": 8 if quick else 32,
        "samples": 4 if quick else 16,
        "occlusion_window": size // 4,
        "feature_grid": 4,
        "shap_samples": 16 if quick else 64,
        "max_voxel_passes": 1e12,
    }
    images = torch.randn(1, 1, size, size, size, device=device)
    return Case(name, model.to(device).eval(), images, _box(size, device), settings, 4 if quick else 8)


def captum_call(method: str, case: Case, images: torch.Tensor, mask: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Captum's method called directly, the way its documentation shows, with a hand-written summing target."""
    from captum.attr import (
        DeepLift,
        FeatureAblation,
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        KernelShap,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    from monai_xai.cams.attributions import AttributionSettings, feature_groups
    from monai_xai.cams.attributions.methods import noise_std

    class Summing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = case.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.model(x)[:, 1] * mask[:, 0]).flatten(1).sum(dim=1)

    forward = Summing()
    settings = AttributionSettings(**case.settings)
    batch = case.batch_size
    std = noise_std(images[0], settings.noise)
    window = (1, *[min(settings.occlusion_window, s) for s in images.shape[2:]])
    with torch.no_grad():
        groups = feature_groups(settings, images, case.model(images))

    def grad_input() -> torch.Tensor:
        return images.detach().clone().requires_grad_(True)

    calls = {
        "saliency": lambda: Saliency(forward).attribute(grad_input(), abs=False),
        "input_x_gradient": lambda: InputXGradient(forward).attribute(grad_input()),
        "deeplift": lambda: DeepLift(forward).attribute(grad_input(), baselines=0.0),
        "integrated_gradients": lambda: IntegratedGradients(forward).attribute(
            images, baselines=0.0, n_steps=settings.steps, internal_batch_size=batch
        ),
        "smoothgrad": lambda: NoiseTunnel(Saliency(forward)).attribute(
            images,
            nt_type="smoothgrad",
            nt_samples=settings.samples,
            nt_samples_batch_size=batch,
            stdevs=std,
            abs=False,
        ),
        "vargrad": lambda: NoiseTunnel(Saliency(forward)).attribute(
            images, nt_type="vargrad", nt_samples=settings.samples, nt_samples_batch_size=batch, stdevs=std, abs=False
        ),
        "gradient_shap": lambda: sum(
            GradientShap(forward).attribute(
                images, baselines=torch.zeros_like(images), n_samples=min(batch, settings.samples - start), stdevs=std
            )
            * (min(batch, settings.samples - start) / settings.samples)
            for start in range(0, settings.samples, batch)
        ),
        "occlusion": lambda: Occlusion(forward).attribute(
            images, sliding_window_shapes=window, strides=window, baselines=0.0, perturbations_per_eval=batch
        ),
        "feature_ablation": lambda: FeatureAblation(forward).attribute(
            images, baselines=0.0, feature_mask=groups, perturbations_per_eval=batch
        ),
        "kernel_shap": lambda: KernelShap(forward).attribute(
            images, baselines=0.0, feature_mask=groups, n_samples=settings.shap_samples, perturbations_per_eval=batch
        ),
    }
    return calls[method]


def ours_call(method: str, case: Case, roi_size: int | None = None) -> Callable[[], object]:
    """``AttributionExplainer`` as the explanation step calls it: given the prediction (whole images), or with a
    sliding window."""
    from monai_xai.cams import AttributionExplainer

    window = {} if roi_size is None else {"roi_size": roi_size, "overlap": 0.25, "sw_mode": "constant"}
    explainer = AttributionExplainer(case.model, method, batch_size=case.batch_size, settings=case.settings, **window)
    if roi_size is not None:
        return lambda: explainer(case.images, class_idx=1, pixel_set=case.mask)
    with torch.no_grad():
        outputs = case.model(case.images)
    return lambda: explainer(case.images, class_idx=1, pixel_set=case.mask, outputs=outputs)


def measure(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> tuple[float, float | None]:
    """(median seconds, peak CUDA memory in GiB above what was allocated before, or None on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def memory_child(case_name: str, method: str, implementation: str, quick: bool, threads: int, swin_size: int) -> None:
    """Runs in a fresh process: one call of one implementation; prints JSON with the peak RSS before and after."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    case = build_case(case_name, quick, torch.device("cpu"), swin_size)
    fn = captum_call(method, case, case.images, case.mask) if implementation == "captum" else ours_call(method, case)
    before = _peak_rss_gib()
    fn()
    print(json.dumps({"before": before, "peak": _peak_rss_gib()}))


def cpu_memory(case_name: str, method: str, implementation: str, args: argparse.Namespace) -> float:
    """Peak RSS (GiB) of one call in a child process, above the child's peak before the call."""
    command = [sys.executable, __file__, "--memory-child", case_name, method, implementation]
    command += ["--threads", str(args.threads), "--swin-size", str(args.swin_size)] + ["--quick"] * args.quick
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["peak"] - report["before"]


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_case(case: Case, methods: list[str], args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    rows = []
    for method in methods:
        ours_seconds = captum_seconds = ours_peak = captum_peak = None
        if not args.skip_timing:
            torch.manual_seed(0)
            ours_seconds, ours_peak = measure(ours_call(method, case), args.repeats, args.warmup, device)
            torch.manual_seed(0)
            captum_seconds, captum_peak = measure(
                captum_call(method, case, case.images, case.mask), args.repeats, args.warmup, device
            )
        if args.cpu_memory and device.type == "cpu":
            ours_peak = cpu_memory(case.name, method, "ours", args)
            captum_peak = cpu_memory(case.name, method, "captum", args)
        times = (
            ["-"] * 3
            if ours_seconds is None
            else [f"{ours_seconds:.3f}", f"{captum_seconds:.3f}", f"{ours_seconds / captum_seconds:.2f}x"]
        )
        rows.append([case.name, method, *times, _gib(ours_peak), _gib(captum_peak), "<= 1.10x"])  # fmt: skip
    return rows


def windows_sum(case: Case, method: str, roi_size: int, overlap: float, device: torch.device) -> Callable[[], None]:
    """Captum directly on each window's crop (the windows MONAI's sliding window runs), one after the other."""
    from monai.data.utils import dense_patch_slices

    spatial = tuple(case.images.shape[2:])
    interval = tuple(max(int(roi_size * (1 - overlap)), 1) if roi_size < size else size for size in spatial)
    slices = dense_patch_slices(spatial, (roi_size,) * len(spatial), interval)
    crops = [(slice(None), slice(None), *window) for window in slices]
    calls = [captum_call(method, case, case.images[crop], case.mask[crop]) for crop in crops if case.mask[crop].any()]

    def run() -> None:
        for call in calls:
            call()

    return run


def sliding_window_rows(args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    """Our sliding-window attribution of a volume 1.5 windows wide per dim vs the sum of the windows through Captum
    (Integrated Gradients and Saliency, those of them in ``--methods``)."""
    rows = []
    quick = args.quick
    roi = 32 if quick else 96
    case = build_case("unet3d", quick, device)
    size = roi * 3 // 2
    case.images = torch.randn(1, 1, size, size, size, device=device)
    case.mask = _box(size, device)
    for method in [method for method in ("integrated_gradients", "saliency") if method in args.methods]:
        ours, _ = measure(ours_call(method, case, roi_size=roi), args.repeats, args.warmup, device)
        summed, _ = measure(windows_sum(case, method, roi, 0.25, device), args.repeats, args.warmup, device)
        rows.append(
            [f"unet3d {size}^3, windows {roi}^3", f"{method} (sliding window)", f"{ours:.3f}", f"{summed:.3f}",
             f"{ours / summed:.2f}x", "-", "-", "<= 1.2x (windows' sum)"]
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script runs, not the goals")
    parser.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--cpu-memory", action="store_true", help="on the CPU, peak RSS of each call in a child")
    parser.add_argument("--skip-timing", action="store_true", help="with --cpu-memory: the memory columns only")
    parser.add_argument("--skip-sliding-window", action="store_true")
    parser.add_argument(
        "--swin-size", type=int, default=96, help="SwinUNETR's volume side (64 makes its multi-pass methods 3x cheaper)"
    )
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.quick, args.threads, args.swin_size)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, {args.threads} threads, median of {args.repeats} after "
        f"{args.warmup} warm-up{' (quick sizes)' if args.quick else ''}, SwinUNETR at {args.swin_size}^3\n"
    )
    header = ["case", "method", "ours (s)", "Captum (s)", "ratio", "ours peak (GiB)", "Captum peak (GiB)", "goal"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for name in args.cases:
        case = build_case(name, args.quick, device, args.swin_size)
        for row in run_case(case, args.methods, args, device):
            print("| " + " | ".join(row) + " |", flush=True)
        del case
    if not args.skip_sliding_window:
        for row in sliding_window_rows(args, device):
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
