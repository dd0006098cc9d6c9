"""``XAIInferer``: wrap any MONAI inferer so that every evaluator iteration also yields class-activation maps.

MONAI's ``SupervisedEvaluator._iteration`` stores whatever the inferer returns under ``engine.state.output["pred"]``
and runs it inside ``torch.no_grad()``. Returning a dict there would break every bundle's postprocessing (it expects
``"pred"`` to be a tensor), so the inferer returns the prediction unchanged and keeps the maps of its latest call in
:attr:`XAIInferer.explanations`. Attached to the engine (it is also an ignite handler: put it in ``val_handlers``), it
copies them into ``engine.state.output`` on ``IterationEvents.FORWARD_COMPLETED``, i.e. before MONAI decollates the
batch and runs the postprocessing, so each case's output dict carries its own maps. This needs no evaluator subclass
and no custom ``iteration_update``, so any bundle's evaluator works as it is; a config overlay only swaps the
evaluator's ``inferer`` and appends the inferer to its handlers (see ``configs/explain.json``).

The engine output then carries the explanation and its target under the keys of :class:`~monai_xai.enums.XAIKeys`,
which is all the handlers and writers read:

- ``"saliency_<method>"``: (B, 1, *spatial) float32 map in [0, 1] (a MetaTensor with the input's meta, e.g. affine).
- ``"xai_class"``: (B,) int64, the class each map explains; (B, K) when a segmenter explains K classes together
  (:class:`~monai_xai.cams.ClassSet`).
- ``"xai_pixel_set"``: segmentation only, (B, 1, *spatial) float, the pixel set the maps explain: the label's region
  of the class (``pixel_set_key``), or the named set resolved on the wrapped inferer's prediction; (B, K, *spatial),
  one set per class, for K classes. With a sliding window and ``"pred"``, each window explains its own prediction,
  which differs from the blended one only where windows overlap.
- ``"xai_seconds_<method>"``: (B,) float, wall time of the method on the batch divided by the batch size (with
  ``time_each_method=False``: of all methods together, the same value under every method).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from monai.utils import fall_back_tuple
from torch import nn

from monai_xai.cams import (
    CAMExplainer,
    ClassSet,
    LayerChoice,
    LayerSpec,
    as_class_choice,
    as_pixel_set_choice,
    choose_target_layer,
    group_methods_by_layer,
    resolve_pixel_set,
)
from monai_xai.cams.layouts import Reshape
from monai_xai.cams.sliding_window import WHOLE_VOLUME_PIXEL_SETS
from monai_xai.cams.targets import class_sets
from monai_xai.enums import PixelSet, Score, XAIKeys, as_choice, saliency_key, seconds_key
from monai_xai.utils import label_mask, per_sample_index

__all__ = ["XAIInferer"]

logger = logging.getLogger(__name__)


def _with_meta_of(maps: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``maps`` carrying the batch meta of ``inputs`` (affine per case, filenames, ``is_batch``) if it has any.

    The meta is attached after construction, as MONAI's collate does: ``MetaTensor(x, meta=batched_meta)`` fails on
    collated entries such as ``original_channel_dim``.
    """
    if not isinstance(inputs, MetaTensor):
        return maps
    wrapped = MetaTensor(maps.as_tensor() if isinstance(maps, MetaTensor) else maps)
    wrapped.copy_meta_from(inputs)
    return wrapped


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


class XAIInferer(Inferer):
    """An inferer that returns ``inferer``'s prediction and computes CAMs of the same inputs with gradients enabled.

    By default each method runs its own forward and backward pass (a fresh :class:`~monai_xai.cams.CAMExplainer` per
    method) so that the per-method timing is that method's cost alone. ``time_each_method=False`` explains with all
    methods at once: the gradient methods then share one forward and one backward pass (8 methods cost about one),
    and each method's recorded time is that of the whole call. With a :class:`~monai.inferers.SlidingWindowInferer`
    the maps are computed window by window with the same ``roi_size``, ``sw_batch_size``, ``overlap`` and blending
    mode.

    Args:
        inferer: the bundle's inferer (``SimpleInferer`` when None); its prediction is returned unchanged.
        target_layers: layer(s) to explain, e.g. ``"layer4"`` or ``"model.1.submodule"`` (see ``CAMExplainer``), or
            one per method, ``{"gradcam": "model.1", "hirescam": "0", ...}`` (an entry for every method; with
            ``time_each_method=False`` the methods sharing a layer share a pass). None or ``""``: chosen at the
            first call from the first case of the batch (with a sliding window, from one ROI-sized crop of it) by
            :func:`~monai_xai.cams.choose_target_layer`, logged at INFO and kept in :attr:`chosen_layer`.
        methods: CAM method names, e.g. ``("gradcam", "hirescam")``.
        class_idx: class to explain: None (classifiers: the predicted class of each sample; segmenters: every
            foreground class at once, i.e. with ``"pred"`` the classes present in each prediction, logged), an int, or
            one per sample. Segmenters also take several classes explained together, each over its own pixel set
            (:class:`~monai_xai.cams.ClassSet`, or as a config gives it: ``"1+2+3"``, ``"foreground"``).
        pixel_set: segmentation pixel set (ignored for classifiers) when ``pixel_set_key`` is None: ``"pred"``
            (predicted region of the class, default), ``"largest_component"``, ``"image"`` (every voxel; with
            ``score="probability"``, the class's expected volume), ``"empty"`` (the study's control: all-zero maps),
            ``"peak"`` (the voxel of the class's highest score in each image; with a sliding window, as
            ``"largest_component"``, resolved on the whole prediction)
            or one voxel ``[i, j, k]`` on the network's input grid; see :class:`~monai_xai.enums.PixelSet`.
        pixel_set_key: batch key of a label map (B, 1, *spatial) or one-hot label (B, C, *spatial) whose region of
            the explained class is the pixel set (e.g. ``"label"``); needs the inferer to be attached to the engine.
        score: ``"logit"`` or ``"probability"`` (see ``CAMExplainer``).
        batch_size: perturbed copies per forward pass of ScoreCAM/AblationCAM.
        reshape: where the target layers keep their channels (see ``CAMExplainer``; None finds it: channel-first,
            channel-last Swin blocks, transformer tokens).
        time_each_method: True: one pass per method, timed alone; False: one shared call for all methods (faster;
            the time is per call).

    Example::

        inferer = XAIInferer(SlidingWindowInferer(roi_size=(32, 32, 32)), "model.1.submodule", ["gradcam"], class_idx=1)
        evaluator = SupervisedEvaluator(device, loader, net, inferer=inferer, val_handlers=[inferer, writer])
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        target_layers: LayerSpec | Mapping[str, LayerSpec] | None = None,
        methods: str | Sequence[str] = ("gradcam",),
        class_idx: int | Sequence[int] | ClassSet | str | None = None,
        pixel_set: PixelSet | str | Sequence[int] = PixelSet.PRED,
        pixel_set_key: str | None = None,
        score: Score | str = Score.LOGIT,
        batch_size: int = 32,
        time_each_method: bool = True,
        reshape: Reshape = None,
    ) -> None:
        super().__init__()
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI Inferer (callable), got {type(inferer).__name__}.")
        self.pixel_set = as_pixel_set_choice(pixel_set, "pixel_set")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.target_layers = target_layers or None
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not self.methods:
            raise ValueError("methods is empty; give at least one CAM method, e.g. methods=['gradcam'].")
        self.time_each_method = time_each_method
        # the layer of each pass, and the pass's methods; None until a layer is chosen
        self._passes = None if self.target_layers is None else self._group(self.target_layers)
        self.chosen_layer: LayerChoice | None = None
        self.class_idx = as_class_choice(class_idx, "class_idx")
        self.pixel_set_key = pixel_set_key
        self.score = as_choice(Score, score, "score")
        self.batch_size = batch_size
        self.reshape = reshape
        self.explanations: dict[str, torch.Tensor] = {}
        self._attached_engine: Any = None

    def _group(self, target_layers: LayerSpec | Mapping[str, LayerSpec]) -> list[tuple[LayerSpec, tuple[str, ...]]]:
        """The passes to run: (layers, methods explained there); one per method when each method is timed alone."""
        layer_groups = group_methods_by_layer(target_layers, self.methods)
        if self.time_each_method:
            # one pass per method, in the order of `methods`
            layer_of = {method: layers for layers, grouped in layer_groups for method in grouped}
            layer_groups = [(layer_of[method], (method,)) for method in self.methods]
        return layer_groups

    def _choose_layer(self, inputs: torch.Tensor, network: nn.Module) -> list[tuple[LayerSpec, tuple[str, ...]]]:
        """Choose the layer from the first case of ``inputs`` (B, C, *spatial) (with a sliding window, its ROI-sized
        corner, zero-padded where the image is smaller), log it and keep it in :attr:`chosen_layer`."""
        sample = _plain(inputs[:1])
        if self._sliding_window():
            roi = fall_back_tuple(self.inferer.roi_size, sample.shape[2:])
            sample = sample[(slice(None), slice(None), *(slice(0, size) for size in roi))]
            # F.pad takes (before, after) pairs from the last dim backwards
            padding = [pad for size, have in zip(roi[::-1], sample.shape[:1:-1]) for pad in (0, size - have)]
            sample = torch.nn.functional.pad(sample, padding)
        self.chosen_layer = choose_target_layer(network, sample)
        logger.info("xai: explaining layer %r (%s)", self.chosen_layer.name, self.chosen_layer.reason)
        return self._group(self.chosen_layer.name)

    def _explained_class(self, prediction: Any) -> int | Sequence[int] | ClassSet | None:
        """The class setting to explain ``prediction`` with: the given one, else (segmenters) every foreground class.

        Raises:
            ValueError: no class given and ``prediction`` is neither a classifier's (B, C) nor a segmenter's
                (B, C, *spatial) tensor.
        """
        if self.class_idx is not None:
            return self.class_idx
        if isinstance(prediction, torch.Tensor) and prediction.ndim > 2:
            logger.info(
                "xai: no class given for a segmenter with %d output channel(s): explaining every foreground class "
                "together, each over its own pixel set (set xai_class for one class)",
                prediction.shape[1],
            )
            self.class_idx = ClassSet()
            return self.class_idx
        if isinstance(prediction, torch.Tensor) and prediction.ndim == 2:
            return None
        raise ValueError(
            "no class can be chosen for a network output that is not one tensor (B, C) or (B, C, *spatial), got "
            f"{type(prediction).__name__}{tuple(getattr(prediction, 'shape', ()))}"
        )

    def _choices(
        self, inputs: torch.Tensor, network: nn.Module, prediction: Any
    ) -> int | Sequence[int] | ClassSet | None:
        """The class setting of this batch (:meth:`_explained_class`), and the layer when it is still open (chosen
        once); one error lists every choice that cannot be made."""
        problems = []
        chosen_class = None
        try:
            chosen_class = self._explained_class(prediction)
        except ValueError as error:
            problems.append(f"xai_class: {error}")
        if self._passes is None:
            try:
                self._passes = self._choose_layer(inputs, network)
            except ValueError as error:
                problems.append(f"xai_target_layer: {error}")
        if problems:
            raise ValueError(
                "XAIInferer could not make the choices left to it; set these config ids (e.g. --xai_target_layer "
                "<name> --xai_class <int>):\n- " + "\n- ".join(problems)
            )
        return chosen_class

    def attach(self, engine: Any) -> None:
        """Copy each iteration's maps into ``engine.state.output``; ``pixel_set_key`` is read from
        ``engine.state.batch``."""
        self._attached_engine = engine
        if not engine.has_event_handler(self._add_to_output, IterationEvents.FORWARD_COMPLETED):
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._add_to_output)

    def _add_to_output(self, engine: Any) -> None:
        if not self.explanations:
            raise RuntimeError(
                "the engine has an attached XAIInferer but ran another inferer; make it the evaluator's inferer "
                '(in a bundle config: "+evaluator": {"inferer": "@xai_inferer"}, as configs/explain.json does).'
            )
        engine.state.output.update(self.explanations)
        self.explanations = {}

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped inferer, then explain ``inputs``; the maps land in :attr:`explanations`.

        Args:
            inputs: (B, C, H, W) or (B, C, D, H, W) batch (a MetaTensor keeps its meta on the maps).
            network: the network the evaluator runs.
            args, kwargs: passed to the wrapped inferer.

        Returns:
            the wrapped inferer's prediction, unchanged.
        """
        prediction = self.inferer(inputs, network, *args, **kwargs)
        self.explanations = self.explain(inputs, network, prediction)
        return prediction

    def explain(self, inputs: torch.Tensor, network: nn.Module, prediction: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps, explained classes, pixel set and timings for one batch (the dict :meth:`__call__` stores, keyed by
        :class:`~monai_xai.enums.XAIKeys`).

        Args:
            inputs: (B, C, *spatial) batch.
            network: the network to explain.
            prediction: the network's output on ``inputs``: (B, num_classes) or (B, C, *spatial); gives the predicted
                class when ``class_idx`` is None and the named pixel set of a segmentation network.
        """
        batch_size = inputs.shape[0]
        chosen_class = self._choices(inputs, network, prediction)
        if chosen_class is None:
            class_idx = prediction.argmax(dim=1)
        elif isinstance(chosen_class, ClassSet):
            class_idx = class_sets(chosen_class, batch_size, prediction.shape[1], inputs.device)
        else:
            class_idx = per_sample_index(chosen_class, batch_size, inputs.device)
        outputs: dict[str, torch.Tensor] = {XAIKeys.CLASS: class_idx.detach().clone()}
        # the pixel set only exists for segmentation outputs
        explained_set: PixelSet | tuple[int, ...] | torch.Tensor | None = None
        if isinstance(prediction, torch.Tensor) and prediction.ndim > 2:
            if self.pixel_set_key is not None:
                explained_set = resolved = self._label_pixel_set(inputs, class_idx)
            else:
                resolved = resolve_pixel_set(_plain(prediction).detach(), class_idx, self.pixel_set)
                # the explainer resolves the named set on its own forward pass (per window with a sliding window),
                # except a set only the whole prediction defines, which it is given resolved
                whole_volume = self._sliding_window() and self.pixel_set in WHOLE_VOLUME_PIXEL_SETS
                explained_set = resolved if whole_volume else self.pixel_set
            outputs[XAIKeys.PIXEL_SET] = _with_meta_of(resolved, inputs)
        # a sliding window needs the class as given (one int or ClassSet for the batch), not the per-sample tensor
        explained_class = class_idx if chosen_class is None else chosen_class
        pixels = _plain(inputs)
        with torch.enable_grad():
            for layers, methods in self._passes:
                explainer = self._explainer(network, layers, methods)
                start = time.perf_counter()
                maps = explainer(pixels, class_idx=explained_class, pixel_set=explained_set)
                if inputs.device.type == "cuda":
                    torch.cuda.synchronize(inputs.device)
                seconds = (time.perf_counter() - start) / batch_size
                for method in methods:
                    outputs[saliency_key(method)] = _with_meta_of(maps[method], inputs)
                    outputs[seconds_key(method)] = torch.full((batch_size,), seconds, dtype=torch.float64)
        return outputs

    def _sliding_window(self) -> bool:
        return isinstance(self.inferer, SlidingWindowInferer)

    def _explainer(self, network: nn.Module, layers: LayerSpec, methods: tuple[str, ...]) -> CAMExplainer:
        window: dict[str, Any] = {}
        if self._sliding_window():
            window = {
                "roi_size": self.inferer.roi_size,
                "sw_batch_size": self.inferer.sw_batch_size,
                "overlap": self.inferer.overlap,
                "sw_mode": str(self.inferer.mode),  # a MONAI StrEnum: str() is its value
            }
        return CAMExplainer(
            network, layers, methods, score=self.score, batch_size=self.batch_size, reshape=self.reshape, **window
        )

    def _label_pixel_set(self, inputs: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """(B, 1, *spatial) region of each case's class in the batch's ``pixel_set_key`` label; (B, K, *spatial), one
        per class, for (B, K) classes."""
        if self._attached_engine is None:
            raise RuntimeError(
                f"pixel_set_key={self.pixel_set_key!r} reads the label from the engine's batch: attach the inferer to "
                "the evaluator (put it in val_handlers, or call inferer.attach(evaluator))."
            )
        batch = self._attached_engine.state.batch
        if not isinstance(batch, dict) or self.pixel_set_key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(
                f"pixel_set_key {self.pixel_set_key!r} is not in the batch (keys: {keys}); set --xai_pixel_set_key."
            )
        label = _plain(torch.as_tensor(batch[self.pixel_set_key])).to(inputs.device)
        if label.shape[0] != inputs.shape[0] or label.shape[2:] != inputs.shape[2:]:
            raise ValueError(
                f"batch[{self.pixel_set_key!r}] has shape {tuple(label.shape)}, which does not match the images "
                f"{tuple(inputs.shape)} in batch and spatial size; preprocess it with the same spatial transforms."
            )
        return label_mask(label, class_idx)
