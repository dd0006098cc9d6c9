"""Overhead of the ``monai-xai study`` runner over the CAM and metric computations it runs, side by side in one process.

Both sides do the same work on the same spec and the same cases: the demo study's two phantom bundles
(``configs/studies/demo_phantoms.json``: DenseNet classifier at two layers of its dense block, UNet segmenter at
``model.1.submodule``), the first ``--cases`` of its 18 test phantoms in batches of ``--batch-size``, methods
gradcam, gradcampp, xgradcam, layercam, eigengradcam, metrics heat_diff, iou (Otsu), pointing_game (tolerance 3),
road_combined (50 %) and deletion (16 steps). Each side loads its bundles with ``load_trained_bundle``.

- ``plain loop``: what one would write by hand: per bundle, per batch of cases loaded with the bundle's preprocessing
  (``case_batches``), one forward for the explained class, then per (layer, method) one ``CAMExplainer`` call and the
  study's metrics built from the catalogue (``monai_xai.metrics.METRICS``) with the study's arguments; values kept in
  a Python list.
- ``study``: ``run_study(spec, progress=False, report=False)`` into a fresh output folder: the same computation plus
  the SQLite row store, the per-map timing, the per-batch seeding, the case table and the resume bookkeeping. IoU
  uses Otsu thresholds and the sanity check is off, so there is no tuning or randomisation pass. The phantom cases
  are written once before any timing and copied into each fresh folder untimed (``ensure_phantom_dataset`` reuses a
  folder that holds the same data set), so no timed run generates data.

Goal (the issue): the study costs at most 15 % more than the plain loop. Besides the end-to-end ratio, timers on
``CAMExplainer.__call__`` and ``CumulativeIterationMetric.__call__`` give each side's time outside the CAM and metric
calls (loading, forwards and, for the study, its bookkeeping); their difference is the runner's overhead without the
run-to-run noise of the CAM and metric work, which on a shared CPU is larger than the overhead. The row-store calls,
the output folder's preparation and the seeding of the random streams are also timed on their own. The report
(``write_report``: CSV tables, statistics, plots, Markdown) and MLflow tracking (``track_study``, a local SQLite
store) run once per study, not per case; they are timed separately on the study's rows.

ROAD keeps one percentile: with the demo's three, its imputation is about 90 % of the whole computation, which would
hide any fixed cost of the runner; a cheaper computation is the stricter test.

Times are medians of ``--repeats`` runs after an untimed warm-up of each side on the first batch; in each repeat the
two sides run one after the other, their order alternating. The script also checks that both sides computed the same
values (every metric but ROAD, whose imputation noise the study seeds per batch). ``--quick`` runs a tiny study
(3 cases, 2 methods, 2 cheap metrics, 1 repeat) as a smoke test of the script; its numbers say nothing about the goal.

Threads follow monai-xai's policy (:mod:`monai_xai.threads`: one per usable CPU that other processes leave free)
unless ``--threads`` fixes them.

Usage::

    python benchmarks/study.py                   # 12 cases, 5 methods, 5 metrics (a few minutes on a 2-core CPU)
    python benchmarks/study.py --quick
    python benchmarks/study.py --cases 18 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai.metrics import CumulativeIterationMetric  # noqa: E402

from monai_xai.bundle import load_trained_bundle  # noqa: E402
from monai_xai.cams import CAMExplainer  # noqa: E402
from monai_xai.enums import OTSU, IoUThresholdMode, MetricInput  # noqa: E402
from monai_xai.metrics import SECONDS, get_metric, region_mask  # noqa: E402
from monai_xai.study import StudySpec, StudyStore, load_study, run_study, study_store  # noqa: E402
from monai_xai.study import runner as study_runner  # noqa: E402
from monai_xai.study.cases import StudyCase, batch_indices, case_batches, study_cases  # noqa: E402
from monai_xai.threads import apply_thread_policy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_STUDY = REPO / "configs" / "studies" / "demo_phantoms.json"
GOAL = 0.15

METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "eigengradcam")
METRICS = ("heat_diff", "iou", "pointing_game", "road_combined", "deletion")
METRIC_ARGS = {
    "road_combined": {"percentiles": [50]},
    "deletion": {"steps": 16},
    "pointing_game": {"tolerance": 3},
}
QUICK_METHODS = ("gradcam", "layercam")
QUICK_METRICS = ("heat_diff", "pointing_game")


def build_spec(output_dir: Path, args: argparse.Namespace) -> StudySpec:
    """The demo study with the benchmark's methods, metrics and cases; Otsu IoU, no sanity check."""
    methods, metrics = (QUICK_METHODS, QUICK_METRICS) if args.quick else (METHODS, METRICS)
    return load_study(
        DEMO_STUDY,
        output_dir=str(output_dir),
        data={
            # the demo study's phantoms: 24 cases, 6 validation (unused here) and 18 test cases
            "phantom": {"n_cases": 24, "seed": 4242, "positive_fraction": 0.5, "split": [0.0, 0.25, 0.75]},
            "data_list_key": "test",
            "validation_key": "validation",
            "n_cases": args.cases,
        },
        methods=list(methods),
        metrics=list(metrics),
        metric_args={metric: value for metric, value in METRIC_ARGS.items() if metric in metrics},
        iou_threshold={"mode": "otsu"},
        sanity=False,
        batch_size=args.batch_size,
        device=args.device,
    )


# --- the plain loop


def _metric_fns(spec: StudySpec, bundle, network: torch.nn.Module) -> dict[str, Any]:
    """The study's metrics for one bundle, built from the catalogue with the study's arguments."""
    fns = {}
    for metric in spec.metrics:
        args = dict(spec.metric_args.get(metric, {}))
        if metric == "iou":
            args = {"threshold": OTSU if spec.iou_mode == IoUThresholdMode.OTSU else spec.iou_value}
        fns[metric] = get_metric(metric).create(network, bundle.score, **args)
    return fns


def plain_loop(spec: StudySpec, cases: list[StudyCase]) -> list[tuple[str, str, str, str, str, float]]:
    """The study's computation written by hand: ``(bundle, layer, method, case_id, metric, value)`` rows in a list."""
    device = torch.device(spec.device or "cpu")
    rows = []
    torch.manual_seed(spec.seed)
    for bundle in spec.bundles:
        trained = load_trained_bundle(bundle.path, device)
        network = trained.network
        explainers = {
            (layer, method): CAMExplainer(network, layer, [method], score=bundle.score)
            for layer in bundle.layers
            for method in spec.methods
        }
        metric_fns = _metric_fns(spec, bundle, network)
        batches = batch_indices(len(cases), spec.batch_size)
        for batch in case_batches(cases, batches, trained.preprocessing, bundle.region_key, device):
            with torch.no_grad():
                outputs = network(batch.images)
            if bundle.class_idx is None:
                explained = outputs.argmax(dim=1)
            else:
                explained = torch.full((outputs.shape[0],), bundle.class_idx, device=device)
            region = region_mask(batch.labels, explained, bundle.region_value)
            ids = [case.case_id for case in batch.cases]
            for (layer, method), explainer in explainers.items():
                maps = explainer(batch.images, class_idx=explained, pixel_set=bundle.pixel_set)[method]
                for metric, fn in metric_fns.items():
                    if get_metric(metric).compares_with == MetricInput.REGION:
                        values = fn(y_pred=maps, y=region)
                    else:
                        values = fn(y_pred=maps, y=batch.images, class_idx=explained, pixel_set=bundle.pixel_set)
                    fn.reset()
                    column = torch.as_tensor(values).reshape(len(ids), -1)[:, -1].double().cpu().tolist()
                    rows += [(bundle.name, layer, method, case_id, metric, v) for case_id, v in zip(ids, column)]
    return rows


# --- the study


class Meter:
    """Wall time, while installed, spent in (i) the computation both sides share: every ``CAMExplainer`` call and every
    metric call (``CumulativeIterationMetric.__call__``), and (ii) the runner's own bookkeeping: every row-store call
    (SQLite queries, inserts, commits, opening), the output folder's preparation and the per-batch seeding of the random
    streams. A timed call inside another (the store opened by the output folder's preparation) is counted once. Both
    sides run under a meter, so the timers' own cost is the same on both."""

    STORE_METHODS = ("__init__", "close", "missing", "add_scores", "add_cases", "threshold", "sanity_missing")

    def __init__(self) -> None:
        self.seconds = {"computation": 0.0, "bookkeeping": 0.0}
        self._depth = 0
        self._saved: list[tuple[object, str, object]] = []

    def _timed(self, function: Callable, kind: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - start
                self._depth -= 1

        return wrapper

    def _timed_context(self, factory: Callable, kind: str) -> Callable:
        """Times entering and leaving the context, not its body."""

        @contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[None]:
            start = time.perf_counter()
            context = factory(*args, **kwargs)
            context.__enter__()
            self.seconds[kind] += time.perf_counter() - start
            try:
                yield
            finally:
                start = time.perf_counter()
                context.__exit__(None, None, None)
                self.seconds[kind] += time.perf_counter() - start

        return wrapper

    def __enter__(self) -> Meter:
        self._patch(CAMExplainer, "__call__", self._timed(CAMExplainer.__call__, "computation"))
        call = CumulativeIterationMetric.__call__
        self._patch(CumulativeIterationMetric, "__call__", self._timed(call, "computation"))
        for name in self.STORE_METHODS:
            self._patch(StudyStore, name, self._timed(getattr(StudyStore, name), "bookkeeping"))
        self._patch(study_runner, "_prepare_output", self._timed(study_runner._prepare_output, "bookkeeping"))
        self._patch(study_runner, "_seeded", self._timed_context(study_runner._seeded, "bookkeeping"))
        return self

    def _patch(self, owner: object, name: str, value: object) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __exit__(self, *_: object) -> None:
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved.clear()


def fresh_output(spec: StudySpec, folder: Path, phantoms: Path) -> StudySpec:
    """``spec`` writing to the empty ``folder``, holding a copy of the phantom cases (so nothing regenerates them)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copytree(phantoms, folder / "phantoms")
    return dataclasses.replace(spec, output_dir=folder)


def stored_rows(spec: StudySpec) -> dict[tuple[str, str, str, str, str], float]:
    store = study_store(spec)
    try:
        frame = store.table("scores")
    finally:
        store.close()
    frame = frame[frame["metric"] != SECONDS]
    return {tuple(row[:5]): float(row[5]) for row in frame.itertuples(index=False)}


def compare(plain: list[tuple], study: dict[tuple, float]) -> tuple[int, float, float]:
    """(rows, largest |difference| outside ROAD, largest |difference| of ROAD) between the two sides' values."""
    plain_values = {row[:5]: row[5] for row in plain}
    if set(plain_values) != set(study):
        raise AssertionError(f"the two sides computed different rows: {len(plain_values)} vs {len(study)}.")
    exact, road = 0.0, 0.0
    for key, value in plain_values.items():
        other = study[key]
        if math.isnan(value) or math.isnan(other):
            if math.isnan(value) != math.isnan(other):
                raise AssertionError(f"{key}: NaN on one side only ({value} vs {other}).")
            continue
        if key[4].startswith("road_"):
            road = max(road, abs(value - other))
        else:
            exact = max(exact, abs(value - other))
    return len(plain_values), exact, road


def timed(run: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Wall time of ``run(*args)`` and its result."""
    start = time.perf_counter()
    result = run(*args)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12, help="test cases (the demo phantoms have 18)")
    parser.add_argument("--batch-size", type=int, default=6, help="cases per batch (the demo study's 6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the thread policy)")
    parser.add_argument("--work-dir", type=Path, default=None, help="folder for the studies (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="a tiny study: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.batch_size, args.repeats = 3, 2, 1
    threads = apply_thread_policy(args.threads)
    temporary = None if args.work_dir else tempfile.TemporaryDirectory(prefix="monai-xai-study-bench-")
    work = Path(args.work_dir or temporary.name).resolve()
    try:
        rows = run_benchmark(args, work)
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(f"\ndevice {args.device}, torch {torch.__version__}, {threads}, quick={args.quick}\n")
    print("| measured | time (s) | reference | reference (s) | ratio | goal |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def run_benchmark(args: argparse.Namespace, work: Path) -> list[tuple[str, ...]]:
    from monai_xai.study.report import write_report
    from monai_xai.study.tracking import track_study

    base = build_spec(work / "base", args)
    cases = study_cases(base.data, Path(base.output_dir))  # writes the phantom cases once, untimed
    phantoms = Path(base.output_dir) / "phantoms"
    n_maps = len(cases) * sum(len(bundle.layers) for bundle in base.bundles) * len(base.methods)
    print(
        f"{len(cases)} cases x {sum(len(b.layers) for b in base.bundles)} (bundle, layer) x {len(base.methods)} "
        f"methods = {n_maps} maps, metrics {list(base.metrics)}, batch size {base.batch_size}",
        flush=True,
    )

    def study_run(spec: StudySpec, folder: Path) -> tuple[float, Meter, StudySpec]:
        spec = fresh_output(spec, folder, phantoms)
        with Meter() as meter:
            seconds, _ = timed(partial(run_study, progress=False, report=False), spec)
        return seconds, meter, spec

    def plain_run() -> tuple[float, Meter, list[tuple]]:
        with Meter() as meter:
            seconds, values = timed(plain_loop, base, cases)
        return seconds, meter, values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # warm-up on the first batch: first calls (lazy imports, allocator, thread pools) land in neither side
        first = min(base.batch_size, len(cases))
        plain_loop(base, cases[:first])
        study_run(dataclasses.replace(base, data=dataclasses.replace(base.data, n_cases=first)), work / "warm-up")
        times: dict[str, list[float]] = {
            key: [] for key in ("plain", "study", "plain_rest", "study_rest", "bookkeeping", "report", "tracking")
        }
        plain_values, spec = None, None
        for repeat in range(args.repeats):
            for side in ("plain", "study") if repeat % 2 == 0 else ("study", "plain"):
                if side == "plain":
                    seconds, meter, plain_values = plain_run()
                else:
                    seconds, meter, spec = study_run(base, work / f"study-{repeat}")
                    times["bookkeeping"].append(meter.seconds["bookkeeping"])
                times[side].append(seconds)
                times[f"{side}_rest"].append(seconds - meter.seconds["computation"])
                print(
                    f"repeat {repeat}: {side} {seconds:.2f} s, of which {seconds - meter.seconds['computation']:.2f} s "
                    "outside the CAM and metric calls",
                    flush=True,
                )
            print(
                f"repeat {repeat}: study / plain - 1 = {times['study'][-1] / times['plain'][-1] - 1:+.1%}", flush=True
            )
            seconds, folder = timed(write_report, spec)
            times["report"].append(seconds)
            seconds, _ = timed(track_study, spec, folder)
            times["tracking"].append(seconds)
    n_rows, largest, road = compare(plain_values, stored_rows(spec))
    print(
        f"same values: {n_rows} rows; largest difference {largest:.2e} (all metrics but ROAD), {road:.2e} (ROAD, "
        "noise seeded differently)"
    )
    median = {key: statistics.median(values) for key, values in times.items()}
    plain, study = median["plain"], median["study"]
    overhead = study / plain - 1
    rest = median["study_rest"] - median["plain_rest"]
    goal = f"<= +{GOAL:.0%}"
    return [
        (
            "study: run_study(report=False)",
            f"{study:.2f}",
            "plain loop",
            f"{plain:.2f}",
            f"{overhead:+.1%} overhead ({'met' if overhead <= GOAL else 'NOT met'})",
            goal,
        ),
        (
            "study: time outside the CAM and metric calls",
            f"{median['study_rest']:.2f}",
            "plain loop: the same",
            f"{median['plain_rest']:.2f}",
            f"{rest / plain:+.1%} of the plain loop ({'met' if rest / plain <= GOAL else 'NOT met'})",
            goal,
        ),
        (
            "study: row store, output folder, seeding",
            f"{median['bookkeeping']:.2f}",
            "plain loop",
            f"{plain:.2f}",
            f"{median['bookkeeping'] / plain:+.1%} of the plain loop",
            "-",
        ),
        ("per map (study)", f"{study / n_maps:.3f}", "per map (plain loop)", f"{plain / n_maps:.3f}", "", "-"),
        (
            "write_report (once per study)",
            f"{median['report']:.2f}",
            "plain loop",
            f"{plain:.2f}",
            f"{median['report'] / plain:.1%} of the plain loop",
            "-",
        ),
        (
            "track_study (once per study)",
            f"{median['tracking']:.2f}",
            "plain loop",
            f"{plain:.2f}",
            f"{median['tracking'] / plain:.1%} of the plain loop",
            "-",
        ),
    ]


if __name__ == "__main__":
    main()
