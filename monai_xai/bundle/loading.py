"""Load the parts of a trained bundle that explaining outside an engine needs: network, preprocessing, settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_xai.bundle.imports import bundle_imports
from monai_xai.bundle.settings import ExplainSettings
from monai_xai.cams.tiles import TiledWindow
from monai_xai.explanation import SlidingWindow
from monai_xai.networks.calibration import load_temperature, scale_logits
from monai_xai.nnunet.model import is_nnunet_folder

__all__ = ["TORCHSCRIPT_SUFFIX", "TrainedBundle", "load_trained_bundle"]

# a bundle's exported network with its weights (models/model.ts), loaded with torch.jit.load
TORCHSCRIPT_SUFFIX = ".ts"


@dataclass(frozen=True)
class TrainedBundle:
    """A bundle ready to explain cases one by one.

    Attributes:
        root: the bundle folder.
        network: ``network_def`` with the weights of ``models/model.pt`` (or the TorchScript module of
            ``models/model.ts``), in eval mode on the requested device; its logits divided by ``temperature``
            (:func:`~monai_xai.networks.scale_logits`).
        preprocessing: the bundle's ``preprocessing`` transform (a dict transform over ``{"image": path, ...}``).
        settings: what the bundle itself says to explain (its ``configs/explain.json``; defaults without one).
        weights: the weights file loaded.
        temperature: the temperature saved next to the weights by the bundle's calibrated evaluation
            (``temperature.json``, see :func:`~monai_xai.apps.evaluate_classifier`); 1.0 (uncalibrated) without one.
        window: the sliding window of the bundle's ``inferer`` (None: it runs the network on the whole image; an
            nnU-Net model's tiles, mirroring and folds), so
            that a case is explained as the bundle predicts it.
    """

    root: Path
    network: nn.Module
    preprocessing: Callable
    settings: ExplainSettings
    weights: Path
    temperature: float
    window: SlidingWindow | TiledWindow | None = None


def load_trained_bundle(
    bundle_dir: str | Path,
    device: torch.device | str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
) -> TrainedBundle:
    """Read a model-zoo bundle's ``configs/inference.json``, weights and own explanation settings.

    Args:
        bundle_dir: bundle folder (``configs/inference.json`` with ``network_def`` and ``preprocessing``,
            ``models/model.pt``).
        device: where the network goes.
        overrides: config ids replaced before parsing, as on the ``monai.bundle run`` command line (e.g.
            ``{"backbone": "vgg16"}`` for a bundle that builds its network from a ``backbone`` id).
        weights: the weights file (relative paths from the bundle folder); default: the file the config's
            ``checkpointloader#load_path`` names (a bundle that keeps one model per backbone, e.g.
            ``models/<backbone>/model.pt``), else ``models/model.pt``, else (a bundle that ships only its TorchScript
            export) ``models/model.ts``. A ``.ts`` file is the network itself (``torch.jit.load``; ``network_def``
            is not used). A ``temperature.json`` beside it calibrates
            the network's logits, as the bundle's own inference does.

    An nnU-Net v2 trained-model folder is loaded as a bundle too (its network, nnU-Net's preprocessing, tiles,
    mirroring and folds; ``weights``: ``fold_<k>/<checkpoint>`` for one fold), so the study and the sanity checks take
    it where they take a bundle.

    Raises:
        FileNotFoundError: no inference.json or no weights.
        ValueError: an inference.json without ``network_def`` or ``preprocessing``, or weights of another network.
    """
    root = Path(bundle_dir).resolve()
    if is_nnunet_folder(root):
        return _nnunet_bundle(root, device, weights)
    inference = root / "configs" / "inference.json"
    if not inference.is_file():
        raise FileNotFoundError(
            f"{inference} is missing: a bundle in MONAI model-zoo layout has configs/inference.json defining "
            "`network_def` and `preprocessing`."
        )
    parser = ConfigParser()
    parser.read_config(str(inference))
    parser["bundle_root"] = str(root)
    for config_id, value in (overrides or {}).items():
        parser[config_id] = value
    if weights is None and "checkpointloader#load_path" in parser:
        weights = parser.get_parsed_content("checkpointloader#load_path")
    weights = root / (weights or _default_weights(root))
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; train the bundle first (see its docs/README.md).")
    scripted = weights.suffix == TORCHSCRIPT_SUFFIX
    for config_id in ("preprocessing",) if scripted else ("network_def", "preprocessing"):
        if config_id not in parser:
            raise ValueError(f"{inference} has no `{config_id}`; the network and the data are built with it.")
    temperature = load_temperature(weights.parent)
    with bundle_imports(root):  # a network_def or transform in the bundle's own scripts/ package
        if scripted:
            network = _load_torchscript(weights, temperature)
        else:
            network = parser.get_parsed_content("network_def")
            try:
                network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            except RuntimeError as error:
                raise ValueError(f"{weights} does not fit the bundle's network_def: {error}") from None
            network = scale_logits(network, temperature)
        window = SlidingWindow.of(parser.get_parsed_content("inferer")) if "inferer" in parser else None
        preprocessing = parser.get_parsed_content("preprocessing")
    return TrainedBundle(
        root=root,
        network=network.to(device).eval(),
        preprocessing=preprocessing,
        settings=ExplainSettings.from_bundle(root, overlays=(), **dict(overrides or {})),
        weights=weights,
        temperature=temperature,
        window=window,
    )


def _nnunet_bundle(folder: Path, device: torch.device | str, weights: str | Path | None) -> TrainedBundle:
    """An nnU-Net v2 trained-model folder as a trained bundle: its network, nnU-Net's preprocessing, its tiles,
    mirroring and folds as the window (``weights``: one fold's checkpoint, e.g. ``fold_0/checkpoint_best.pth``; None:
    every fold's ``checkpoint_final.pth``)."""
    from monai_xai.nnunet.model import CHECKPOINT, NNUNetPreprocessing, load_nnunet

    if weights is not None and Path(weights).is_absolute():  # the weights a loaded model reported
        weights = Path(weights).relative_to(folder)
    if weights is not None and Path(weights) == Path(CHECKPOINT):  # every fold's final checkpoint
        weights = None
    fold, checkpoint = (None, CHECKPOINT) if weights is None else _fold_checkpoint(Path(weights))
    model = load_nnunet(folder, None if fold is None else (fold,), checkpoint, device=device)
    return TrainedBundle(
        root=folder,
        network=model.network,
        preprocessing=NNUNetPreprocessing(model),
        settings=ExplainSettings(model_mode="eval", network_output="logits"),
        weights=folder / (weights or CHECKPOINT),
        temperature=1.0,
        window=model.window,
    )


def _fold_checkpoint(weights: Path) -> tuple[str, str]:
    """(fold, checkpoint file) of ``fold_<k>/<checkpoint>``.

    Raises:
        ValueError: another path.
    """
    if len(weights.parts) != 2 or not weights.parts[0].startswith("fold_"):
        raise ValueError(f"an nnU-Net model's weights are fold_<k>/<checkpoint>.pth, got {str(weights)!r}.")
    return weights.parts[0].removeprefix("fold_"), weights.parts[1]


def _default_weights(root: Path) -> Path:
    """``models/model.pt``; a bundle that ships only its TorchScript export (``models/model.ts``): that."""
    weights, scripted = Path("models") / "model.pt", Path("models") / f"model{TORCHSCRIPT_SUFFIX}"
    return scripted if not (root / weights).is_file() and (root / scripted).is_file() else weights


def _load_torchscript(weights: Path, temperature: float) -> nn.Module:
    """A bundle's TorchScript network (``models/model.ts``: the network with its weights, no ``network_def``).

    Raises:
        ValueError: a temperature beside it (a scripted module takes no forward hook to divide its logits).
    """
    if temperature != 1.0:
        raise ValueError(
            f"{weights.parent / 'temperature.json'} calibrates the logits, but {weights.name} is a TorchScript module, "
            "which takes no hook to divide them: export the calibrated network, or explain models/model.pt."
        )
    return torch.jit.load(str(weights), map_location="cpu")
