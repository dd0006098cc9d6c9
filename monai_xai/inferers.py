"""Inferers that put more than the prediction into a MONAI engine's output: :class:`EngineOutputInferer` (the
mechanism) and :class:`XAIInferer` (the explanation step inside any evaluator).

MONAI's ``SupervisedEvaluator._iteration`` stores whatever the inferer returns under ``engine.state.output["pred"]``
and runs it inside ``torch.no_grad()``. Returning a dict there would break every bundle's postprocessing (it expects
``"pred"`` to be a tensor), so such an inferer returns the prediction unchanged and keeps its other values of the
latest call. Attached to the engine (it is also an ignite handler: put it in ``val_handlers``), it copies them into
``engine.state.output`` on ``IterationEvents.FORWARD_COMPLETED``, i.e. before MONAI decollates the batch and runs the
postprocessing, so each case's output dict carries its own values. This needs no evaluator subclass and no custom
``iteration_update``, so any bundle's evaluator works as it is; a config overlay only swaps the evaluator's
``inferer`` and appends the inferer to its handlers (see ``configs/explain.json``).

The :class:`XAIInferer` is a thin adapter: it runs the bundle's inferer, hands the batch and the prediction to the
explanation step (:class:`~monai_xai.explanation.ExplainStep`) and puts the resulting
:class:`~monai_xai.explanation.Explanation` under the keys of :class:`~monai_xai.enums.XAIKeys`, which is all the
handlers and writers read:

- ``"saliency_<method>"``: (B, 1, *spatial) float32 map in [0, 1] (a MetaTensor with the input's meta, e.g. affine).
- ``"xai_class"``: (B,) int64, the class each map explains; (B, K) when a segmenter explains K classes together
  (:class:`~monai_xai.cams.ClassSet`).
- ``"xai_pixel_set"``: segmentation only, (B, 1, *spatial) float, the pixel set the maps explain: the label's region
  of the class (``pixel_set_key``), or the named set resolved on the wrapped inferer's prediction; (B, K, *spatial),
  one set per class, for K classes. With a sliding window and ``"pred"``, each window explains its own prediction,
  which differs from the blended one only where windows overlap.
- ``"xai_seconds_<method>"``: (B,) float, wall time of the method on the batch divided by the batch size (with
  ``time_each_method=False``: of all methods together, the same value under every method).
- ``"xai_attribution_<method>"``: input attributions only, (B, C, *spatial) float32, the signed attribution per input
  channel (``"saliency_<method>"`` holds its reduction to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from monai_xai.cams import AttributionSettings, ClassSet, LayerChoice, LayerSpec
from monai_xai.cams.layouts import Reshape
from monai_xai.cams.outputs import OutputHead
from monai_xai.enums import ModelMode, NetworkOutput, PixelSet, Score, XAIKeys
from monai_xai.explanation import ExplainRequest, ExplainStep, Explanation, SlidingWindow
from monai_xai.handlers.records import ExplainedLayers

__all__ = ["EngineOutputInferer", "XAIInferer"]

# what an input attribution's maps explain instead of a layer, in the run's records and summary
INPUT = "input"


def _layer_text(layer: LayerSpec | None) -> str:
    if layer is None:
        return INPUT
    return ", ".join(map(str, layer)) if isinstance(layer, list | tuple) else str(layer)


class EngineOutputInferer(Inferer):
    """Base of the inferers that also yield values for the engine output (see the module docstring): a call fills
    :attr:`engine_outputs` (batch-first tensors keyed by output key); attached to the engine, the inferer copies them
    into ``engine.state.output`` when the forward pass completes.

    Subclasses set :attr:`not_called_hint`, the fix when the engine ran without calling the inferer.
    """

    not_called_hint = "make it the evaluator's inferer (or wrap it in the evaluator's inferer)."

    def __init__(self) -> None:
        super().__init__()
        self.engine_outputs: dict[str, torch.Tensor] = {}
        self._attached_engine: Any = None

    def attach(self, engine: Any) -> None:
        """Copy each iteration's :attr:`engine_outputs` into ``engine.state.output``."""
        self._attached_engine = engine
        if not engine.has_event_handler(self._add_to_output, IterationEvents.FORWARD_COMPLETED):
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._add_to_output)

    def _add_to_output(self, engine: Any) -> None:
        if not self.engine_outputs:
            raise RuntimeError(
                f"the engine has an attached {type(self).__name__} but ran another inferer; {self.not_called_hint}"
            )
        engine.state.output.update(self.engine_outputs)
        self.engine_outputs = {}


class XAIInferer(EngineOutputInferer):
    """An inferer that returns ``inferer``'s prediction and explains the same inputs with gradients enabled.

    By default each method runs its own forward and backward pass so that the per-method timing is that method's cost
    alone. ``time_each_method=False`` explains with all methods at once: the gradient methods then share one forward
    and one backward pass (8 methods cost about one), and each method's recorded time is that of the whole call. With
    a :class:`~monai.inferers.SlidingWindowInferer` the maps are computed window by window with the same
    ``roi_size``, ``sw_batch_size``, ``overlap`` and blending mode.

    Args:
        inferer: the bundle's inferer (``SimpleInferer`` when None); its prediction is returned unchanged.
        target_layers: layer(s) to explain, e.g. ``"layer4"`` or ``"model.1.submodule"``, or one per method,
            ``{"gradcam": "model.1", "hirescam": "0", ...}`` (an entry for every method). None or ``""``: chosen at
            the first call from the first case of the batch (with a sliding window, from one ROI-sized crop of it) by
            :func:`~monai_xai.cams.choose_target_layer`, logged at INFO and kept in :attr:`chosen_layer`.
        methods: method names, e.g. ``("gradcam", "hirescam")``.
        class_idx: class to explain: None (classifiers: the predicted class of each sample; segmenters: every
            foreground class at once, i.e. with ``"pred"`` the classes present in each prediction, logged), an int, or
            one per sample. Segmenters also take several classes explained together, each over its own pixel set
            (:class:`~monai_xai.cams.ClassSet`, or as a config gives it: ``"1+2+3"``, ``"foreground"``).
        pixel_set: segmentation pixel set (ignored for classifiers) when ``pixel_set_key`` is None: ``"pred"``
            (predicted region of the class, default), ``"largest_component"``, ``"image"`` (every voxel; with
            ``score="probability"``, the class's expected volume), ``"empty"`` (the study's control: all-zero maps),
            ``"peak"`` (the voxel of the class's highest score in each image; with a sliding window, as
            ``"largest_component"``, resolved on the whole prediction) or one voxel ``[i, j, k]`` on the network's
            input grid; see :class:`~monai_xai.enums.PixelSet`.
        pixel_set_key: batch key of a label map (B, 1, *spatial) or one-hot label (B, C, *spatial) whose region of
            the explained class is the pixel set (e.g. ``"label"``); needs the inferer to be attached to the engine.
        score: ``"logit"`` or ``"probability"`` (see ``CAMExplainer``).
        batch_size: perturbed copies per forward pass of ScoreCAM/AblationCAM.
        time_each_method: True: one pass per method, timed alone; False: one shared call for all methods (faster;
            the time is per call).
        reshape: where the target layers keep their channels (see ``CAMExplainer``; None finds it: channel-first,
            channel-last Swin blocks, transformer tokens).
        model_mode: the modes the network is explained in, the mode its own inference uses (``"auto"``, ``"eval"``,
            ``"norm_train"``, ``"as_given"``; see :class:`~monai_xai.enums.ModelMode`). MONAI's evaluator puts the
            network in eval mode before every iteration: a bundle whose network runs otherwise sets its modes in its
            own inferer (as ``bundles/brain_extraction_hdbet`` does), which ``"auto"`` then keeps.
        output_head: of a deep-supervision network's outputs, the prediction (``"highest_resolution"`` or an index).
        network_output: ``"logits"``, ``"probabilities"`` (a softmax inside ``forward``) or ``"auto"``.
        attribution: the input-attribution methods' settings (``xai_attribution``: steps, samples, windows, feature
            groups, budget; :class:`~monai_xai.cams.AttributionSettings` or a dict of its fields).

    Example::

        inferer = XAIInferer(SlidingWindowInferer(roi_size=(32, 32, 32)), "model.1.submodule", ["gradcam"], class_idx=1)
        evaluator = SupervisedEvaluator(device, loader, net, inferer=inferer, val_handlers=[inferer, writer])
    """

    not_called_hint = (
        'make it the evaluator\'s inferer (in a bundle config: "+evaluator": {"inferer": "@xai_inferer"}, as '
        "configs/explain.json does)."
    )

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
        model_mode: ModelMode | str = ModelMode.AUTO,
        output_head: OutputHead = None,
        network_output: NetworkOutput | str = NetworkOutput.AUTO,
        attribution: AttributionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI Inferer (callable), got {type(inferer).__name__}.")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.step = ExplainStep(
            ExplainRequest(
                methods=methods,
                target_layers=target_layers,
                class_idx=class_idx,
                pixel_set=pixel_set,
                pixel_set_key=pixel_set_key,
                score=score,
                window=SlidingWindow.of(self.inferer),
                batch_size=batch_size,
                time_each_method=time_each_method,
                reshape=reshape,
                model_mode=model_mode,
                output_head=output_head,
                network_output=network_output,
                attribution=attribution,
            )
        )

    @property
    def request(self) -> ExplainRequest:
        """What this inferer explains."""
        return self.step.request

    @property
    def chosen_layer(self) -> LayerChoice | None:
        """The layer chosen on the first batch when the request names none (None until then)."""
        return self.step.chosen_layer

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped inferer, then explain ``inputs``; the explanation lands in :attr:`engine_outputs`.

        Args:
            inputs: (B, C, H, W) or (B, C, D, H, W) batch (a MetaTensor keeps its meta on the maps).
            network: the network the evaluator runs.
            args, kwargs: passed to the wrapped inferer.

        Returns:
            the wrapped inferer's prediction, unchanged.
        """
        prediction = self.inferer(inputs, network, *args, **kwargs)
        self.engine_outputs = self.explain(inputs, network, prediction)
        return prediction

    def explain(self, inputs: torch.Tensor, network: nn.Module, prediction: torch.Tensor) -> dict[str, torch.Tensor]:
        """The engine-output values of one batch's explanation (keyed by :class:`~monai_xai.enums.XAIKeys`).

        Args:
            inputs: (B, C, *spatial) batch.
            network: the network to explain.
            prediction: the network's output on ``inputs``: (B, num_classes) or (B, C, *spatial).
        """
        labels = self._batch_label(inputs) if self.request.pixel_set_key is not None else None
        explanation = self.step(network, inputs, prediction=prediction, labels=labels)
        if self._attached_engine is not None:
            setattr(self._attached_engine.state, XAIKeys.LAYERS, self._explained_layers(explanation))
        return explanation.engine_output()

    def _explained_layers(self, explanation: Explanation) -> ExplainedLayers:
        """The layers of ``explanation``'s maps (``"input"`` for an input attribution, which explains none), with the
        reason when the step chose them."""
        layers = {method: _layer_text(layer) for method, layer in explanation.layers.items()}
        chosen = self.chosen_layer
        return ExplainedLayers(layers, chosen.reason if chosen is not None else None)

    def _batch_label(self, inputs: torch.Tensor) -> torch.Tensor:
        """The label under ``pixel_set_key`` in the attached engine's batch."""
        key = self.request.pixel_set_key
        if self._attached_engine is None:
            raise RuntimeError(
                f"pixel_set_key={key!r} reads the label from the engine's batch: attach the inferer to the evaluator "
                "(put it in val_handlers, or call inferer.attach(evaluator))."
            )
        batch = self._attached_engine.state.batch
        if not isinstance(batch, dict) or key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"pixel_set_key {key!r} is not in the batch (keys: {keys}); set --xai_pixel_set_key.")
        return torch.as_tensor(batch[key]).to(inputs.device)
