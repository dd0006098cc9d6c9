"""Run a study: every case x method x layer x bundle explained, timed and scored, each value stored when it exists.

:func:`run_study` is what ``monai-xai study <file>`` and ``python -m monai_xai.study <file>`` call. Under
``torchrun`` every rank takes its share of the batches (see :mod:`monai_xai.study.cases`) and writes to the same row
store; rank 0 waits for the others and writes the report. A killed study started again with the same file skips every
stored row, so it finishes with the tables one uninterrupted run would have made.

Per bundle the loop is: load a batch with the bundle's preprocessing, run the network once (the prediction and its
confidence for the case table), then per layer and method one timed explanation and the missing metrics of its maps.
An input attribution (Integrated Gradients, Occlusion, ...) explains no layer: it is computed and scored once per
batch and its rows are stored under every layer, so each layer's table compares the CAMs with it.
Metrics undefined for a case (an empty region, an empty pixel set) are stored as NaN and left out of the statistics.
After the scores, the first ``sanity.cases`` cases get the model-randomisation check of every layer and method, and the
first ``reliability.cases`` the metrics' reliability check: every metric on each method's map of a noisy copy of the
case and of the network with noisy weights (left out where the noise changes the prediction), on the random control's
map and on the randomised network's map (:mod:`monai_xai.sanity.metric_reliability`; the report compares them with
the stored scores).
A case that cannot be loaded (a truncated or missing file, a preprocessing error) costs only itself: it is stored
with its files and the underlying error, left out of the report (which lists it), and tried again on a resume.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from torch import nn
from tqdm import tqdm

from monai_xai.bundle import TrainedBundle, load_trained_bundle
from monai_xai.cams import ClassSet, get_method
from monai_xai.enums import IOU, OTSU, IoUThresholdMode, MetricInput
from monai_xai.explanation import ExplainStep, Explanation, class_probabilities, predicted_class
from monai_xai.handlers.saliency_writer import write_map
from monai_xai.metrics import SECONDS, get_metric, region_mask, saliency_iou
from monai_xai.naming import safe_stem
from monai_xai.sanity.metric_reliability import noisy_images, perturbed_weights, prediction_kept
from monai_xai.sanity.randomisation import model_randomisation_check, randomize_weights
from monai_xai.study.cases import CaseBatch, StudyCase, batch_indices, case_batches, case_stems, study_cases
from monai_xai.study.report import write_report
from monai_xai.study.spec import StudyBundle, StudySpec, load_study
from monai_xai.study.store import ROWS_FILE, StudyStore, study_store
from monai_xai.study.tracking import track_study

__all__ = ["MAPS_FOLDER", "run_study"]

# where a study writes its maps when asked (StudySpec.maps)
MAPS_FOLDER = "maps"
# the map that replaces each method's in the metrics' reliability check (an adversary: it ignores the network)
CONTROL = "control_random"

logger = logging.getLogger(__name__)


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the ``torchrun`` process group (gloo) when the environment names one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _device(spec: StudySpec) -> torch.device:
    if spec.device:
        return torch.device(spec.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _batch_seed(spec: StudySpec, *parts: object) -> int:
    """A seed for one batch's random streams, from the study seed and what the batch computes alone."""
    return zlib.crc32(repr((spec.seed, *parts)).encode())


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global random state (CPU and the device) and seed it; the caller's state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _quiet_undefined() -> Iterator[None]:
    """Undefined samples become NaN rows, which the report counts; the per-batch warnings would only repeat that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*samples skipped.*")
        warnings.filterwarnings("ignore", message=".*empty pixel set.*")
        yield


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _BundleRun:
    """Explain and score one bundle's cases (this rank's batches), each method at each layer through its own
    explanation step (one timed pass per method)."""

    def __init__(
        self, spec: StudySpec, bundle: StudyBundle, trained: TrainedBundle, store: StudyStore, stems: dict[str, str]
    ) -> None:
        self.spec, self.bundle, self.trained, self.store = spec, bundle, trained, store
        self.stems = stems
        self.network: nn.Module = trained.network
        self.device = next(self.network.parameters()).device
        self.steps = {
            (layer, method): ExplainStep(bundle.request(layer, (method,)))
            for layer in bundle.layers
            for method in spec.methods
        }
        self._metrics: dict[tuple[str, str, str], CumulativeIterationMetric] = {}
        # an input attribution's sanity correlations, per case: the same under every layer
        self._layer_free_sanity: dict[str, dict[str, float]] = {}
        # the metrics of the random control's map, per (case, metric): the same for every layer and method (IoU aside)
        self._control_scores: dict[tuple[str, str], float] = {}
        # the reliability check's networks: noisy weights, re-initialised weights (made when first needed)
        self._perturbed: nn.Module | None = None
        self._randomised: nn.Module | None = None

    def record_failure(self, case: StudyCase, files: list[str], reason: str) -> None:
        """Store (and warn about) a case that cannot be loaded; it is left out."""
        logger.warning(f"{self.bundle.name}: skipping case {case.case_id} ({', '.join(files)}): {reason}")
        self.store.add_failed(self.bundle.name, case.case_id, "; ".join(files), reason)

    # --- what is left to do

    def _wanted(self) -> tuple[str, ...]:
        return (*self.spec.metrics, SECONDS)

    def batch_missing(self, batch_cases: list[StudyCase]) -> bool:
        ids = [case.case_id for case in batch_cases]
        return any(
            self.store.missing(self.bundle.name, layer, method, ids, self._wanted()) for layer, method in self.steps
        )

    # --- metrics

    def _iou_threshold(self, layer: str, method: str) -> float | str:
        if self.spec.iou_mode == IoUThresholdMode.OTSU:
            return OTSU
        if self.spec.iou_mode == IoUThresholdMode.FIXED:
            return self.spec.iou_value
        value = self.store.threshold(self.bundle.name, layer, method)
        if value is None:
            raise RuntimeError(f"no tuned IoU threshold stored for {self.bundle.name}/{layer}/{method}.")
        return value

    def _metric(self, metric: str, layer: str, method: str) -> CumulativeIterationMetric:
        key = (metric, layer, method) if metric == IOU else (metric, "", "")
        if key not in self._metrics:
            args = dict(self.spec.metric_args.get(metric, {}))
            if metric == IOU:
                args = {"threshold": self._iou_threshold(layer, method)}
            # the metrics that re-run the network run it as the bundle does (window by window with its window)
            network = self.network if self.bundle.window is None else self.bundle.window.network(self.network)
            self._metrics[key] = get_metric(metric).create(network, self.bundle.score, **args)
        return self._metrics[key]

    def _score(self, metric: str, layer: str, method: str, explanation: Explanation, batch: CaseBatch) -> torch.Tensor:
        """(B,) values of one metric of one method's maps (the headline column of curve metrics), with the inputs the
        engine's metric handlers give it."""
        metric_fn = self._metric(metric, layer, method)
        maps = explanation.maps[method]
        if get_metric(metric).compares_with == MetricInput.REGION:
            region = region_mask(batch.labels, explanation.class_idx, self.bundle.region_value)
            values = metric_fn(y_pred=maps, y=region)
        else:
            values = metric_fn(
                y_pred=maps, y=batch.images, class_idx=explanation.class_idx, pixel_set=explanation.pixel_set
            )
        metric_fn.reset()
        return torch.as_tensor(values).reshape(maps.shape[0], -1)[:, -1].double().cpu()

    # --- one batch

    def _predict(self, batch: CaseBatch) -> torch.Tensor:
        """The network's output on the batch (window by window with the bundle's window); stores each case's
        explained class, prediction and confidence."""
        step = next(iter(self.steps.values()))
        prediction = step.predict(self.network, batch.images)
        explained = step.classes(prediction)
        if prediction.ndim == 2:
            predicted = predicted_class(prediction).tolist()
            probabilities = class_probabilities(prediction)
            confidence = probabilities.gather(1, explained[:, None].clamp_max(probabilities.shape[1] - 1))[:, 0]
            confidence = confidence.tolist()
        else:
            predicted = [None] * len(batch.cases)
            confidence = [float("nan")] * len(batch.cases)
        self.store.add_cases(
            (self.bundle.name, case.case_id, case.label, _class_column(classes), p, c)
            for case, classes, p, c in zip(batch.cases, explained.tolist(), predicted, confidence)
        )
        return prediction

    def run_batch(self, batch: CaseBatch) -> None:
        ids = [case.case_id for case in batch.cases]
        prediction = self._predict(batch)
        # an input attribution explains no layer: its explanation and its scores (but IoU, whose threshold is tuned
        # per layer) serve every layer
        shared: dict[str, tuple[Explanation, dict[str, torch.Tensor]]] = {}
        for (layer, method), step in self.steps.items():
            missing = self.store.missing(self.bundle.name, layer, method, ids, self._wanted())
            if not missing:
                continue
            layer_free = not get_method(method).needs_layer
            seed = _batch_seed(self.spec, self.bundle.name, "" if layer_free else layer, method, batch.index)
            with _seeded(seed, self.device):
                if method in shared:
                    explanation, known = shared[method]
                else:
                    explanation = step(self.network, batch.images, prediction=prediction)
                    known = {SECONDS: explanation.seconds[method]}
                values = dict(known)
                with _quiet_undefined():
                    for metric in self.spec.metrics:
                        if metric in missing and metric not in values:
                            values[metric] = self._score(metric, layer, method, explanation, batch)
            if self.spec.maps:
                self._write_maps(layer, method, explanation, batch)
            if layer_free:
                shared[method] = (explanation, {metric: v for metric, v in values.items() if metric != IOU})
            self.store.add_scores(
                (self.bundle.name, layer, method, case_id, metric, float(column[k]))
                for metric, column in values.items()
                if metric in missing
                for k, case_id in enumerate(ids)
                if case_id in missing[metric]
            )

    def _write_maps(self, layer: str, method: str, explanation: Explanation, batch: CaseBatch) -> None:
        """The batch's maps of ``method`` at ``layer`` as NIfTI, one file per case (see ``StudySpec.maps``)."""
        folder = Path(self.spec.output_dir) / MAPS_FOLDER / safe_stem(self.bundle.name) / safe_stem(layer)
        folder = folder / safe_stem(method)
        folder.mkdir(parents=True, exist_ok=True)
        for case, maps, affine in zip(batch.cases, explanation.maps[method], batch.affines):
            write_map(MetaTensor(maps.detach().cpu(), affine=affine), folder / f"{self.stems[case.case_id]}.nii.gz")

    # --- IoU threshold tuned on the validation split

    def tune_thresholds(self, cases: list[StudyCase], progress: bool) -> None:
        """Per layer and method, the grid threshold with the highest mean IoU on ``cases`` (rank 0 only)."""
        todo = [key for key in self.steps if self.store.threshold(self.bundle.name, *key) is None]
        if not todo:
            return
        grid = torch.tensor(self.spec.iou_grid, dtype=torch.float64)
        sums = {key: torch.zeros(len(grid), dtype=torch.float64) for key in todo}
        counts = {key: torch.zeros(len(grid), dtype=torch.float64) for key in todo}
        batches = batch_indices(len(cases), self.spec.batch_size)
        loaded = case_batches(
            cases, batches, self.trained.preprocessing, self.bundle.region_key, self.device, self.record_failure
        )
        for batch in tqdm(loaded, total=len(batches), desc=f"{self.bundle.name}: tuning IoU", disable=not progress):
            layer_free: dict[str, Explanation] = {}  # an input attribution's maps serve every layer
            for key in todo:
                explanation = layer_free.get(key[1]) or self.steps[key](self.network, batch.images)
                if not get_method(key[1]).needs_layer:
                    layer_free[key[1]] = explanation
                region = region_mask(batch.labels, explanation.class_idx, self.bundle.region_value)
                with _quiet_undefined():
                    iou = torch.stack(
                        [saliency_iou(explanation.maps[key[1]], region, threshold=float(t)) for t in grid], dim=1
                    ).double()
                defined = ~torch.isnan(iou)
                sums[key] += torch.where(defined, iou, 0).sum(dim=0).cpu()
                counts[key] += defined.sum(dim=0).cpu()
        for key in todo:
            if not counts[key].any():
                raise ValueError(
                    f"IoU threshold tuning for {self.bundle.name}: no validation case of "
                    f"{self.spec.data.validation_key!r} has a non-empty region; use the iou_threshold mode 'otsu' or "
                    "'fixed'."
                )
            mean = sums[key] / counts[key].clamp_min(1)
            self.store.set_threshold(self.bundle.name, *key, float(grid[int(mean.argmax())]))

    # --- model randomisation sanity check

    def sanity(self, cases: list[StudyCase], layer: str, method: str) -> None:
        """Spearman correlation between the trained and the weight-randomised network's maps, per case."""
        todo = self.store.sanity_missing(self.bundle.name, layer, method, [case.case_id for case in cases])
        if not todo:
            return
        known = self._layer_free_sanity.get(method, {})
        if all(case_id in known for case_id in todo):  # an input attribution checked at another layer
            self.store.add_sanity((self.bundle.name, layer, method, case_id, known[case_id]) for case_id in todo)
            return
        chosen = [case for case in cases if case.case_id in todo]
        batches = batch_indices(len(chosen), self.spec.batch_size)
        for batch in case_batches(chosen, batches, self.trained.preprocessing, None, self.device, self.record_failure):
            with _quiet_undefined(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*keep their trained values.*")
                result = model_randomisation_check(
                    self.network, batch.images, self.steps[(layer, method)], self.spec.sanity_seed
                )
            correlation = result.correlation[method].tolist()
            if not get_method(method).needs_layer:
                known = self._layer_free_sanity.setdefault(method, {})
                known.update((case.case_id, value) for case, value in zip(batch.cases, correlation))
            self.store.add_sanity(
                (self.bundle.name, layer, method, case.case_id, value) for case, value in zip(batch.cases, correlation)
            )

    # --- metrics' reliability check

    def reliability(self, cases: list[StudyCase], layer: str, method: str) -> None:
        """Every metric of ``method`` at ``layer`` after each perturbation of the metrics' reliability check, per case
        (see :mod:`monai_xai.sanity.metric_reliability`): the map of a noisy copy of the case and the map of the
        network with noisy weights (NaN where the noise changes the prediction), the random control's map and the map
        of the randomised network (explaining the trained network's target). Batches are fixed by case order and
        seeded by position, as for the scores, so a resumed or distributed study stores the same values."""
        metrics = self.spec.metrics
        todo = self.store.reliability_missing(self.bundle.name, layer, method, [c.case_id for c in cases], metrics)
        if not todo:
            return
        step = self.steps[(layer, method)]
        batches = [
            (index, positions)
            for index, positions in batch_indices(len(cases), self.spec.batch_size)
            if any(cases[position].case_id in todo for position in positions)
        ]
        loaded = case_batches(
            cases, batches, self.trained.preprocessing, self.bundle.region_key, self.device, self.record_failure
        )
        for batch in loaded:
            prediction = step.predict(self.network, batch.images)
            control = self._control(batch, layer, method, prediction)
            target = control.explanation.target  # the trained network's class and pixel set
            classes = step.classes(prediction)
            seed = _batch_seed(self.spec, self.bundle.name, layer, method, "reliability", batch.index)
            values: dict[str, dict[str, torch.Tensor]] = {}
            with _seeded(seed, self.device), _quiet_undefined():
                noisy = dataclasses.replace(batch, images=self._noisy(batch))
                noisy_prediction = step.predict(self.network, noisy.images)
                explanation = step(self.network, noisy.images, prediction=noisy_prediction)
                values["input_noise"] = self._scores(layer, method, explanation, noisy)
                kept = {"input_noise": prediction_kept(prediction, noisy_prediction, classes).cpu()}
                perturbed = self._perturbed_network()
                perturbed_prediction = step.predict(perturbed, batch.images)
                explanation = step(perturbed, batch.images, prediction=perturbed_prediction, target=target)
                values["model_noise"] = self._scores(layer, method, explanation, batch)
                kept["model_noise"] = prediction_kept(prediction, perturbed_prediction, classes).cpu()
                explanation = step(self._randomised_network(), batch.images, target=target)
                values["randomised"] = self._scores(layer, method, explanation, batch)
            self.store.add_reliability(
                (
                    self.bundle.name,
                    layer,
                    method,
                    case.case_id,
                    metric,
                    *(float(values[name][metric][k]) if kept[name][k] else math.nan for name in kept),
                    control.values[(case.case_id, metric)],
                    float(values["randomised"][metric][k]),
                )
                for k, case in enumerate(batch.cases)
                for metric in metrics
            )

    def _scores(self, layer: str, method: str, explanation: Explanation, batch: CaseBatch) -> dict[str, torch.Tensor]:
        return {metric: self._score(metric, layer, method, explanation, batch) for metric in self.spec.metrics}

    def _noisy(self, batch: CaseBatch) -> torch.Tensor:
        """The batch's images with the reliability check's noise, drawn per case (the same whatever the batching)."""
        noisy = []
        for case, image in zip(batch.cases, batch.images):
            generator = torch.Generator(device=image.device)
            generator.manual_seed(_batch_seed(self.spec, "reliability noise", self.spec.reliability_seed, case.case_id))
            noisy.append(noisy_images(image[None], self.spec.reliability_noise, generator))
        return torch.cat(noisy)

    def _perturbed_network(self) -> nn.Module:
        """The network with the reliability check's weight noise (made once per bundle)."""
        if self._perturbed is None:
            seed = _batch_seed(self.spec, "reliability weights", self.spec.reliability_seed)
            self._perturbed = perturbed_weights(self.network, self.spec.reliability_noise, seed)
        return self._perturbed

    def _randomised_network(self) -> nn.Module:
        """The network with every weight re-initialised, as the randomisation check makes it (once per bundle)."""
        if self._randomised is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*keep their trained values.*")
                self._randomised = randomize_weights(self.network, self.spec.sanity_seed)
        return self._randomised

    def _control(self, batch: CaseBatch, layer: str, method: str, prediction: torch.Tensor) -> _ControlScores:
        """The random control's map of the batch, explained as ``method``'s maps are (the trained network's class
        and pixel set), and ``{(case, metric): value}`` of its metrics (IoU at ``method``'s threshold, the other
        metrics computed once per case)."""
        explanation = ExplainStep(self.bundle.request(layer, (CONTROL,)))(self.network, batch.images, prediction)
        explanation = dataclasses.replace(explanation, maps={method: explanation.maps[CONTROL]})
        iou: dict[tuple[str, str], float] = {}
        for metric in self.spec.metrics:
            if metric != IOU and all((case.case_id, metric) in self._control_scores for case in batch.cases):
                continue
            seed = _batch_seed(self.spec, self.bundle.name, "reliability control", metric, batch.index)
            with _seeded(seed, self.device), _quiet_undefined():
                column = self._score(metric, layer, method, explanation, batch)
            scores = {(case.case_id, metric): float(column[k]) for k, case in enumerate(batch.cases)}
            (iou if metric == IOU else self._control_scores).update(scores)
        values = {
            (case.case_id, metric): (iou if metric == IOU else self._control_scores)[(case.case_id, metric)]
            for case in batch.cases
            for metric in self.spec.metrics
        }
        return _ControlScores(explanation, values)


@dataclasses.dataclass(frozen=True)
class _ControlScores:
    """The random control's explanation of a batch and its metrics per (case, metric)."""

    explanation: Explanation
    values: dict[tuple[str, str], float]


def _class_column(classes: int | list[int]) -> int | str:
    """The cases table's explained class: the int, or classes explained together as a config names them."""
    return classes if isinstance(classes, int) else str(ClassSet(tuple(classes)))


def _prepare_output(spec: StudySpec, overwrite: bool, rank: int) -> None:
    output_dir = Path(spec.output_dir)
    if rank == 0:
        if overwrite:
            (output_dir / ROWS_FILE).unlink(missing_ok=True)
            shutil.rmtree(output_dir / "report", ignore_errors=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        study_cases(spec.data, output_dir)  # writes phantom cases once, before their content is fingerprinted
        study_store(spec).close()  # creates the store (or refuses one of other settings) before the others open it
    _barrier()


def run_study(
    study: StudySpec | str | Path,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    **override: Any,
) -> Path | None:
    """Compute (or finish) a study's rows, then write its report.

    Args:
        study: a :class:`~monai_xai.study.StudySpec` or the path of a study file.
        overwrite: delete the stored rows and report of an earlier run first (phantom data is kept).
        progress: show progress bars (rank 0).
        report: write the report (and track it in MLflow) once every row exists.
        override: top-level study keys replaced when ``study`` is a path, e.g. ``output_dir="..."``.

    Returns:
        the report folder on rank 0 when ``report`` (None on other ranks, or without report).
    """
    spec = study if isinstance(study, StudySpec) else load_study(study, **override)
    rank, world_size = _distributed()
    _prepare_output(spec, overwrite, rank)
    store = study_store(spec)
    device = _device(spec)
    progress = progress and rank == 0
    cases = study_cases(spec.data, Path(spec.output_dir))
    sanity_cases = cases[: spec.sanity_cases]
    reliability_cases = cases[: spec.reliability_cases]
    sanity_items = [
        (bundle, layer, method) for bundle in spec.bundles for layer in bundle.layers for method in spec.methods
    ][rank::world_size]
    try:
        for bundle in spec.bundles:
            trained = load_trained_bundle(bundle.path, device, bundle.overrides, bundle.weights)
            run = _BundleRun(spec, bundle, trained, store, case_stems(cases))
            if "iou" in spec.metrics and spec.iou_mode == "tuned":
                if rank == 0:
                    validation = study_cases(spec.data, Path(spec.output_dir), key=spec.data.validation_key)
                    run.tune_thresholds(validation, progress)
                _barrier()
            batches = [
                (index, positions)
                for index, positions in batch_indices(len(cases), spec.batch_size, rank, world_size)
                if run.batch_missing([cases[p] for p in positions])
            ]
            loaded = case_batches(
                cases, batches, run.trained.preprocessing, bundle.region_key, device, run.record_failure
            )
            for batch in tqdm(loaded, total=len(batches), desc=f"{bundle.name}", disable=not progress):
                run.run_batch(batch)
            checks = [(layer, method) for item_bundle, layer, method in sanity_items if item_bundle is bundle]
            for layer, method in tqdm(checks, desc=f"{bundle.name}: sanity and reliability", disable=not progress):
                run.sanity(sanity_cases, layer, method)
                if spec.metrics:
                    run.reliability(reliability_cases, layer, method)
        _barrier()
    finally:
        store.close()
    if rank != 0 or not report:
        return None
    written = write_report(spec)
    track_study(spec, written)
    return written.folder
