"""Temperature scaling of a trained classifier, applied where its logits leave the network.

A bundle's ``evaluate.json`` fits the temperature ``T`` of ``softmax(logits / T)`` on the validation split
(:func:`monai_xai.apps.evaluate_classifier`), saved next to the weights as ``temperature.json``
(:func:`load_temperature` reads it back). :func:`scale_logits` makes the network itself return ``logits / T``,
so that everything downstream (the inference probabilities, the explained score, ROAD's and deletion's class
probabilities) uses the calibrated model, while the parameters, the state-dict keys and the layer names stay those of
the trained network: checkpoints load unchanged and a CAM layer such as ``"layer4"`` keeps its name.

Dividing the logits by ``T > 0`` changes no prediction (the arg max is the same) and scales every gradient CAM of a
logit by ``1 / T`` before normalisation, so their maps are unchanged (AblationCAM's score ratios too); ScoreCAM's
channel weights, a softmax of scores, and every score of probabilities change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["TEMPERATURE_FILE", "is_calibrated", "load_temperature", "scale_logits"]

# the file, next to a classifier's weights, that holds its fitted temperature
TEMPERATURE_FILE = "temperature.json"


def load_temperature(folder: str | Path) -> float:
    """The temperature saved next to the weights in ``folder`` (``temperature.json``); 1.0 (uncalibrated) when there
    is none."""
    path = Path(folder) / TEMPERATURE_FILE
    if not path.is_file():
        return 1.0
    return float(json.loads(path.read_text())["temperature"])


class _DivideOutput:
    """Forward hook returning the module's output divided by ``temperature``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output / self.temperature


def scale_logits(network: nn.Module, temperature: float) -> nn.Module:
    """Make ``network`` return its logits divided by ``temperature`` (in place; returns the same module).

    Args:
        network: a classifier returning (B, num_classes) logits.
        temperature: ``T > 0`` of temperature scaling; 1.0 leaves the network as it is.

    Returns:
        ``network``, whose forward now returns (B, num_classes) ``logits / T``; ``network.logit_temperature`` is ``T``.

    Raises:
        ValueError: ``T`` not a positive finite number, or a network already scaled (the temperatures would multiply).
    """
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}.")
    if hasattr(network, "logit_temperature"):
        raise ValueError(
            f"the network's logits are already divided by {network.logit_temperature}; scale them once "
            "(a second temperature would multiply with the first)."
        )
    network.logit_temperature = temperature
    if temperature != 1.0:
        network.register_forward_hook(_DivideOutput(temperature))
    return network


def is_calibrated(network: nn.Module) -> bool:
    """Whether ``network`` returns temperature-scaled logits (:func:`scale_logits` with ``T != 1``), looking through a
    ``DataParallel`` / ``DistributedDataParallel`` wrapper."""
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    return getattr(network, "logit_temperature", 1.0) != 1.0
