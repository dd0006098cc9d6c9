"""The explanation step: one batch explained as a request says, the same way behind every front door.

:class:`ExplainStep` makes every choice a request leaves open, in one place: the network's prediction (with its
sliding window or nnU-Net's tiles, in the model mode its own inference uses, its prediction head read as logits), the
class (a classifier's predicted class; a segmenter's every foreground class), the layer (chosen
once, on the first batch), the pixel set (the named set on the prediction, a label's region of the class, or a set
only the whole prediction defines, resolved before the window), then explains with
:class:`~monai_xai.cams.CAMExplainer` (CAMs; the layer is chosen only when a CAM is requested) and
:class:`~monai_xai.cams.AttributionExplainer` (input attributions, reduced to the same [0, 1] maps, the signed maps
kept; the only methods for a TorchScript network, whose layers run no hooks), both in the same model mode and output
handling, one timed pass per method or one shared pass. It returns an
:class:`Explanation`, the record every consumer reads: the engine handlers (through
:class:`~monai_xai.inferers.XAIInferer`), the study, the sanity checks, MONAI Label and the Python API
(:func:`explain`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.data import MetaTensor
from monai.utils import fall_back_tuple
from torch import nn

from monai_xai.cams.attributions import AttributionExplainer, attribution_map
from monai_xai.cams.explainer import CAMExplainer
from monai_xai.cams.layer_choice import LayerChoice, choose_target_layer
from monai_xai.cams.layers import LayerSpec
from monai_xai.cams.model_mode import pinned_modes, resolve_model_mode
from monai_xai.cams.outputs import OutputHandling, ScoredNetwork
from monai_xai.cams.registry import get_method
from monai_xai.cams.sliding_window import WHOLE_VOLUME_PIXEL_SETS
from monai_xai.cams.targets import ClassSet, class_sets, resolve_pixel_set
from monai_xai.enums import MethodFamily, ModelMode, XAIKeys, attribution_key, saliency_key, seconds_key
from monai_xai.explanation.request import ExplainRequest
from monai_xai.explanation.scripted import is_scripted, layer_free_methods
from monai_xai.utils import label_mask, per_sample_index, preserved_model_state, with_meta_of

__all__ = ["ExplainStep", "ExplainTarget", "Explanation", "class_probabilities", "explain", "predicted_class"]

logger = logging.getLogger(__name__)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def class_probabilities(prediction: torch.Tensor) -> torch.Tensor:
    """(B, C) class probabilities of a classifier's (B, C) output: softmax over classes; a single output's sigmoid as
    (B, 1)."""
    logits = _plain(prediction).float()
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)


def predicted_class(prediction: torch.Tensor) -> torch.Tensor:
    """(B,) long predicted class of a classifier's (B, C) output: argmax; a single output: 1 when its logit is > 0."""
    logits = _plain(prediction)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


@dataclass(frozen=True)
class ExplainTarget:
    """What a batch's maps explain, fixed as tensors: to explain another network (a re-initialised copy, a
    perturbed one) on exactly the same target.

    Attributes:
        class_idx: (B,) long, the class of each case; (B, K) for K classes of a segmenter explained together.
        pixel_set: a segmenter's (B, 1, *spatial) pixel set in [0, 1] ((B, K, *spatial) for K classes); None for a
            classifier.
    """

    class_idx: torch.Tensor
    pixel_set: torch.Tensor | None


@dataclass
class Explanation:
    """One batch explained: everything a consumer of the maps needs.

    Attributes:
        maps: method -> (B, 1, *spatial) float32 map in [0, 1] on the images' device (with the images' meta when they
            are a MetaTensor).
        class_idx: (B,) long, the class each map explains; (B, K) for K classes explained together.
        pixel_set: a segmenter's (B, 1, *spatial) explained pixel set ((B, K, *spatial) for K classes), resolved on
            :attr:`prediction` (or the label's region); None for a classifier.
        seconds: method -> (B,) float64, the method's wall time on the batch divided by the batch size (with
            ``time_each_method=False``: the time of the pass it shared).
        prediction: the network's output on the images, (B, num_classes) or (B, C, *spatial), detached.
        layers: method -> the layer(s) it explained (None for an input attribution).
        attributions: input-attribution method -> its signed (B, C, *spatial) float32 attribution, one channel per
            input channel (:attr:`maps` holds its reduction,
            :func:`~monai_xai.cams.attributions.attribution_map`); CAM methods have none.
    """

    maps: dict[str, torch.Tensor]
    class_idx: torch.Tensor
    pixel_set: torch.Tensor | None
    seconds: dict[str, torch.Tensor]
    prediction: torch.Tensor
    layers: dict[str, LayerSpec | None]
    attributions: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def segmentation(self) -> bool:
        return self.prediction.ndim > 2

    @property
    def target(self) -> ExplainTarget:
        """The explained target as tensors (see :class:`ExplainTarget`)."""
        return ExplainTarget(self.class_idx, self.pixel_set)

    def probabilities(self) -> torch.Tensor | None:
        """(B, C) class probabilities of a classifier's prediction (:func:`class_probabilities`), None for a
        segmenter."""
        return None if self.segmentation else class_probabilities(self.prediction)

    def predicted_class(self) -> torch.Tensor | None:
        """(B,) predicted class of a classifier (:func:`predicted_class`), None for a segmenter."""
        return None if self.segmentation else predicted_class(self.prediction)

    def engine_output(self) -> dict[str, torch.Tensor]:
        """The batch's values under the engine-output keys (:class:`~monai_xai.enums.XAIKeys`) that the handlers and
        writers read: ``saliency_<method>``, ``xai_seconds_<method>``, ``xai_class``, for a segmenter
        ``xai_pixel_set``, and for an input attribution ``xai_attribution_<method>``."""
        output: dict[str, torch.Tensor] = {XAIKeys.CLASS: self.class_idx.detach().clone()}
        if self.pixel_set is not None:
            output[XAIKeys.PIXEL_SET] = self.pixel_set
        for method, maps in self.maps.items():
            output[saliency_key(method)] = maps
            output[seconds_key(method)] = self.seconds[method]
        for method, attributions in self.attributions.items():
            output[attribution_key(method)] = attributions
        return output


def _window_class(classes: torch.Tensor) -> int | ClassSet:
    """The one class (or class set) of a batch whose every case explains the same ones: windows of different cases
    share a forward pass."""
    first = classes[:1]
    if not torch.equal(classes, first.expand_as(classes)):
        raise ValueError(
            "with a sliding window, windows of different cases share a forward pass, so every case of a batch must "
            f"explain the same class(es), got {classes.tolist()}; set one class (xai_class) or explain one case at a "
            "time."
        )
    return ClassSet(tuple(first[0].tolist())) if classes.ndim == 2 else int(first[0])


class ExplainStep:
    """Explain batches as ``request`` says (see the module docstring); the layer, when the request names none, is
    chosen on the first batch and kept (:attr:`chosen_layer`).

    Args:
        request: what to explain.

    Example::

        step = ExplainStep(ExplainRequest(methods=("gradcam", "hirescam"), class_idx=1))
        explanation = step(network, images)          # predicts, then explains
        explanation.maps["gradcam"]                  # (B, 1, *spatial) in [0, 1]
        again = step(other_network, images, target=explanation.target)  # the same target on another network
    """

    def __init__(self, request: ExplainRequest) -> None:
        if not isinstance(request, ExplainRequest):
            raise TypeError(f"request must be an ExplainRequest, got {type(request).__name__}.")
        self.request = request
        self.chosen_layer: LayerChoice | None = None
        self._chosen_class: ClassSet | None = None
        # what was logged of the model mode and the outputs (once per step, not per batch)
        self._told: set[str] = set()

    def predict(self, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The network's output on ``images`` (B, C, *spatial) as logits (:meth:`output_handling`), without
        gradients, in the request's model mode; window by window with the request's sliding window (blended as
        MONAI's ``SlidingWindowInferer`` does)."""
        prediction = self._predict_head(network, images)
        return self.output_handling(prediction)(prediction)

    def _predict_head(self, network: nn.Module, images: torch.Tensor) -> Any:
        """The network's prediction head (:attr:`ExplainRequest.output_head`) on ``images``, as ``forward`` returns
        it (logits or probabilities), blended over the request's sliding window."""
        window = self.request.window
        head = self.request.output_head
        # the prediction head only: the step turns probabilities into logits itself (output_handling)
        forward = network if head is None else ScoredNetwork(network, OutputHandling(head))
        with torch.no_grad(), self.model_mode(network), preserved_model_state(network):
            # window by window (SlidingWindowNetwork) or tile by tile (TiledNetwork), as the bundle's inferer runs it
            return forward(images) if window is None else window.network(forward)(images)

    def model_mode(self, network: nn.Module) -> Any:
        """The context in which ``network`` predicts and is explained: the request's
        :attr:`~ExplainRequest.model_mode` resolved on the network as it is now (logged once when it is not plain
        eval mode)."""
        mode, reason = resolve_model_mode(network, self.request.model_mode)
        if reason not in self._told and (mode != ModelMode.EVAL or network.training):
            self._told.add(reason)
            logger.info(f"xai: model mode {mode.value!r}: {reason}")
        return pinned_modes(network, mode)

    def output_handling(self, prediction: Any) -> OutputHandling:
        """How the network's outputs become the explained logits (:class:`~monai_xai.cams.outputs.OutputHandling`):
        the request's head and network output, ``"auto"`` decided on ``prediction`` (the raw output of one batch);
        logged once when the network returns probabilities."""
        handling = OutputHandling.resolve(prediction, self.request.output_head, self.request.network_output)
        if handling.probabilities and "probabilities" not in self._told:
            self._told.add("probabilities")
            logger.info(
                "xai: the network returns probabilities (softmax inside forward): scores take them as they are, no "
                "second softmax; the 'logit' score is the log-probability (xai_network_output)"
            )
        return handling

    def __call__(
        self,
        network: nn.Module,
        images: torch.Tensor,
        prediction: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target: ExplainTarget | None = None,
    ) -> Explanation:
        """Explain one batch.

        Args:
            network: the network to explain.
            images: (B, C, H, W) or (B, C, D, H, W) float batch (a MetaTensor's meta goes onto the maps).
            prediction: the network's output on ``images`` when the caller already has it (e.g. the bundle's inferer
                ran it); None: :meth:`predict`.
            labels: (B, L, *spatial) label batch whose region of the explained class is the pixel set; required
                with the request's ``pixel_set_key``.
            target: explain exactly this target (e.g. ``explanation.target`` of another network) instead of choosing
                the class and pixel set.

        Raises:
            ValueError: one error naming every choice that cannot be made (the layer, the class of a network whose
                output is not one tensor), a class or label that does not fit, or a request the network cannot take.
            BudgetExceeded: a window, or an input attribution, above its budget (:mod:`monai_xai.budgets`).
        """
        if self.request.window is not None:  # one roi_size for every dim is counted for these images' dims
            self.request.window.check_size(images.ndim - 2)
        if prediction is None:
            prediction = self._predict_head(network, _plain(images))
        handling = self.output_handling(prediction)
        try:
            prediction = handling(prediction)
        except ValueError as error:
            raise ValueError(f"the explanation could not read the network's prediction: {error}") from error
        one_tensor = isinstance(prediction, torch.Tensor) and prediction.ndim >= 2
        outputs = _plain(prediction).detach() if one_tensor else prediction
        classes, window_class = self._classes(network, images, outputs, target)
        pixel_set, explained_set = self._pixel_sets(outputs, classes, labels, target)
        layer_of: dict[str, LayerSpec | None] = {}
        maps: dict[str, torch.Tensor] = {}
        attributions: dict[str, torch.Tensor] = {}
        seconds: dict[str, torch.Tensor] = {}
        pixels = _plain(images)
        explained_class = window_class if self.request.window is not None else classes
        with torch.enable_grad():
            for layers, grouped in self.request.method_groups(self._target_layers()):
                controls = tuple(method for method in grouped if get_method(method).family == MethodFamily.CONTROL)
                for method in controls:  # the sanity checks' controls: from the image alone, never the network
                    start = time.perf_counter()
                    maps[method] = with_meta_of(get_method(method).function(pixels).float(), images)
                    per_case = (time.perf_counter() - start) / pixels.shape[0]
                    seconds[method] = torch.full((pixels.shape[0],), per_case, dtype=torch.float64)
                    layer_of[method] = None
                methods = tuple(method for method in grouped if method not in controls)
                if not methods:
                    continue
                explainer = self._explainer(network, layers, methods, handling)
                # an attribution of the whole image builds its target on the prediction instead of a forward pass
                given = {"outputs": outputs} if layers is None and self.request.window is None else {}
                start = time.perf_counter()
                group_maps = explainer(pixels, class_idx=explained_class, pixel_set=explained_set, **given)
                if pixels.device.type == "cuda":
                    torch.cuda.synchronize(pixels.device)
                per_case = (time.perf_counter() - start) / pixels.shape[0]
                for method in methods:
                    if layers is None:  # an input attribution: the signed map, and its [0, 1] reduction
                        attributions[method] = with_meta_of(group_maps[method].float(), images)
                        group_maps[method] = attribution_map(group_maps[method]).float()
                    maps[method] = with_meta_of(group_maps[method], images)
                    seconds[method] = torch.full((pixels.shape[0],), per_case, dtype=torch.float64)
                    layer_of[method] = layers
        return Explanation(
            maps={method: maps[method] for method in self.request.methods},
            class_idx=classes,
            pixel_set=None if pixel_set is None else with_meta_of(pixel_set, images),
            seconds={method: seconds[method] for method in self.request.methods},
            prediction=outputs,
            layers=layer_of,
            attributions={method: attributions[method] for method in self.request.methods if method in attributions},
        )

    def _explainer(
        self, network: nn.Module, layers: LayerSpec | None, methods: tuple[str, ...], handling: OutputHandling
    ) -> CAMExplainer | AttributionExplainer:
        """The explainer of one pass: the CAMs of a layer, or the input attributions (layer None); both in the
        request's model mode, scoring the network's outputs as ``handling`` reads them (head, probabilities), with the
        request's window (MONAI's sliding window or nnU-Net's tiles)."""
        request = self.request
        window = request.window.explainer_args() if request.window is not None else {}
        as_inferred = {"model_mode": request.model_mode, "outputs": handling, **window}
        if layers is None:
            return AttributionExplainer(
                network, methods, request.score, request.batch_size, request.attribution, **as_inferred
            )
        return CAMExplainer(
            network,
            layers,
            methods,
            score=request.score,
            batch_size=request.batch_size,
            reshape=request.reshape,
            **as_inferred,
        )

    def _target_layers(self) -> LayerSpec | Mapping[str, LayerSpec] | None:
        if self.request.target_layers is not None or not self.request.needs_layer:
            return self.request.target_layers
        return self.chosen_layer.name

    def _classes(
        self, network: nn.Module, images: torch.Tensor, outputs: Any, target: ExplainTarget | None
    ) -> tuple[torch.Tensor, int | ClassSet | None]:
        """The explained classes (:meth:`classes`), and the class setting a sliding window takes (one for the
        batch); chooses the layer when the request names none. One error lists every choice that cannot be made."""
        problems = []
        classes = None
        if not isinstance(outputs, torch.Tensor) or outputs.shape[0] != images.shape[0]:
            problems.append(
                "xai_class: no class can be chosen for a network output that is not one tensor (B, num_classes) or "
                f"(B, C, *spatial) with one row per image, got {type(outputs).__name__}"
                f"{tuple(getattr(outputs, 'shape', ()))} for {images.shape[0]} image(s); for a deep-supervision "
                "network's list of outputs set xai_output_head 'highest_resolution' (or the prediction's index)"
            )
        else:
            try:
                classes = self.classes(outputs, target)
            except ValueError as error:
                problems.append(f"xai_class: {error}")
        layered = [method for method in self.request.methods if method not in layer_free_methods(self.request.methods)]
        if is_scripted(network) and layered:
            problems.append(
                f"xai_methods: {type(network).__name__} is a TorchScript module, whose layers run no forward hooks, so "
                f"CAMs ({', '.join(layered)}) cannot be computed on it; explain it with input attributions, which need "
                f"no layer, e.g. {list(layer_free_methods(self.request.methods, fallback=True))} "
                "(monai_xai.explanation.methods_for)"
            )
        elif self.request.target_layers is None and self.chosen_layer is None and self.request.needs_layer:
            try:
                self._choose_layer(network, images)
            except ValueError as error:
                problems.append(f"xai_target_layer: {error}")
        if problems:
            raise ValueError(
                "the explanation could not make the choices left to it; set these config ids (e.g. "
                "--xai_target_layer <name> --xai_class <int>):\n- " + "\n- ".join(problems)
            )
        return classes, None if self.request.window is None else _window_class(classes)

    def classes(self, prediction: torch.Tensor, target: ExplainTarget | None = None) -> torch.Tensor:
        """The classes the maps of a batch explain, as :meth:`__call__` chooses them: ``target``'s, else the
        request's, else a classifier's predicted class per case or a segmenter's every foreground class.

        Args:
            prediction: the network's output (B, num_classes) or (B, C, *spatial).
            target: a fixed target (its classes are taken as they are).

        Returns:
            (B,) long; (B, K) for K classes of a segmenter explained together.

        Raises:
            ValueError: several classes for a classifier, or a class out of the network's range.
        """
        outputs = _plain(prediction)
        batch_size, num_classes = outputs.shape[:2]
        setting = target.class_idx if target is not None else self._class_setting(outputs)
        if isinstance(setting, torch.Tensor):
            classes = setting.to(outputs.device, torch.long)
        elif setting is None:
            classes = outputs.argmax(dim=1)
        elif isinstance(setting, ClassSet):
            classes = class_sets(setting, batch_size, num_classes, outputs.device)
        else:
            classes = per_sample_index(setting, batch_size, outputs.device)
        if ((classes < 0) | (classes >= num_classes)).any():
            raise ValueError(
                f"class_idx (xai_class) {classes.tolist()} out of range: the network has {num_classes} output classes "
                f"(0..{num_classes - 1})."
            )
        return classes

    def _class_setting(self, outputs: torch.Tensor) -> Any:
        """The request's class, else a classifier's predicted class (None) or a segmenter's every foreground class."""
        if outputs.ndim == 2 and isinstance(self.request.class_idx, ClassSet):
            raise ValueError(
                f"several classes at once ({self.request.class_idx}) are only explained for a segmenter's outputs "
                f"(B, C, *spatial); this network returns {tuple(outputs.shape)}: give one class, or null for each "
                "case's predicted class."
            )
        if self.request.class_idx is not None or outputs.ndim == 2:
            return self.request.class_idx
        if self._chosen_class is None:
            logger.info(
                "xai: no class given for a segmenter with %d output channel(s): explaining every foreground class "
                "together, each over its own pixel set (set xai_class for one class)",
                outputs.shape[1],
            )
            self._chosen_class = ClassSet()
        return self._chosen_class

    def _choose_layer(self, network: nn.Module, images: torch.Tensor) -> None:
        """Choose the layer from the first case of ``images`` (with a sliding window, its ROI-sized corner,
        zero-padded where the image is smaller; with a 2D window on volumes, the corner of its middle slice along the
        first spatial dim), log it and keep it in :attr:`chosen_layer`."""
        sample = _plain(images[:1])
        window = self.request.window
        if window is not None:
            if isinstance(window.roi_size, tuple) and len(window.roi_size) == sample.ndim - 3:
                sample = sample[:, :, sample.shape[2] // 2]
            roi = fall_back_tuple(window.roi_size, sample.shape[2:])
            sample = sample[(slice(None), slice(None), *(slice(0, size) for size in roi))]
            # F.pad takes (before, after) pairs from the last dim backwards
            padding = [pad for size, have in zip(roi[::-1], sample.shape[:1:-1]) for pad in (0, size - have)]
            sample = torch.nn.functional.pad(sample, padding)
        head = OutputHandling(self.request.output_head)
        with self.model_mode(network):
            self.chosen_layer = choose_target_layer(ScoredNetwork(network, head), sample)
        logger.info(f"xai: explaining layer {self.chosen_layer.name!r} ({self.chosen_layer.reason})")

    def _pixel_sets(
        self,
        outputs: torch.Tensor,
        classes: torch.Tensor,
        labels: torch.Tensor | None,
        target: ExplainTarget | None,
    ) -> tuple[torch.Tensor | None, Any]:
        """A segmenter's resolved pixel set (B, 1 or K, *spatial), and what the explainer is given: the named set
        (resolved again on each forward pass, per window with a sliding window) or a tensor. (None, None) for a
        classifier."""
        if outputs.ndim <= 2:
            return None, None
        if target is not None:
            return target.pixel_set, target.pixel_set
        request = self.request
        if request.pixel_set_key is not None:
            region = self._label_region(outputs, classes, labels)
            return region, region
        resolved = resolve_pixel_set(outputs, classes, request.pixel_set)
        # a set only the whole prediction defines is given resolved to a sliding window, which never sees it whole
        whole_volume = request.window is not None and request.pixel_set in WHOLE_VOLUME_PIXEL_SETS
        return resolved, resolved if whole_volume else request.pixel_set

    def _label_region(self, outputs: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, *spatial) region of each case's class in ``labels``; (B, K, *spatial), one per class, for (B, K)
        classes."""
        key = self.request.pixel_set_key
        if labels is None:
            raise ValueError(
                f"pixel_set_key={key!r} explains the label's region of the class: pass the label batch (labels=...); "
                "in an engine the XAIInferer reads it from the batch when it is attached (listed in val_handlers)."
            )
        label = _plain(torch.as_tensor(labels)).to(outputs.device)
        if label.shape[0] != outputs.shape[0] or label.shape[2:] != outputs.shape[2:]:
            raise ValueError(
                f"the label under {key!r} has shape {tuple(label.shape)}, which does not match the network's output "
                f"{tuple(outputs.shape)} in batch and spatial size; preprocess it with the same spatial transforms."
            )
        return label_mask(label, classes)


def explain(network: nn.Module, images: torch.Tensor, **request: Any) -> Explanation:
    """Explain one batch: the Python API's door to the explanation step.

    Args:
        network: the network to explain.
        images: (B, C, H, W) or (B, C, D, H, W) float batch on the network's device.
        request: the :class:`~monai_xai.explanation.ExplainRequest` fields, e.g. ``methods=("gradcam",)``,
            ``class_idx=1``, ``pixel_set="pred"``, ``window=SlidingWindow((96, 96, 96))``.

    Example::

        from monai_xai.explanation import explain
        explanation = explain(network, images, methods=["gradcam", "hirescam"], target_layers="layer4")
        explanation.maps["gradcam"], explanation.class_idx
    """
    return ExplainStep(ExplainRequest(**request))(network, images)
