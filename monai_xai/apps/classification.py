"""Evaluate a trained 2D/3D classifier bundle: calibration by temperature scaling and the report clinicians read.

:func:`evaluate_classifier` is what the study bundles' ``configs/evaluate.json`` runs. It fits the temperature ``T``
of ``softmax(logits / T)`` on the validation split (Guo et al., :func:`~monai_xai.metrics.fit_temperature`), saves
it next to the weights (``temperature.json``, read back by :func:`~monai_xai.networks.load_temperature` in
``inference.json``), and writes for the test split, under ``output_dir``:

- ``metrics.json``: accuracy, balanced accuracy, macro AUC (one-vs-rest), ECE before and after calibration, the
  temperature, and per class precision, recall, F1, AUC and support (``null`` where undefined: precision of a class
  never predicted, recall and AUC of a class without test cases);
- ``classification_report.csv``: the per-class rows;
- ``test_predictions.csv``: per case the image, true class, predicted class and calibrated probabilities;
- ``reliability_diagram.png``: accuracy against confidence per bin, before and after calibration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from monai.metrics import compute_roc_auc
from torch import nn
from tqdm import tqdm

from monai_xai.atomic import atomic_path, atomic_write_csv, atomic_write_text
from monai_xai.metrics.calibration import expected_calibration_error, fit_temperature, reliability_diagram_data
from monai_xai.networks.calibration import TEMPERATURE_FILE
from monai_xai.utils import json_ready

__all__ = ["classification_metrics", "evaluate_classifier"]


@torch.no_grad()
def _logits(
    network: nn.Module, loader: Iterable[dict], device: torch.device, desc: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, C) logits, (N,) labels and the image names of every case of ``loader``."""
    network.eval()
    logits, labels, names = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False):
        logits.append(network(batch["image"].to(device)).float().cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1).long())
        meta = getattr(batch["image"], "meta", {})
        names += [str(name) for name in meta.get("filename_or_obj", [""] * len(labels[-1]))]
    return torch.cat(logits), torch.cat(labels), names


def classification_metrics(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro AUC and per-class precision / recall / F1 / AUC / support.

    Args:
        probabilities: (N, C) class probabilities.
        labels: (N,) true class indices.
        class_names: C names, in label order.

    Returns:
        ``{"accuracy", "balanced_accuracy", "auc_macro", "per_class": [{"class", "precision", "recall", "f1",
        "auc", "support"}, ...]}``; a value undefined for the data (a class without cases, or never predicted) is NaN.
    """
    predicted = probabilities.argmax(dim=1)
    per_class = []
    for index, name in enumerate(class_names):
        true, chosen = labels == index, predicted == index
        hits = float((true & chosen).sum())
        precision = hits / float(chosen.sum()) if chosen.any() else math.nan
        recall = hits / float(true.sum()) if true.any() else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
        auc = (
            float(compute_roc_auc(probabilities[:, index], true.float())) if 0 < true.sum() < len(labels) else math.nan
        )
        per_class.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "auc": auc, "support": int(true.sum())}
        )
    recalls = [row["recall"] for row in per_class if not math.isnan(row["recall"])]
    aucs = [row["auc"] for row in per_class if not math.isnan(row["auc"])]
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "balanced_accuracy": sum(recalls) / len(recalls) if recalls else math.nan,
        "auc_macro": sum(aucs) / len(aucs) if aucs else math.nan,
        "per_class": per_class,
    }


def _reliability_figure(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, path: Path, n_bins: int
) -> None:
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for scale, label, colour in ((1.0, "uncalibrated", "tab:red"), (temperature, f"T = {temperature:.2f}", "tab:blue")):
        bins = reliability_diagram_data(logits / scale, labels, n_bins=n_bins, from_logits=True)
        ece = float(expected_calibration_error(logits / scale, labels, n_bins=n_bins, from_logits=True))
        shown = bins.count > 0
        axis.plot(
            bins.confidence[shown], bins.accuracy[shown], marker="o", color=colour, label=f"{label} (ECE {ece:.3f})"
        )
    axis.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="Reliability on the test split")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=110, format="png")


def evaluate_classifier(
    network: nn.Module,
    validation_loader: Iterable[dict],
    test_loader: Iterable[dict],
    class_names: Sequence[str],
    output_dir: str | Path,
    weights_dir: str | Path,
    device: torch.device | str = "cpu",
    n_bins: int = 15,
) -> dict[str, Any]:
    """Calibrate on the validation split, then report on the test split (see the module docstring).

    Args:
        network: the trained classifier, (B, C_in, *spatial) -> (B, C) logits, with its weights loaded.
        validation_loader, test_loader: batches ``{"image": (B, C_in, *spatial), "label": (B,) or (B, 1)}``.
        class_names: C names in label order.
        output_dir: where the report goes.
        weights_dir: the weights' folder; ``temperature.json`` is saved there.
        device: where the network runs.
        n_bins: reliability bins of the ECE and the diagram.

    Returns:
        the content of ``metrics.json``.
    """
    device = torch.device(device)
    output_dir, weights_dir = Path(output_dir), Path(weights_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    val_logits, val_labels, _ = _logits(network, validation_loader, device, "validation (calibration)")
    temperature = fit_temperature(val_logits, val_labels)
    atomic_write_text(
        weights_dir / TEMPERATURE_FILE, json.dumps({"temperature": temperature, "n_validation": len(val_labels)})
    )

    logits, labels, names = _logits(network, test_loader, device, "test")
    probabilities = (logits / temperature).softmax(dim=1)
    report = classification_metrics(probabilities, labels, class_names)
    report |= {
        "temperature": temperature,
        "ece_uncalibrated": float(expected_calibration_error(logits, labels, n_bins=n_bins, from_logits=True)),
        "ece_calibrated": float(
            expected_calibration_error(logits / temperature, labels, n_bins=n_bins, from_logits=True)
        ),
        "n_test": len(labels),
    }
    atomic_write_text(output_dir / "metrics.json", json.dumps(json_ready(report), indent=2))
    atomic_write_csv(output_dir / "classification_report.csv", list(report["per_class"][0]), report["per_class"])
    atomic_write_csv(
        output_dir / "test_predictions.csv",
        ["image", "label", "predicted", *(f"p_{name}" for name in class_names)],
        (
            [name, label, max(range(len(row)), key=row.__getitem__), *(f"{p:.6f}" for p in row)]
            for name, label, row in zip(names, labels.tolist(), probabilities.tolist())
        ),
    )
    _reliability_figure(logits, labels, temperature, output_dir / "reliability_diagram.png", n_bins)
    return report
