"""Shared machine: the same measurements alone on the CPU and next to a competing load, side by side, with ratios.

The competing load is one busy process (``while True: pass``) per usable CPU, started by this script before the
loaded run and stopped after it: a process running one thread per CPU next to it gets half the CPU (a proportional
slowdown is 2x). Goal (issue #30): every measured path takes at most 2.5x its idle time under that load.

Each measurement runs in a fresh child process that sets its threads as the ``monai-xai`` entry points do
(:func:`monai_xai.threads.apply_thread_policy`, which counts the CPUs other processes keep busy when it starts), unless
``--threads`` fixes the count for every run (e.g. ``--threads 2`` shows what the policy avoids). The idle and loaded
runs of a case follow each other, ``--rounds`` times (the table gives medians over the rounds), so a drift of the
machine's background load reaches both; the table gives the CPUs that other processes kept busy when each child
started (in the idle column: load that was not ours; the policy takes its thread count from the same sample).
``--wait-idle S`` holds each idle run until other processes use less than a quarter of a CPU, for at most S seconds.

Cases (``--cases``; times are medians of ``--repeats`` runs after ``--warmup`` untimed runs):

- ``impute``: ROAD's imputation of the 18 masks (MoRF + LeRF, 9 percentiles) of one 3x224x224 image,
  ``noisy_linear_impute`` vs pytorch-grad-cam's ``NoisyLinearImputer`` mask by mask (``benchmarks/road.py``).
- ``unet3d``: six gradient methods in one ``CAMExplainer`` call vs the six pytorch-grad-cam classes, MONAI UNet (the
  spleen bundle's network), 2x1x64^3, class 1 over a box (``benchmarks/cams.py``).
- ``vit_b16``: the same for torchvision ViT-B/16, 8x3x224^2, at the last block's first LayerNorm.
- ``road2d``: ``road_combined`` (9 percentiles x 2 orders) of ResNet50 on 4x3x224^2 vs pytorch-grad-cam's
  ``ROADCombined``.
- ``road3d``: ``road`` (MoRF, 9 percentiles) of MONAI DenseNet121 on 1x1x96^3 (pytorch-grad-cam cannot impute 3D).
- ``demo`` (only with ``--demo``): ``python -m monai_xai.cli demo`` end to end, wall time of the whole command
  (minutes; its threads are the CLI's own policy, ``--threads`` sets ``MONAI_XAI_NUM_THREADS`` for it).

``--quick`` shrinks every size as a smoke test of the script; its numbers say nothing about the goal.

Usage::

    python benchmarks/shared_machine.py                       # all cases but the demo, idle then loaded
    python benchmarks/shared_machine.py --demo --cases impute  # with the demo
    python benchmarks/shared_machine.py --threads 2           # the same with 2 threads forced everywhere
    python benchmarks/shared_machine.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path[:0] = [str(REPO), str(BENCHMARKS)]

import cams as cam_bench  # noqa: E402
import road as road_bench  # noqa: E402

from monai_xai.threads import NUM_THREADS_ENV, apply_thread_policy, busy_cpus, decide_num_threads, usable_cpus  # noqa: E402

CASE_NAMES = ("impute", "unet3d", "vit_b16", "road2d", "road3d")
GOAL = 2.5
# How long the competing processes run before a measurement starts (the scheduler spreads them over the CPUs).
_LOAD_SETTLE_SECONDS = 1.0
# --wait-idle: an idle run starts once other processes keep less than this many CPUs busy, polled this often
_IDLE_BELOW = 0.25
_IDLE_POLL_SECONDS = 10.0


def median_seconds(run: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones (CPU only)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_impute(quick: bool, repeats: int, warmup: int) -> dict[str, float]:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from monai_xai.metrics import noisy_linear_impute, removal_masks

    size = 64 if quick else 224
    cpu = torch.device("cpu")
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    saliency = road_bench.smooth_saliency(1, (size, size), cpu)
    removed = torch.cat([removal_masks(saliency, road_bench.PERCENTILES, order)[0] for order in ("morf", "lerf")])
    removed = removed[:, None]
    images = image.expand(removed.shape[0], -1, -1, -1)
    imputer, kept = NoisyLinearImputer(noise=0.01), (~removed[:, 0]).float()
    return {
        "monai-xai": median_seconds(lambda: noisy_linear_impute(images, removed, noise=0.01), repeats, warmup),
        "pytorch-grad-cam": median_seconds(lambda: [imputer(image[0], mask) for mask in kept], repeats, warmup),
    }


def measure_cams(name: str, quick: bool, repeats: int, warmup: int) -> dict[str, float]:
    case = cam_bench.build_case(name, quick, torch.device("cpu"), size=None if quick or name != "unet3d" else 64)
    return {
        "monai-xai": median_seconds(cam_bench.ours(case, cam_bench.SIX_METHODS), repeats, warmup),
        "pytorch-grad-cam": median_seconds(cam_bench.grad_cam_six(case), repeats, warmup),
    }


def measure_road2d(quick: bool, repeats: int, warmup: int) -> dict[str, float]:
    import torchvision
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from monai_xai.metrics import road_combined

    batch, size = (2, 64) if quick else (4, 224)
    model = torchvision.models.resnet50(weights=None).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    saliency = road_bench.smooth_saliency(batch, (size, size), torch.device("cpu"), seed=1)
    classes = [3] * batch
    reference = ROADCombined(percentiles=list(road_bench.PERCENTILES))
    cams = saliency[:, 0].numpy()
    targets = [ClassifierOutputTarget(index) for index in classes]
    return {
        "monai-xai": median_seconds(
            lambda: road_combined(model, images, saliency, classes, road_bench.PERCENTILES), repeats, warmup
        ),
        "pytorch-grad-cam": median_seconds(lambda: reference(images, cams, targets, model), repeats, warmup),
    }


def measure_road3d(quick: bool, repeats: int, warmup: int) -> dict[str, float]:
    from monai.networks.nets import DenseNet121

    from monai_xai.metrics import road

    size = 32 if quick else 96
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    images = torch.rand(1, 1, size, size, size, generator=torch.Generator().manual_seed(2))
    saliency = road_bench.smooth_saliency(1, (size,) * 3, torch.device("cpu"), seed=2)
    return {
        "monai-xai": median_seconds(
            lambda: road(model, images, saliency, 1, road_bench.PERCENTILES, order="morf"), repeats, warmup
        )
    }


MEASUREMENTS: dict[str, Callable[[bool, int, int], dict[str, float]]] = {
    "impute": measure_impute,
    "unet3d": lambda quick, repeats, warmup: measure_cams("unet3d", quick, repeats, warmup),
    "vit_b16": lambda quick, repeats, warmup: measure_cams("vit_b16_2d", quick, repeats, warmup),
    "road2d": measure_road2d,
    "road3d": measure_road3d,
}


def child(case: str, threads: int | None, quick: bool, repeats: int, warmup: int) -> None:
    """Runs in a fresh process: the thread policy, then one case; prints one JSON line."""
    decision = apply_thread_policy(threads)
    busy = decision.busy_cpus if decision.busy_cpus is not None else busy_cpus()
    torch.manual_seed(0)
    seconds = MEASUREMENTS[case](quick, repeats, warmup)
    print(json.dumps({"threads": decision.num_threads, "busy_cpus": busy, "seconds": seconds}))


def wait_for_idle(max_seconds: float) -> float | None:
    """Wait until other processes keep less than a quarter of a CPU busy (sampled over a second), at most
    ``max_seconds``; returns the last sample (None without ``/proc/stat``)."""
    deadline = time.monotonic() + max_seconds
    busy = busy_cpus(1.0)
    while busy is not None and busy >= _IDLE_BELOW and time.monotonic() < deadline:
        time.sleep(_IDLE_POLL_SECONDS)
        busy = busy_cpus(1.0)
    return busy


@contextmanager
def competing_load(processes: int) -> Iterator[None]:
    """``processes`` busy Python processes for the duration of the block, stopped (by their pids) afterwards."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(_LOAD_SETTLE_SECONDS)
        yield
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()


def run_child(case: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", case, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)] * (args.threads is not None) + ["--quick"] * args.quick
    finished = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    if finished.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def run_demo(args: argparse.Namespace) -> dict:
    """``python -m monai_xai.cli demo`` into a temporary folder; the wall time of the whole command."""
    env = _child_env()
    if args.threads is not None:
        env[NUM_THREADS_ENV] = str(args.threads)
    extra = ["--cases", "2", "--methods", "['gradcam']"] if args.quick else []
    decision = decide_num_threads(environ=env)  # what the command will decide a few seconds later, at its start
    with tempfile.TemporaryDirectory(prefix="monai-xai-demo-") as folder:
        start = time.perf_counter()
        finished = subprocess.run(
            [sys.executable, "-m", "monai_xai.cli", "demo", "--output_dir", folder, *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"demo failed:\n{finished.stderr[-3000:]}")
    busy = decision.busy_cpus if decision.busy_cpus is not None else busy_cpus()
    return {"threads": decision.num_threads, "busy_cpus": busy, "seconds": {"monai-xai": seconds}}


def _child_env() -> dict[str, str]:
    """This environment with the repository importable and no inherited thread settings (the policy decides)."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", NUM_THREADS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _threads(rounds: list[dict]) -> str:
    """Torch threads the runs chose, with the median of the CPUs other processes kept busy at their start."""
    counts = "/".join(str(count) for count in sorted({run["threads"] for run in rounds}))
    busy = [run["busy_cpus"] for run in rounds if run["busy_cpus"] is not None]
    return f"{counts} ({statistics.median(busy):.1f} busy)" if busy else counts


def _seconds(rounds: list[dict], side: str) -> float:
    return statistics.median(run["seconds"][side] for run in rounds)


def table(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Markdown rows: every measured side idle and loaded (medians over the rounds), then monai-xai's speed-up over
    pytorch-grad-cam in both."""
    lines = [
        "| case | measured | threads idle | threads loaded | idle (s) | loaded (s) | loaded / idle | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, modes in results.items():
        idle, loaded = modes["idle"], modes["loaded"]
        for side in idle[0]["seconds"]:
            ratio = _seconds(loaded, side) / _seconds(idle, side)
            goal = f"<= {GOAL}x ({'met' if ratio <= GOAL else 'missed'})" if side == "monai-xai" else "-"
            lines.append(
                f"| {case} | {side} | {_threads(idle)} | {_threads(loaded)} | {_seconds(idle, side):.2f} | "
                f"{_seconds(loaded, side):.2f} | {ratio:.2f}x | {goal} |"
            )
    compared = [case for case, modes in results.items() if "pytorch-grad-cam" in modes["idle"][0]["seconds"]]
    if compared:
        lines += ["", "| case | pytorch-grad-cam / monai-xai, idle | pytorch-grad-cam / monai-xai, loaded |"]
        lines.append("|---|---|---|")
        for case in compared:
            speedups = [
                _seconds(results[case][mode], "pytorch-grad-cam") / _seconds(results[case][mode], "monai-xai")
                for mode in ("idle", "loaded")
            ]
            lines.append(f"| {case} | {speedups[0]:.1f}x faster | {speedups[1]:.1f}x faster |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", choices=CASE_NAMES, default=list(CASE_NAMES))
    parser.add_argument("--demo", action="store_true", help="also time `monai-xai demo` (minutes per mode)")
    parser.add_argument("--threads", type=int, default=None, help="fix torch threads (default: the thread policy)")
    parser.add_argument("--load", type=int, default=None, help="competing busy processes (default: usable CPUs)")
    parser.add_argument("--rounds", type=int, default=1, help="idle-then-loaded pairs per case (medians over them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--wait-idle", type=float, default=0, help="before each idle run wait up to this many seconds for an idle CPU"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--child", choices=CASE_NAMES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 1, 0
    if args.child:
        child(args.child, args.threads, args.quick, args.repeats, args.warmup)
        return
    # a terminated run stops its competing load and its running child too (the with-blocks' clean-up)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"terminated (signal {signum})"))
    load = args.load or usable_cpus()
    runs = [(case, lambda case=case: run_child(case, args)) for case in args.cases]
    if args.demo:
        runs.append(("demo", lambda: run_demo(args)))
    print(
        f"torch {torch.__version__}, {usable_cpus()} usable CPUs, competing load: {load} busy processes, "
        f"threads: {args.threads or 'policy'}, median of {args.repeats} after {args.warmup} warm-up, "
        f"{args.rounds} round(s){' (quick sizes)' if args.quick else ''}",
        flush=True,
    )
    results: dict[str, dict[str, list[dict]]] = {}
    for case, run in runs:
        results[case] = {"idle": [], "loaded": []}
        for _ in range(args.rounds):
            if args.wait_idle:
                busy = wait_for_idle(args.wait_idle)
                print(f"{case}: idle run starts with {busy} CPUs busy", flush=True)
            results[case]["idle"].append(run())
            with competing_load(load):
                results[case]["loaded"].append(run())
            print(f"{case}: idle {json.dumps(results[case]['idle'][-1])}", flush=True)
            print(f"{case}: loaded {json.dumps(results[case]['loaded'][-1])}", flush=True)
    print("\n" + "\n".join(table(results)))


if __name__ == "__main__":
    main()
