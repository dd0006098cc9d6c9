"""Speed and memory of the CAM engine, side by side in one process, printed as a Markdown table with ratios.

Measured per case (2D ResNet50 classifier, 3D MONAI UNet with a segmentation target, 3D MONAI DenseNet121, and the
transformers: torchvision ViT-B/16 at 224^2, batch 8, explained at its last block's first LayerNorm (tokens with a
class token), and MONAI SwinUNETR at 96^3 with a segmentation target, explained at a Swin block (channel-last)):

- each gradient method through ``CAMExplainer`` vs a plain forward + backward of the same network, same target score
  (``target(model(x)).sum().backward()``, parameter gradients included; goal <= 1.10x);
- six gradient methods in ONE ``CAMExplainer`` call vs the same six pytorch-grad-cam classes, given the equivalent
  ``reshape_transform`` for the transformers (goal >= 5x faster);
- ``gradcam`` vs ``monai.visualize.GradCAM`` (whole-image class score for the UNet: MONAI has no pixel-set target;
  not for the transformers, which MONAI's GradCAM cannot explain).

And the peak resident memory of a sliding-window CAM of a 1x1x256x256x160 volume with a 96^3 ROI (goal <= 4 GiB on the
CPU), measured as the peak RSS (VmHWM) of a child process that only builds the UNet, the volume and runs the explainer.

Times are medians of ``--repeats`` runs after ``--warmup`` runs (``time.perf_counter``, CUDA synchronised). Networks
have random weights (nothing is downloaded). Full sizes take many minutes on a CPU; ``--quick`` runs tiny sizes without
warm-up as a smoke test of the script itself (its numbers say nothing about the goals).

Usage::

    python benchmarks/cams.py                 # full sizes, all cases
    python benchmarks/cams.py --quick         # tiny sizes
    python benchmarks/cams.py --cases unet3d --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

SIX_METHODS = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "gradcam_elementwise")
GRAD_CAM_CLASS_NAMES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "gradcam_elementwise": "GradCAMElementWise",
}
CASE_NAMES = ("resnet50_2d", "unet3d", "densenet121_3d", "vit_b16_2d", "swinunetr_3d")


@dataclass
class Case:
    """A network, the layer to explain, a batch, and the target: a class (classifier) or a class over a pixel set."""

    name: str
    model: nn.Module
    layer: str
    images: torch.Tensor
    class_idx: int
    pixel_set: torch.Tensor | None = None  # (B, 1, *spatial) for segmentation, None for classification
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None  # pytorch-grad-cam's reshape_transform


def _unet() -> nn.Module:
    from monai.networks.nets import UNet

    # the spleen_ct_segmentation bundle's network
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def build_case(name: str, quick: bool, device: torch.device, size: int | None = None) -> Case:
    """The case ``name`` at full or quick sizes; ``size`` replaces the UNet's 96^3 (the shared-machine benchmark's
    64^3)."""
    if name == "resnet50_2d":
        from torchvision.models import resnet50

        batch, size = (2, 64) if quick else (8, 224)
        model, layer, images = resnet50(weights=None), "layer4", torch.randn(batch, 3, size, size)
        return Case(name, model.to(device).eval(), layer, images.to(device), class_idx=1)
    if name == "unet3d":
        batch, size = (1, 32) if quick else (2, size or 96)
        images = torch.randn(batch, 1, size, size, size)
        mask = torch.zeros(batch, 1, size, size, size)
        mask[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3, size // 4 : 3 * size // 4] = 1  # a "ground truth"
        return Case(name, _unet().to(device).eval(), "model.1.submodule", images.to(device), 1, mask.to(device))
    if name == "densenet121_3d":
        from monai.networks.nets import DenseNet121

        batch, size = (1, 32) if quick else (2, 96)
        model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
        images = torch.randn(batch, 1, size, size, size)
        return Case(name, model.to(device).eval(), "class_layers.relu", images.to(device), class_idx=1)
    if name == "vit_b16_2d":
        from torchvision.models import VisionTransformer, vit_b_16

        batch, size, patch = (2, 32, 8) if quick else (8, 224, 16)
        if quick:
            model = VisionTransformer(size, patch, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        else:
            model = vit_b_16(weights=None)
        grid = size // patch
        layer = f"encoder.layers.encoder_layer_{len(model.encoder.layers) - 1}.ln_1"
        images = torch.randn(batch, 3, size, size)

        def tokens(x: torch.Tensor) -> torch.Tensor:
            return x[:, 1:].reshape(x.shape[0], grid, grid, x.shape[2]).permute(0, 3, 1, 2)

        return Case(name, model.to(device).eval(), layer, images.to(device), 1, reshape=tokens)
    if name == "swinunetr_3d":
        from monai.networks.nets import SwinUNETR

        size, features = (64, 12) if quick else (96, 48)
        model = SwinUNETR(in_channels=1, out_channels=2, feature_size=features, spatial_dims=3)
        images = torch.randn(1, 1, size, size, size)
        mask = torch.zeros(1, 1, size, size, size)
        mask[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3, size // 4 : 3 * size // 4] = 1
        layer = "swinViT.layers3.0.blocks.1"
        return Case(
            name,
            model.to(device).eval(),
            layer,
            images.to(device),
            1,
            mask.to(device),
            lambda x: x.permute(0, 4, 1, 2, 3),
        )
    raise ValueError(f"unknown case {name!r}; choose from {CASE_NAMES}.")


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _our_target(case: Case, outputs: torch.Tensor):
    from monai_xai.cams import build_target

    return build_target(outputs, case.class_idx, case.pixel_set, warn_empty=False)


def forward_backward(case: Case) -> Callable[[], None]:
    """A plain forward + backward of the target score (what any gradient method must at least cost)."""

    def run() -> None:
        case.model.zero_grad(set_to_none=True)
        outputs = case.model(case.images)
        _our_target(case, outputs)(outputs).sum().backward()

    return run


def ours(case: Case, methods: tuple[str, ...]) -> Callable[[], object]:
    from monai_xai.cams import CAMExplainer

    explainer = CAMExplainer(case.model, case.layer, methods)
    return lambda: explainer(case.images, class_idx=case.class_idx, pixel_set=case.pixel_set)


def grad_cam_six(case: Case) -> Callable[[], None]:
    """The six pytorch-grad-cam classes, one call each (each runs its own forward and backward); each object is released
    before the next is built, so only one holds activations at a time (SwinUNETR at 96^3 needs it on 24 GiB)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    module = case.model.get_submodule(case.layer)
    if case.pixel_set is None:
        targets = [ClassifierOutputTarget(case.class_idx)] * case.images.shape[0]
    else:
        masks = case.pixel_set[:, 0].cpu().numpy()
        targets = [SemanticSegmentationTarget(case.class_idx, mask) for mask in masks]

    def run() -> None:
        for method in SIX_METHODS:
            cam_class = getattr(pytorch_grad_cam, GRAD_CAM_CLASS_NAMES[method])
            cam = cam_class(model=case.model, target_layers=[module], reshape_transform=case.reshape)
            try:
                cam(case.images, targets)
            finally:
                cam.activations_and_grads.release()

    return run


def monai_gradcam(case: Case) -> Callable[[], object]:
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=case.model, target_layers=case.layer)
    return lambda: cam(case.images, class_idx=case.class_idx)


def _row(case: Case, measured: str, seconds: float, reference: str, reference_seconds: float, ratio: str, goal: str):
    return [case.name, measured, f"{seconds:.3f}", reference, f"{reference_seconds:.3f}", ratio, goal]


def run_case(case: Case, repeats: int, warmup: int, device: torch.device, methods: tuple[str, ...]) -> list[list[str]]:
    """Table rows: case, measured, time, reference, reference time, ratio, goal."""
    rows = []
    baseline = median_time(forward_backward(case), repeats, warmup, device)
    seconds = {method: median_time(ours(case, (method,)), repeats, warmup, device) for method in methods}
    for method in methods:
        ratio = f"{seconds[method] / baseline:.2f}x"
        rows.append(_row(case, method, seconds[method], "forward+backward", baseline, ratio, "<= 1.10x"))
    six = median_time(ours(case, SIX_METHODS), repeats, warmup, device)
    grad_cam = median_time(grad_cam_six(case), repeats, warmup, device)
    speedup = f"{grad_cam / six:.1f}x faster"
    rows.append(_row(case, "6 methods, one call", six, "pytorch-grad-cam, 6 calls", grad_cam, speedup, ">= 5x faster"))
    if case.reshape is not None:  # monai.visualize cannot explain transformer layers
        return rows
    monai = median_time(monai_gradcam(case), repeats, warmup, device)
    speedup = f"{monai / seconds['gradcam']:.2f}x faster"
    rows.append(_row(case, "gradcam", seconds["gradcam"], "monai.visualize.GradCAM", monai, speedup, "-"))
    return rows


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM) in KiB.

    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec, so a child started by a process
    that already used 7 GiB reports 7 GiB before doing anything. VmHWM belongs to the address space that exec creates.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no procfs (not Linux): best available


def sliding_window_child(quick: bool, threads: int) -> None:
    """Runs in a fresh process: prints JSON with the peak RSS (KiB) before and after one sliding-window CAM call."""
    from monai_xai.cams import CAMExplainer

    torch.set_num_threads(threads)
    volume, roi = ((1, 1, 64, 64, 48), (32, 32, 32)) if quick else ((1, 1, 256, 256, 160), (96, 96, 96))
    model = _unet().eval()
    images = torch.randn(volume)
    before = _peak_rss_kib()
    start = time.perf_counter()
    explainer = CAMExplainer(model, "model.1.submodule", ("gradcam", "hirescam"), roi_size=roi, sw_batch_size=1)
    maps = explainer(images, class_idx=1, pixel_set="pred")
    seconds = time.perf_counter() - start
    after = _peak_rss_kib()
    assert maps["hirescam"].shape == images.shape
    print(json.dumps({"volume": volume, "roi": roi, "before_kib": before, "peak_kib": after, "seconds": seconds}))


def sliding_window_memory(quick: bool, threads: int) -> list[str]:
    command = [sys.executable, __file__, "--sliding-window-child", "--threads", str(threads)] + (["--quick"] * quick)
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    peak_gib, before_gib = report["peak_kib"] / 2**20, report["before_kib"] / 2**20
    volume = "x".join(map(str, report["volume"]))
    roi = "x".join(map(str, report["roi"]))
    return [
        f"unet3d sliding window {volume}, roi {roi}",
        "peak RSS (GiB)",
        f"{peak_gib:.2f}",
        "RSS before the call (GiB)",
        f"{before_gib:.2f}",
        f"{report['seconds']:.1f} s",
        "<= 4 GiB",
    ]


def print_header() -> None:
    header = ["case", "measured", "time (s)", "reference", "reference (s)", "ratio", "goal"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)


def print_rows(rows: list[list[str]]) -> None:
    """Rows as they are measured, so a long run that is stopped keeps what it measured."""
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs, not the goals")
    parser.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES))
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3; quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs before timing (default 1; quick 0)")
    parser.add_argument("--device", default="cpu", help="device of the timing cases (memory is always on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the thread policy)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the sliding-window memory measurement")
    parser.add_argument("--sliding-window-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.sliding_window_child:
        sliding_window_child(args.quick, args.threads)
        return
    from monai_xai.cams import GRADIENT_METHODS
    from monai_xai.threads import apply_thread_policy

    threads = apply_thread_policy(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    print(
        f"torch {torch.__version__}, device {device}, {threads}, median of {repeats} after "
        f"{warmup} warm-up{' (quick sizes)' if args.quick else ''}\n"
    )
    print_header()
    for name in args.cases:
        case = build_case(name, args.quick, device)
        print_rows(run_case(case, repeats, warmup, device, tuple(GRADIENT_METHODS)))
        del case
    if not args.skip_memory:
        print_rows([sliding_window_memory(args.quick, threads.num_threads)])


if __name__ == "__main__":
    main()
