"""Glue for the gaze-saliency bundle (``bundles/gaze_saliency_cxr``, Qiu's thesis ch. 4): what each training stage
trains and freezes, the stage's checkpoints, the batch target, an inferer that also yields the predicted gaze map, the
evaluation report, and the handler that scores CAMs and the predicted gaze map against the radiologists' gaze.

Stages (``--stage`` of ``train.json``) of :class:`~monai_xai.networks.gaze.GazeSaliencyNet`:

- stage 1, triplet pre-training: ``embed`` (B, D); trains the DenseNet; target the label, triplet loss;
  saves ``stage1_triplet.pt``;
- stage 1: ``densenet_logits`` (B, K); trains the DenseNet; label, cross-entropy; ``stage1.pt``;
- stage 2: ``gaze_logits`` (B, 1, H, W); trains the UNet, DenseNet frozen; the gaze map, KL; ``stage2.pt``;
- stage 3: ``forward`` (B, K); trains the fusion classifier, DenseNet and UNet frozen; label, cross-entropy;
  ``model.pt``.

A frozen part runs in eval mode under ``torch.no_grad()`` and its parameters are not given to the optimizer, so
neither its weights nor its batch-norm statistics change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import PrepareBatch
from torch import nn

from monai_xai.apps.classification import classification_metrics
from monai_xai.atomic import atomic_write_csv, atomic_write_text
from monai_xai.enums import saliency_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.inferers import EngineOutputInferer
from monai_xai.metrics.similarity import kl_divergence, nss, pearson_cc, similarity_sim
from monai_xai.networks.gaze import GazeSaliencyNet, gaze_map
from monai_xai.utils import json_ready, with_meta_of

__all__ = [
    "GAZE_METRICS",
    "PREDICTED_GAZE",
    "PREDICTED_GAZE_KEY",
    "STAGE_CHECKPOINTS",
    "STUDY_RESULTS",
    "TRIPLET_CHECKPOINT",
    "GazeAgreementHandler",
    "GazeInferer",
    "GazeTrainingView",
    "TargetBatch",
    "evaluate_gaze_network",
    "load_stage_start",
    "stage_view",
]

STAGE_CHECKPOINTS = {1: "stage1.pt", 2: "stage2.pt", 3: "model.pt"}
TRIPLET_CHECKPOINT = "stage1_triplet.pt"
PREDICTED_GAZE_KEY = "gaze_pred"
PREDICTED_GAZE = "predicted_gaze"  # the row of the predicted gaze map in the agreement table
# Qiu's thesis, tables 4.1 and 4.2 (HS = SIM); NSS was not reported
STUDY_RESULTS = {"auc_macro": 0.925, "accuracy": 0.80, "kl": 0.706, "cc": 0.576, "sim": 0.552}

_OUTPUTS = {"embedding": ("densenet",), "densenet": ("densenet",), "gaze": ("unet",), "diagnosis": ("classifier",)}
_FROZEN = {"embedding": (), "densenet": (), "gaze": ("densenet",), "diagnosis": ("densenet", "unet")}
_STAGE_OUTPUT = {1: "densenet", 2: "gaze", 3: "diagnosis"}
# metric -> (function, reference key); NSS compares with the binary fixation map
GAZE_METRICS = {
    "kl": (kl_divergence, "gaze"),
    "cc": (pearson_cc, "gaze"),
    "sim": (similarity_sim, "gaze"),
    "nss": (nss, "fixations"),
}


def _check_stage(stage: Any) -> int:
    if stage not in (1, 2, 3) or isinstance(stage, bool):
        raise ValueError(f"stage must be 1 (DenseNet), 2 (gaze UNet) or 3 (fusion classifier), got {stage!r}.")
    return int(stage)


class GazeTrainingView(nn.Module):
    """One training stage's view of a :class:`~monai_xai.networks.gaze.GazeSaliencyNet` (shares its weights).

    Args:
        network: the full network.
        output: ``"embedding"`` (B, D), ``"densenet"`` (B, K), ``"gaze"`` (B, 1, H, W) logits or ``"diagnosis"``
            (B, K); what ``forward`` returns, and which parts are trained (see the module docstring).
    """

    def __init__(self, network: GazeSaliencyNet, output: str) -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {sorted(_OUTPUTS)}, got {output!r}.")
        self.network = network
        self.output = output
        self.trained = _OUTPUTS[output]
        self.frozen = _FROZEN[output]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of the trained part only: what the stage's optimizer gets."""
        for name in self.trained:
            yield from getattr(self.network, name).parameters()

    def train(self, mode: bool = True) -> GazeTrainingView:
        super().train(mode)
        for name in self.frozen:
            getattr(self.network, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the stage's output (see ``output``)."""
        network = self.network
        if self.output == "embedding":
            return network.embed(x)
        if self.output == "densenet":
            return network.densenet_logits(x)
        with torch.no_grad():
            encoded = network.densenet_encoder(x)
        if self.output == "gaze":
            return network.unet(x, encoded)[0]
        with torch.no_grad():
            upsampled = network.unet(x, encoded)[1]
        return network.classifier(encoded, upsampled)


def stage_view(network: GazeSaliencyNet, stage: int, triplet: bool = False) -> GazeTrainingView:
    """The view stage ``stage`` (1, 2 or 3) trains; ``triplet=True``: stage 1's triplet pre-training."""
    stage = _check_stage(stage)
    if triplet and stage != 1:
        raise ValueError(f"the triplet pre-training is part of stage 1, not stage {stage}.")
    return GazeTrainingView(network, "embedding" if triplet else _STAGE_OUTPUT[stage])


def load_stage_start(
    network: nn.Module, ckpt_dir: str | Path, stage: int, after_triplet: bool = False, device: Any = "cpu"
) -> str | None:
    """Load the weights stage ``stage`` starts from: stage 1 those of its triplet pre-training (``after_triplet``),
    stage 2 ``stage1.pt``, stage 3 ``stage2.pt``. Returns the file loaded, or None (stage 1 without pre-training).

    Raises:
        FileNotFoundError: the previous stage's checkpoint is missing (run that stage first).
    """
    stage = _check_stage(stage)
    if stage == 1 and not after_triplet:
        return None
    name = TRIPLET_CHECKPOINT if stage == 1 else STAGE_CHECKPOINTS[stage - 1]
    path = Path(ckpt_dir) / name
    if not path.is_file():
        before = "the triplet pre-training (triplet_epochs > 0)" if stage == 1 else f"stage {stage - 1}"
        raise FileNotFoundError(
            f"stage {stage} starts from {path}, which does not exist: run {before} first, e.g. python -m monai.bundle "
            f"run --config_file configs/train.json --stage {max(stage - 1, 1)} (same --bundle_root and --ckpt_dir)."
        )
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, Mapping) and set(state) == {"model"}:  # a checkpoint of {"model": network}
        state = state["model"]
    network.load_state_dict(state)
    return str(path)


class TargetBatch(PrepareBatch):
    """``prepare_batch`` of MONAI engines that takes the target from ``batch[target_key]`` (``"label"`` or
    ``"gaze"``): returns ``(batch["image"], batch[target_key])`` on ``device``."""

    def __init__(self, target_key: str = "label") -> None:
        self.target_key = target_key

    def __call__(
        self, batchdata: dict[str, torch.Tensor], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.target_key not in batchdata:
            raise KeyError(f"the batch has no {self.target_key!r} (keys: {sorted(batchdata)}); check the datalist.")
        image, target = batchdata["image"], torch.as_tensor(batchdata[self.target_key])
        return image.to(device, non_blocking=non_blocking), target.to(device, non_blocking=non_blocking)


class GazeInferer(EngineOutputInferer):
    """Inferer returning the diagnosis logits (B, K) of a :class:`~monai_xai.networks.gaze.GazeSaliencyNet` and
    keeping its predicted gaze map (B, 1, H, W) in [0, 1] (:func:`~monai_xai.networks.gaze.gaze_map`, with the
    input's meta) for the engine output: attached to the evaluator (listed in its handlers), it puts the map under
    ``engine.state.output["gaze_pred"]`` before MONAI decollates the batch, as the
    :class:`~monai_xai.inferers.XAIInferer` (which may wrap it) does with its maps."""

    not_called_hint = "make it the evaluator's inferer, or the inferer its XAIInferer wraps."

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        model = getattr(network, "module", network)  # DistributedDataParallel
        if not hasattr(model, "diagnose_and_gaze"):
            raise TypeError(f"GazeInferer needs a GazeSaliencyNet (diagnose_and_gaze), got {type(model).__name__}.")
        logits, gaze_logits = model.diagnose_and_gaze(inputs)
        self.engine_outputs = {PREDICTED_GAZE_KEY: with_meta_of(gaze_map(gaze_logits.detach()), inputs)}
        return logits


def _gaze_scores(
    maps: torch.Tensor, references: Mapping[str, torch.Tensor | None], metrics: Sequence[str]
) -> dict[str, torch.Tensor]:
    """metric -> (B,) scores of ``maps`` (B, 1, *spatial) against the reference of each metric (None: NaN)."""
    scores = {}
    for metric in metrics:
        function, key = GAZE_METRICS[metric]
        reference = references.get(key)
        scores[metric] = (
            torch.full((maps.shape[0],), math.nan) if reference is None else function(maps, reference).cpu()
        )
    return scores


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


@torch.no_grad()
def evaluate_gaze_network(
    network: GazeSaliencyNet,
    loader: Any,
    class_names: Sequence[str],
    output_dir: str | Path,
    device: Any = "cpu",
    metrics: Sequence[str] = tuple(GAZE_METRICS),
) -> dict[str, Any]:
    """The study's report on a test split: diagnosis (accuracy, macro AUC, per-class AUC, ...) and the predicted gaze
    map against the real one (KL, CC, SIM; NSS against the fixations when the batches have ``"fixations"``).

    Args:
        network: the trained network (stage 3 weights).
        loader: batches with ``"image"`` (B, C, H, W), ``"label"`` (B,), ``"gaze"`` (B, 1, H, W) and optionally
            ``"fixations"`` (B, 1, H, W) binary.
        class_names: K names in label order.
        output_dir: ``metrics.json`` (the report, with the study's numbers under ``"study"``) and
            ``test_predictions.csv`` (per case: image, true and predicted class, probabilities, gaze scores) go here.
        metrics: gaze metrics among ``kl``, ``cc``, ``sim``, ``nss``.

    Returns:
        the report: ``{"accuracy", "balanced_accuracy", "auc_macro", "per_class", "gaze": {metric: {"mean", "std",
        "n"}}, "study": ...}``.
    """
    network.eval()
    probabilities, labels, names, rows_scores = [], [], [], {metric: [] for metric in metrics}
    for batch in loader:
        images = batch["image"].to(device)
        logits, gaze_logits = network.diagnose_and_gaze(images)
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1).long())
        references = {key: batch[key].to(device).float() if key in batch else None for key in ("gaze", "fixations")}
        for metric, values in _gaze_scores(gaze_map(gaze_logits), references, metrics).items():
            rows_scores[metric] += values.tolist()
        meta = getattr(batch["image"], "meta", {})
        names += [str(name) for name in meta.get("filename_or_obj", [""] * len(labels[-1]))]
    probability, label = torch.cat(probabilities), torch.cat(labels)
    report = classification_metrics(probability, label, class_names)
    report["gaze"] = {
        metric: {"mean": _mean(values), "std": _std(values), "n": sum(not math.isnan(v) for v in values)}
        for metric, values in rows_scores.items()
    }
    report["study"] = STUDY_RESULTS
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(json_ready(report), indent=1))
    atomic_write_csv(
        output_dir / "test_predictions.csv",
        ["image", "true", "predicted", *class_names, *(f"gaze_{m}" for m in metrics)],
        (
            [
                name,
                class_names[int(label[index])],
                class_names[int(probability[index].argmax())],
                *(f"{float(p):.6f}" for p in probability[index]),
                *(f"{rows_scores[m][index]:.6f}" for m in metrics),
            ]
            for index, name in enumerate(names)
        ),
    )
    return report


class GazeAgreementHandler:
    """Score each CAM method's maps and the predicted gaze map against the radiologists' gaze, per case; at the end
    of the run write the table, one row per map (the methods, then ``predicted_gaze``), one column per metric.

    Reads the engine output (``"saliency_<method>"`` of an :class:`~monai_xai.inferers.XAIInferer`, ``"gaze_pred"``
    of a :class:`GazeInferer`) and the batch (``"gaze"``, ``"fixations"``), on the network's grid. Writes
    ``gaze_agreement.csv`` / ``gaze_agreement.md`` (mean per map and metric, with the number of cases) and
    ``gaze_agreement_cases.csv`` (one row per case and map) in ``output_dir``, and puts the means into
    ``engine.state.metrics["gaze_<metric>_<map>"]``.

    Args:
        methods: the CAM methods explained.
        output_dir: where the tables go.
        metrics: among ``kl``, ``cc``, ``sim``, ``nss`` (NSS needs ``"fixations"`` in the batch).
    """

    def __init__(
        self, methods: str | Sequence[str], output_dir: str | Path, metrics: Sequence[str] = ("kl", "cc", "sim", "nss")
    ) -> None:
        unknown = [metric for metric in metrics if metric not in GAZE_METRICS]
        if unknown:
            raise ValueError(f"unknown gaze metric(s) {unknown}; choose among {sorted(GAZE_METRICS)}.")
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.output_dir = Path(output_dir)
        self.metrics = tuple(metrics)
        self.rows: list[dict[str, Any]] = []

    @property
    def maps(self) -> dict[str, str]:
        """row name -> engine-output key."""
        return {**{method: saliency_key(method) for method in self.methods}, PREDICTED_GAZE: PREDICTED_GAZE_KEY}

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._score)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    def _reference(self, engine: Any, index: int, key: str) -> torch.Tensor | None:
        try:
            value = case_value(engine, index, key)
        except KeyError:
            if key == "fixations":
                raise KeyError(
                    "NSS needs the fixation maps: give --fixation_dir with fixations.csv in the dataset folder, or "
                    "drop 'nss' from gaze_metrics."
                ) from None
            raise
        return torch.as_tensor(value.as_tensor() if isinstance(value, MetaTensor) else value)[None].float()

    def _score(self, engine: Any) -> None:
        for index, case in enumerate(engine_cases(engine.state.output)):
            image = case.get("image")
            name = str(getattr(image, "meta", {}).get("filename_or_obj", f"case_{len(self.rows)}"))
            keys = {GAZE_METRICS[metric][1] for metric in self.metrics}
            references = {key: self._reference(engine, index, key) for key in keys}
            for row_name, key in self.maps.items():
                saliency = torch.as_tensor(case_value(engine, index, key))[None].float().cpu()
                scores = _gaze_scores(saliency, {k: v.cpu() for k, v in references.items()}, self.metrics)
                self.rows.append({"case": name, "map": row_name, **{m: float(s[0]) for m, s in scores.items()}})

    def table(self) -> list[dict[str, Any]]:
        """One row per map: ``{"map", <metric>: mean, "n"}`` (NaN-free means; n = cases)."""
        table = []
        for row_name in self.maps:
            rows = [row for row in self.rows if row["map"] == row_name]
            table.append(
                {"map": row_name, **{m: _mean([row[m] for row in rows]) for m in self.metrics}, "n": len(rows)}
            )
        return table

    def _write(self, engine: Any) -> None:
        table = self.table()
        for row in table:
            for metric in self.metrics:
                engine.state.metrics[f"gaze_{metric}_{row['map']}"] = row[metric]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns = ["map", *self.metrics, "n"]
        atomic_write_csv(self.output_dir / "gaze_agreement.csv", columns, table)
        atomic_write_csv(self.output_dir / "gaze_agreement_cases.csv", ["case", "map", *self.metrics], self.rows)
        lines = [
            "Agreement with the radiologists' gaze (mean over cases; KL lower is better, CC / SIM / NSS higher)",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for row in table:
            values = [f"{row[m]:.3f}" for m in self.metrics]
            lines.append("| " + " | ".join([row["map"], *values, str(row["n"])]) + " |")
        study = ", ".join(f"{m.upper()} {STUDY_RESULTS[m]}" for m in self.metrics if m in STUDY_RESULTS)
        lines += ["", f"The study's predicted gaze maps (Qiu, thesis table 4.2): {study}."]
        atomic_write_text(self.output_dir / "gaze_agreement.md", "\n".join(lines) + "\n")
