"""What to explain, as one typed record checked once: :class:`ExplainRequest` (and its :class:`SlidingWindow`).

Every front door builds one: the bundle overlays and ``monai-xai explain`` from the ``xai_*`` config ids
(:class:`~monai_xai.bundle.ExplainSettings`), ``monai-xai study`` from a study file's bundle entry, ``monai-xai
sanity`` from its arguments, MONAI Label from a request's params, the Python API from keyword arguments. A value that
cannot work is refused here, with the same message whichever door it came through; what needs the network (a layer
name, a class index in range) is checked when the request meets it (:class:`~monai_xai.explanation.ExplainStep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer, sliding_window_inference
from monai.utils import BlendMode
from torch import nn

from monai_xai.budgets import check_methods, check_window
from monai_xai.cams.attributions import AttributionSettings
from monai_xai.cams.layers import LayerSpec, group_methods_by_layer
from monai_xai.cams.layouts import Reshape
from monai_xai.cams.outputs import OutputHandling, OutputHead, ScoredNetwork, as_output_head, scored_network
from monai_xai.cams.registry import get_method, get_methods
from monai_xai.cams.targets import ClassSet, as_class_choice, as_pixel_set_choice
from monai_xai.cams.tiles import TiledWindow
from monai_xai.enums import Layout, ModelMode, NetworkOutput, PixelSet, Score, as_choice

__all__ = [
    "BLEND_MODES",
    "ClassChoice",
    "ExplainRequest",
    "SlidingWindow",
    "SlidingWindowNetwork",
    "layered_methods",
    "network_as_inferred",
]

# the class setting of a request: None (a classifier's predicted class; every foreground class of a segmenter), one
# class for every sample, one per sample, or several classes of a segmenter explained together
ClassChoice = int | tuple[int, ...] | ClassSet | None
# how overlapping windows are blended (MONAI's BlendMode values)
BLEND_MODES = (BlendMode.GAUSSIAN.value, BlendMode.CONSTANT.value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


@dataclass(frozen=True)
class SlidingWindow:
    """The sliding window of a network that sees a volume window by window (MONAI's ``SlidingWindowInferer``
    settings): the maps are explained with the same windows and blended the same way as the prediction.

    Attributes:
        roi_size: window size, one int per spatial dim or one int for all (a non-positive entry takes the image's
            size there); at most ``MONAI_XAI_MAX_WINDOW_VOXELS`` voxels (:mod:`monai_xai.budgets`).
        sw_batch_size: windows per forward pass.
        overlap: overlap of neighbouring windows in [0, 1).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
    """

    roi_size: int | tuple[int, ...]
    sw_batch_size: int = 1
    overlap: float = 0.25
    mode: str = BlendMode.GAUSSIAN.value

    def __post_init__(self) -> None:
        roi = self.roi_size
        if isinstance(roi, Sequence) and not isinstance(roi, str):
            roi = tuple(roi)
        entries = roi if isinstance(roi, tuple) else (roi,)
        if not entries or not all(isinstance(size, int) and not isinstance(size, bool) for size in entries):
            raise ValueError(f"the window's roi_size must be an int or one int per spatial dim, got {self.roi_size!r}.")
        object.__setattr__(self, "roi_size", roi)
        self.check_size()
        _positive_int(self.sw_batch_size, "the window's sw_batch_size")
        overlap = self.overlap
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
            raise ValueError(f"the window's overlap must be a number in [0, 1), got {overlap!r}.")
        object.__setattr__(self, "overlap", float(overlap))
        mode = str(self.mode.value if isinstance(self.mode, BlendMode) else self.mode)
        if mode not in BLEND_MODES:
            raise ValueError(f"the window's mode must be one of {list(BLEND_MODES)}, got {self.mode!r}.")
        object.__setattr__(self, "mode", mode)

    def check_size(self, spatial_dims: int | None = None) -> None:
        """Refuse a window above the ``MONAI_XAI_MAX_WINDOW_VOXELS`` budget (:func:`~monai_xai.budgets.check_window`):
        MONAI pads an image to the window, so a huge ``roi_size`` costs its voxels whatever the image. One int for
        every dim is counted for ``spatial_dims`` dims (None: 2, the fewest; checked again on the images).

        Raises:
            BudgetExceeded: the window's voxels above the cap.
        """
        check_window(self.roi_size, spatial_dims, "the window's roi_size")

    @classmethod
    def of(cls, inferer: Inferer | None) -> SlidingWindow | None:
        """The window of a bundle's inferer: a ``SlidingWindowInferer``'s settings; None for any other inferer, which
        runs the network on the whole image (``SimpleInferer``, or an inferer that also yields another output).

        Raises:
            ValueError: a ``SlidingWindowInferer`` with a different overlap per dim (the explanation windows take
                one overlap for all dims).
        """
        if not isinstance(inferer, SlidingWindowInferer):
            return None
        overlap = inferer.overlap
        if isinstance(overlap, Sequence):
            if len(set(overlap)) != 1:
                raise ValueError(
                    f"the bundle's SlidingWindowInferer has a different overlap per dim {list(overlap)}; the "
                    "explanation windows take one overlap for all dims."
                )
            overlap = overlap[0]
        return cls(inferer.roi_size, int(inferer.sw_batch_size), float(overlap), str(inferer.mode))

    def network(self, network: nn.Module) -> SlidingWindowNetwork:
        """``network`` run window by window with this window (see :class:`SlidingWindowNetwork`)."""
        return SlidingWindowNetwork(network, self)

    def explainer_args(self) -> dict[str, Any]:
        """The :class:`~monai_xai.cams.CAMExplainer` arguments of this window."""
        return {
            "roi_size": self.roi_size,
            "sw_batch_size": self.sw_batch_size,
            "overlap": self.overlap,
            "sw_mode": self.mode,
        }


class SlidingWindowNetwork(nn.Module):
    """A network run window by window, as a bundle's ``SlidingWindowInferer`` runs it: what the metrics that re-run
    the network on perturbed images (ROAD, deletion/insertion) call, so that they score the prediction the bundle makes
    (and a volume larger than the window fits in memory).

    Args:
        network: the segmentation network (its modules stay reachable as ``.network``).
        window: the window.
    """

    def __init__(self, network: nn.Module, window: SlidingWindow) -> None:
        super().__init__()
        self.network = network
        self.window = window

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> the blended (B, C', *spatial) output of the windows."""
        window = self.window
        window.check_size(images.ndim - 2)
        return sliding_window_inference(
            images, window.roi_size, window.sw_batch_size, self.network, overlap=window.overlap, mode=window.mode
        )


def network_as_inferred(
    network: nn.Module,
    inferer: Inferer | None,
    output_head: OutputHead = None,
    network_output: NetworkOutput | str = NetworkOutput.LOGITS,
) -> nn.Module:
    """``network`` as ``inferer`` runs it and as the explanation scores it: what the metrics that re-run the network
    on perturbed images call (the metric overlay's ``"network": "@xai_scored_network"``), so that they score the
    prediction the bundle makes exactly as the step reads it.

    As the step predicts (:meth:`~monai_xai.explanation.ExplainStep.predict`): the prediction head
    (``output_head``, of a deep-supervision network's outputs) is taken from each window's outputs, the windows are
    run and blended as a ``SlidingWindowInferer`` does (:class:`SlidingWindowNetwork`; the whole image for any other
    inferer), and probabilities (``network_output``) become log-probabilities after blending, so that their softmax
    is the bundle's blended prediction itself (:func:`~monai_xai.cams.outputs.scored_network`; ``"auto"`` decided on
    the first pass). With neither a window nor a head nor probabilities it is ``network`` itself.

    Args:
        network: the bundle's network.
        inferer: the bundle's inferer.
        output_head: ``xai_output_head``.
        network_output: ``xai_network_output``.
    """
    window = SlidingWindow.of(inferer)
    head = as_output_head(output_head)
    prediction = network if head is None else ScoredNetwork(network, OutputHandling(head))
    as_inferred = prediction if window is None else window.network(prediction)
    return scored_network(as_inferred, None, network_output)


def _method_names(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"methods (xai_methods) must be a method name or a list of names, got {value!r}.")
    if not names:
        raise ValueError("methods (xai_methods) is empty; give at least one method, e.g. ['gradcam'].")
    check_methods(names, "methods (xai_methods)")  # repeated names, and more than the budget, before any lookup
    get_methods(names)  # unknown names: one error listing the available methods
    return tuple(names)


def layered_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods that explain a target layer (CAMs), leaving out the input attributions, which need none."""
    return tuple(name for name in methods if get_method(name).needs_layer)


def _layers(value: Any, methods: tuple[str, ...]) -> LayerSpec | Mapping[str, LayerSpec] | None:
    if value is None or (isinstance(value, str | Sequence) and not isinstance(value, bool) and len(value) == 0):
        return None
    if isinstance(value, Mapping):
        if layered_methods(methods):
            group_methods_by_layer(value, layered_methods(methods))  # one entry per CAM method, no other
        return dict(value)
    entries = [value] if isinstance(value, str | int | nn.Module) else value
    if isinstance(value, bool) or not isinstance(entries, Sequence):
        raise TypeError(
            f"target_layers (xai_target_layer) must be a layer name, a list of names, or {{method: layer}}, got "
            f"{value!r}."
        )
    for entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, str | int | nn.Module):
            raise TypeError(
                f"target_layers (xai_target_layer) entries must be dotted layer names, got {entry!r}; on the command "
                "line quote a name that looks like a number, e.g. --xai_target_layer '\"1.10\"'."
            )
    return value if isinstance(value, str | int | nn.Module) else tuple(value)


def _class_choice(value: Any) -> ClassChoice:
    choice = as_class_choice(value, "class_idx (xai_class)")
    if choice is None or isinstance(choice, ClassSet):
        return choice
    entries = [choice] if not isinstance(choice, Sequence) or isinstance(choice, str) else list(choice)
    if not entries or not all(isinstance(entry, int) and not isinstance(entry, bool) for entry in entries):
        raise ValueError(
            "class_idx (xai_class) must be an int, one int per sample, classes joined by '+' (a segmenter's classes "
            f"explained together), 'foreground', or null (the predicted class; every foreground class), got {value!r}."
        )
    if any(entry < 0 for entry in entries):
        raise ValueError(f"class_idx (xai_class) must be a non-negative class index, got {value!r}.")
    return entries[0] if isinstance(choice, int) else tuple(entries)


def _pixel_set_key(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"pixel_set_key (xai_pixel_set_key) must be a batch key (a string) or null, got {value!r}.")
    return value


def _window(value: Any) -> SlidingWindow | TiledWindow | None:
    if isinstance(value, Mapping):
        return SlidingWindow(**value)
    if value is not None and not isinstance(value, SlidingWindow | TiledWindow):
        raise TypeError(
            f"window must be a SlidingWindow, a TiledWindow (nnU-Net's) or None, got {type(value).__name__}."
        )
    return value


def _time_each_method(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"time_each_method (xai_time_each_method) must be true or false, got {value!r}.")
    return value


# each field's check: (value as given, the request's methods) -> normalised value
_FIELD_CHECKS: dict[str, Callable[[Any, tuple[str, ...]], Any]] = {
    "methods": lambda value, _: _method_names(value),
    "target_layers": _layers,
    "class_idx": lambda value, _: _class_choice(value),
    "pixel_set": lambda value, _: as_pixel_set_choice(
        PixelSet.PRED if value is None else value, "pixel_set (xai_pixel_set)"
    ),
    "pixel_set_key": lambda value, _: _pixel_set_key(value),
    "score": lambda value, _: as_choice(Score, value, "score (xai_score)"),
    "window": lambda value, _: _window(value),
    "batch_size": lambda value, _: _positive_int(value, "batch_size (perturbed copies per forward pass)"),
    "time_each_method": lambda value, _: _time_each_method(value),
    "reshape": lambda value, _: (
        value if value is None or callable(value) else as_choice(Layout, value, "reshape (xai_reshape)")
    ),
    "model_mode": lambda value, _: as_choice(ModelMode, value, "model_mode (xai_model_mode)"),
    "output_head": lambda value, _: as_output_head(value),
    "network_output": lambda value, _: as_choice(NetworkOutput, value, "network_output (xai_network_output)"),
    "attribution": lambda value, _: AttributionSettings.of(value),
}


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain, checked once (see the module docstring).

    Attributes:
        methods: method names (``monai_xai.cams.method_names()``, or ``"grad-cam:<Class>"``), each once, at most
            ``MONAI_XAI_MAX_METHODS`` (:mod:`monai_xai.budgets`); config id ``xai_methods``.
        target_layers: the layer(s) whose activations a CAM weights, by dotted name, or one per method
            ``{method: layer}`` (an entry for every method); None: chosen on the first batch by
            :func:`~monai_xai.cams.choose_target_layer` (``xai_target_layer``).
        class_idx: the explained class: None (a classifier's predicted class per sample; a segmenter's every
            foreground class together), an int, one int per sample, or several classes of a segmenter explained
            together, each over its own pixel set (:class:`~monai_xai.cams.ClassSet`; configs write ``"1+2+3"`` or
            ``"foreground"``) (``xai_class``).
        pixel_set: a segmenter's pixel set: a :class:`~monai_xai.enums.PixelSet` name or one voxel ``(i, j, k)`` on
            the network's input grid (``xai_pixel_set``); ignored for classifiers.
        pixel_set_key: batch key of a label whose region of the explained class is the pixel set instead
            (``xai_pixel_set_key``); the step then needs that label.
        score: the explained score, ``"logit"`` or ``"probability"`` (``xai_score``).
        window: the network's sliding window (:meth:`SlidingWindow.of` the bundle's inferer), or nnU-Net's tiles,
            mirroring and folds (:class:`~monai_xai.cams.tiles.TiledWindow`); None: the whole image.
        batch_size: perturbed copies per forward pass of ScoreCAM/AblationCAM.
        time_each_method: True: one timed pass per method (each method's time is its own); False: the methods sharing
            a layer share one pass (faster; each method gets the whole pass's time) (``xai_time_each_method``).
        reshape: where the layers keep their channels (None: found; ``"channel_first"``, ``"channel_last"``,
            ``"tokens"`` or a function, see :mod:`monai_xai.cams.layouts`) (``xai_reshape``).
        model_mode: the modes the network is explained (and predicts) in, the mode its own inference uses:
            ``"auto"`` (default: a network in eval mode whose code put normalisation layers in train mode keeps
            them, any other is explained in eval mode), ``"eval"``, ``"norm_train"`` (normalisation layers with each
            input's statistics, as HD-BET) or ``"as_given"`` (:class:`~monai_xai.enums.ModelMode`)
            (``xai_model_mode``).
        output_head: of a network that returns several outputs (deep supervision), the prediction:
            ``"highest_resolution"`` or an index; None: the network returns one tensor (``xai_output_head``).
        network_output: what ``forward`` returns, ``"logits"``, ``"probabilities"`` (a softmax inside ``forward``:
            the score takes them as they are, no second softmax) or ``"auto"`` (default: probabilities when the
            prediction is a distribution over channels) (:class:`~monai_xai.enums.NetworkOutput`)
            (``xai_network_output``).
        attribution: the input-attribution methods' steps, samples, windows, feature groups and budget
            (:class:`~monai_xai.cams.attributions.AttributionSettings`; a dict of its fields) (``xai_attribution``).
    """

    methods: tuple[str, ...]
    target_layers: LayerSpec | Mapping[str, LayerSpec] | None = None
    class_idx: ClassChoice = None
    pixel_set: PixelSet | tuple[int, ...] = PixelSet.PRED
    pixel_set_key: str | None = None
    score: Score = Score.LOGIT
    window: SlidingWindow | TiledWindow | None = None
    batch_size: int = 32
    time_each_method: bool = True
    reshape: Reshape = None
    model_mode: ModelMode = ModelMode.AUTO
    output_head: OutputHead = None
    network_output: NetworkOutput = NetworkOutput.AUTO
    attribution: AttributionSettings = AttributionSettings()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _method_names(self.methods))
        for item in fields(self):
            if item.name != "methods":  # frozen: each value is normalised once, here
                object.__setattr__(self, item.name, self.check_field(item.name, getattr(self, item.name), self.methods))

    @staticmethod
    def check_field(name: str, value: Any, methods: Sequence[str] = ()) -> Any:
        """One field's value normalised and checked as a request checks it, for records that hold some fields of a
        request before others are known (a bundle's settings before the front door chooses its methods).

        Args:
            name: a field name, e.g. ``"class_idx"``.
            value: its value as a config or caller gives it (``"1+2"``, ``[40, 52, 18]``, ``"probability"``, ...).
            methods: the methods (a per-method layer mapping is checked against them when given).

        Raises:
            ValueError, TypeError: the message names the field, its config id, and what it may be.
        """
        if name not in _FIELD_CHECKS:
            raise ValueError(f"ExplainRequest has no field {name!r}; fields: {sorted(_FIELD_CHECKS)}.")
        return _FIELD_CHECKS[name](value, tuple(methods))

    def replace(self, **changes: Any) -> ExplainRequest:
        """A checked copy with the given fields changed."""
        return replace(self, **changes)

    @property
    def needs_layer(self) -> bool:
        """Whether any method explains a target layer (input attributions alone need none)."""
        return bool(layered_methods(self.methods))

    def method_groups(
        self, target_layers: LayerSpec | Mapping[str, LayerSpec] | None
    ) -> list[tuple[LayerSpec | None, tuple[str, ...]]]:
        """The passes of an explanation at ``target_layers`` (the request's, or the chosen layer; None when no method
        needs one): ``[(layer(s), methods explained there)]``, the input attributions as one group with layer None;
        one pass per method, in the order of :attr:`methods`, when each method is timed alone."""
        layered = layered_methods(self.methods)
        groups: list[tuple[LayerSpec | None, tuple[str, ...]]] = (
            list(group_methods_by_layer(target_layers, layered)) if layered else []
        )
        free = tuple(name for name in self.methods if name not in layered)
        if free:
            groups.append((None, free))
        if not self.time_each_method:
            return groups
        layer_of = {method: layers for layers, grouped in groups for method in grouped}
        return [(layer_of[method], (method,)) for method in self.methods]
