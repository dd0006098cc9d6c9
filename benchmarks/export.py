"""Latency of the exported model that returns its map (``monai_xai.export``) against the plain exported network,
on the demo bundles, CPU, batch 1, as a Markdown table.

For each demo bundle (its trained weights, its explanation settings: layer, score, pixel set) and each method:

- **TorchScript**: ``torch.jit.trace`` of the network (plain) vs :func:`~monai_xai.export.export_torchscript` of
  :func:`~monai_xai.export.explained_graph` (prediction + map), both run under ``torch.inference_mode``;
- **ONNX Runtime**: ``torch.onnx.export`` of the network (plain) vs :func:`~monai_xai.export.export_onnx`, both run by
  onnxruntime's CPU provider.

The overhead is (explained - plain) / plain of the medians of ``--repeats`` calls, plain and explained interleaved
(so load from other processes hits both alike), after ``--warmup`` calls each. Threads: ``--threads`` for torch and
onnxruntime alike (default 1).

Usage::

    python benchmarks/export.py                    # both demo bundles, hirescam and gradcam
    python benchmarks/export.py --repeats 50 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from monai_xai.bundle.loading import load_trained_bundle
from monai_xai.data.phantom import generate_phantom
from monai_xai.export import explained_graph, export_onnx, export_torchscript

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
# bundle -> (layer, score, pixel set, explained class): the bundles' own configs/explain.json
DEMO_BUNDLES = {
    "lesion_classification_3d": ("class_layers.relu", "logit", None, -1),
    "lesion_segmentation_3d": ("model.1.submodule", "probability", "image", 1),
}


def _interleaved_medians(plain: Callable, explained: Callable, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds of each, measured alternately."""
    for _ in range(warmup):
        plain(), explained()
    times: dict[str, list[float]] = {"plain": [], "explained": []}
    for _ in range(repeats):
        for name, call in (("plain", plain), ("explained", explained)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["plain"]), statistics.median(times["explained"])


def _inference(module: torch.jit.ScriptModule, *inputs: torch.Tensor) -> None:
    with torch.inference_mode():
        module(*inputs)


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["hirescam", "gradcam"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.from_numpy(generate_phantom(seed=3, lesion=True).image.clip(0, 1))[None, None].float()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for bundle_name, (layer, score, pixel_set, class_idx) in DEMO_BUNDLES.items():
            network = load_trained_bundle(BUNDLES / bundle_name).network
            classes = torch.tensor([class_idx])
            with torch.no_grad():
                plain_script = torch.jit.trace(network, image, check_trace=False)
            plain_onnx = folder / f"{bundle_name}.onnx"
            torch.onnx.export(network, (image,), str(plain_onnx), dynamo=True, input_names=["image"], verbose=False)
            plain_session = _session(plain_onnx, args.threads)
            for method in args.methods:
                graph = explained_graph(network, image, layer, method, score, pixel_set)
                script = torch.jit.load(str(export_torchscript(graph, image, folder / f"{bundle_name}_{method}.pt")))
                session = _session(export_onnx(graph, image, folder / f"{bundle_name}_{method}.onnx"), args.threads)
                feeds = {"image": image.numpy(), "class_idx": classes.numpy().astype(np.int64)}

                for runtime, plain, explained in (
                    ("TorchScript", partial(_inference, plain_script, image),
                     partial(_inference, script, image, classes)),
                    ("ONNX Runtime", partial(plain_session.run, None, {"image": feeds["image"]}),
                     partial(session.run, None, feeds)),
                ):  # fmt: skip
                    plain_s, explained_s = _interleaved_medians(plain, explained, args.warmup, args.repeats)
                    rows.append((bundle_name, method, runtime, plain_s, explained_s))
    print(f"CPU, {args.threads} thread(s), batch 1 x 1 x 48^3, medians of {args.repeats} interleaved calls\n")
    print("| bundle | method | runtime | plain (ms) | with map (ms) | overhead |")
    print("|---|---|---|---|---|---|")
    for bundle_name, method, runtime, plain_s, explained_s in rows:
        overhead = (explained_s - plain_s) / plain_s
        times = f"{plain_s * 1e3:.1f} | {explained_s * 1e3:.1f}"
        print(f"| {bundle_name} | {method} | {runtime} | {times} | {overhead:+.0%} |")


if __name__ == "__main__":
    main()
