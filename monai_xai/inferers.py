"""``XAIInferer``: wrap any MONAI inferer so that every evaluator iteration also yields class-activation maps.

MONAI's ``SupervisedEvaluator._iteration`` stores whatever the inferer returns under ``engine.state.output["pred"]``
and runs it inside ``torch.no_grad()``. Returning a dict there would break every bundle's postprocessing (it expects
``"pred"`` to be a tensor), so the inferer returns the prediction unchanged and keeps the maps of its latest call in
:attr:`XAIInferer.explanations`. Attached to the engine (it is also an ignite handler: put it in ``val_handlers``), it
copies them into ``engine.state.output`` on ``IterationEvents.FORWARD_COMPLETED``, i.e. before MONAI decollates the
batch and runs the postprocessing, so each case's output dict carries its own maps. This needs no evaluator subclass
and no custom ``iteration_update``, so any bundle's evaluator works as it is; a config overlay only swaps the
evaluator's ``inferer`` and appends the inferer to its handlers (see ``configs/explain.json``).

Keys added to the engine output (``<method>`` as given in ``methods``):

- ``"saliency_<method>"``: (B, 1, *spatial) float32 map in [0, 1] (a MetaTensor with the input's meta, e.g. affine).
- ``"xai_class"``: (B,) int64, the class each map explains.
- ``"xai_seconds_<method>"``: (B,) float, wall time of the method on the batch divided by the batch size (with
  ``time_each_method=False``: of all methods together, the same value under every method).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from torch import nn

from monai_xai.cams import CAMExplainer, LayerSpec, group_methods_by_layer
from monai_xai.utils import per_sample_index

__all__ = [
    "XAIInferer",
    "check_explain_config",
    "REQUIRED_BUNDLE_IDS",
    "SALIENCY_PREFIX",
    "CLASS_KEY",
    "SECONDS_PREFIX",
    "saliency_key",
    "seconds_key",
]

SALIENCY_PREFIX = "saliency_"
SECONDS_PREFIX = "xai_seconds_"
CLASS_KEY = "xai_class"

_PIXEL_SET_MODES = ("pred", "largest_component", "image")


def saliency_key(method: str) -> str:
    """Engine-output key of the maps of ``method`` (e.g. ``"saliency_gradcam"``)."""
    return f"{SALIENCY_PREFIX}{method}"


def seconds_key(method: str) -> str:
    """Engine-output key of the per-case explanation time of ``method`` (e.g. ``"xai_seconds_gradcam"``)."""
    return f"{SECONDS_PREFIX}{method}"


def _label_pixel_set(label: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """Pixel set of each sample's class in a label batch.

    Args:
        label: (B, 1, *spatial) label map (class index per voxel) or (B, C, *spatial) one-hot labels.
        class_idx: (B,) class per sample.

    Returns:
        (B, 1, *spatial) float mask in {0, 1}.
    """
    class_idx = class_idx.to(label.device)
    if label.shape[1] == 1:
        shape = (-1, *([1] * (label.ndim - 1)))
        return (label == class_idx.reshape(shape).to(label.dtype)).float()
    if int(class_idx.max()) >= label.shape[1]:
        raise ValueError(
            f"class {int(class_idx.max())} has no channel in one-hot labels of shape {tuple(label.shape)}."
        )
    index = class_idx.reshape(-1, 1, *([1] * (label.ndim - 2))).expand(-1, 1, *label.shape[2:])
    return (label.gather(1, index) > 0).float()


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
            ``time_each_method=False`` the methods sharing a layer share a pass).
        methods: CAM method names, e.g. ``("gradcam", "hirescam")``.
        class_idx: class to explain: None (classifiers: the predicted class of each sample), an int, or one per sample.
            Segmentation networks need an int.
        mask: segmentation pixel set (ignored for classifiers) when ``mask_key`` is None: ``"pred"`` (predicted
            region of the class, default), ``"largest_component"`` or ``"image"`` (every voxel; with
            ``score="probability"``, the class's expected volume).
        mask_key: batch key of a label map (B, 1, *spatial) or one-hot label (B, C, *spatial) whose region of the
            explained class is the pixel set (e.g. ``"label"``); needs the inferer to be attached to the engine.
        score: ``"logit"`` or ``"probability"`` (see ``CAMExplainer``).
        batch_size: perturbed copies per forward pass of ScoreCAM/AblationCAM.
        time_each_method: True: one pass per method, timed alone; False: one shared call for all methods (faster;
            the time is per call).

    Example::

        inferer = XAIInferer(SlidingWindowInferer(roi_size=(32, 32, 32)), "model.1.submodule", ["gradcam"], class_idx=1)
        evaluator = SupervisedEvaluator(device, loader, net, inferer=inferer, val_handlers=[inferer, writer])
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        target_layers: LayerSpec | Mapping[str, LayerSpec] = "",
        methods: str | Sequence[str] = ("gradcam",),
        class_idx: int | Sequence[int] | None = None,
        mask: str = "pred",
        mask_key: str | None = None,
        score: str = "logit",
        batch_size: int = 32,
        time_each_method: bool = True,
    ) -> None:
        super().__init__()
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI Inferer (callable), got {type(inferer).__name__}.")
        if not target_layers:
            raise ValueError(
                "target_layers is empty; name the layer to explain, e.g. target_layers='layer4' "
                "(in a bundle: --xai_target_layer layer4; list names with `[n for n, _ in net.named_modules()]`)."
            )
        if mask not in _PIXEL_SET_MODES:
            raise ValueError(f"mask must be one of {_PIXEL_SET_MODES} (or give mask_key='label'), got {mask!r}.")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.target_layers = target_layers
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        if not self.methods:
            raise ValueError("methods is empty; give at least one CAM method, e.g. methods=['gradcam'].")
        layer_groups = group_methods_by_layer(target_layers, self.methods)
        if time_each_method:
            # one pass per method, in the order of `methods`
            layer_of = {method: layers for layers, grouped in layer_groups for method in grouped}
            layer_groups = [(layer_of[method], (method,)) for method in self.methods]
        self._passes = layer_groups
        self.class_idx = class_idx
        self.mask = mask
        self.mask_key = mask_key
        self.score = score
        self.batch_size = batch_size
        self.time_each_method = time_each_method
        self.explanations: dict[str, torch.Tensor] = {}
        self._engine: Any = None

    def attach(self, engine: Any) -> None:
        """Copy each iteration's maps into ``engine.state.output``; ``mask_key`` is read from ``engine.state.batch``."""
        self._engine = engine
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
        """Maps, explained classes and timings for one batch (the dict :meth:`__call__` stores).

        Args:
            inputs: (B, C, *spatial) batch.
            network: the network to explain.
            prediction: the network's output on ``inputs``: (B, num_classes) or (B, C, *spatial); used to record the
                predicted class when ``class_idx`` is None.
        """
        batch_size = inputs.shape[0]
        if self.class_idx is None:
            if not isinstance(prediction, torch.Tensor) or prediction.ndim != 2:
                raise ValueError(
                    "class_idx=None explains each sample's predicted class, which only classifiers (B, num_classes) "
                    "have; for a segmentation network set the class, e.g. --xai_class 1."
                )
            class_idx = prediction.argmax(dim=1)
        else:
            class_idx = per_sample_index(self.class_idx, batch_size, inputs.device)
        mask: str | torch.Tensor | None = None  # the pixel set only exists for segmentation outputs
        if isinstance(prediction, torch.Tensor) and prediction.ndim > 2:
            mask = self._pixel_set(inputs, class_idx) if self.mask_key is not None else self.mask
        # a sliding window needs the class as given (one int for the batch), not the per-sample tensor
        explained_class = class_idx if self.class_idx is None else self.class_idx
        outputs: dict[str, torch.Tensor] = {CLASS_KEY: class_idx.detach().clone()}
        pixels = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        with torch.enable_grad():
            for layers, methods in self._passes:
                explainer = self._explainer(network, layers, methods)
                start = time.perf_counter()
                maps = explainer(pixels, class_idx=explained_class, mask=mask)
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
        return CAMExplainer(network, layers, methods, score=self.score, batch_size=self.batch_size, **window)

    def _pixel_set(self, inputs: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        if self._engine is None:
            raise RuntimeError(
                f"mask_key={self.mask_key!r} reads the label from the engine's batch: attach the inferer to the "
                "evaluator (put it in val_handlers, or call inferer.attach(evaluator))."
            )
        batch = self._engine.state.batch
        if not isinstance(batch, dict) or self.mask_key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"mask_key {self.mask_key!r} is not in the batch (keys: {keys}); set --xai_mask_key.")
        label = torch.as_tensor(batch[self.mask_key]).to(inputs.device)
        if label.shape[0] != inputs.shape[0] or label.shape[2:] != inputs.shape[2:]:
            raise ValueError(
                f"batch[{self.mask_key!r}] has shape {tuple(label.shape)}, which does not match the images "
                f"{tuple(inputs.shape)} in batch and spatial size; preprocess it with the same spatial transforms."
            )
        pixel_set = _label_pixel_set(label, class_idx)
        return pixel_set.as_tensor() if isinstance(pixel_set, MetaTensor) else pixel_set


# ids of a model-zoo bundle that configs/explain.json builds on, with how to provide a missing one
REQUIRED_BUNDLE_IDS = {
    "bundle_root": "the bundle folder, e.g. --bundle_root <path> (xai_output_dir defaults to <bundle_root>/eval/xai)",
    "network": "the network to explain, e.g. '$@network_def.to(@device)'",
    "inferer": "the bundle's inferer, e.g. --inferer \"{'_target_': 'SimpleInferer'}\"",
    "evaluator": "a SupervisedEvaluator running `network` with `inferer` and 'val_handlers': '@handlers'",
    "handlers": "the evaluator's handler list, e.g. --handlers \"[]\" and 'val_handlers': '@handlers' in the evaluator",
}


def _active_config_parser() -> Any:
    """The ``ConfigParser`` resolving the current bundle item, found on the call stack (None outside a bundle run).

    A config expression cannot reference an id that may be missing (MONAI fails before calling it), so the check
    reads the config it runs in.
    """
    from monai.bundle import ConfigParser

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    return None


def check_explain_config(
    network: nn.Module | None = None,
    target_layers: LayerSpec | Mapping[str, LayerSpec] | None = None,
    methods: str | Sequence[str] | None = None,
) -> None:
    """Fail early, before any data is loaded, when ``configs/explain.json`` cannot work with the bundle it overlays.

    Called without arguments from the overlay's ``initialize`` step (``{"_target_":
    "monai_xai.inferers.check_explain_config"}``): it then reads the running bundle config, checks the ids of
    :data:`REQUIRED_BUNDLE_IDS` and that the evaluator attaches ``@handlers``, and takes ``network``,
    ``xai_target_layer`` and ``xai_methods`` from it. Called with arguments, it checks only those.

    Args:
        network: the network to explain.
        target_layers: ``xai_target_layer``: a layer name of ``network`` (or a list of them), or a mapping
            ``{method: layer}`` with an entry for each method.
        methods: ``xai_methods``.

    Raises:
        ValueError: naming the missing or wrong config id and how to set it.
    """
    parser = _active_config_parser() if network is None else None
    if parser is not None:
        for config_id, how in REQUIRED_BUNDLE_IDS.items():
            if config_id not in parser:
                raise ValueError(
                    f"configs/explain.json needs the bundle config id `{config_id}`, which is missing: {how}."
                )
        evaluator = parser["evaluator"]
        if not isinstance(evaluator, dict) or "_target_" not in evaluator:
            raise ValueError(f"the bundle config has no `evaluator` component: {REQUIRED_BUNDLE_IDS['evaluator']}.")
        if evaluator.get("val_handlers") != "@handlers":
            raise ValueError(
                "the bundle's `evaluator#val_handlers` must be '@handlers' for the explanation handlers to run; set "
                "--evaluator#val_handlers @handlers."
            )
        network = parser.get_parsed_content("network")
        target_layers = parser.get_parsed_content("xai_target_layer")
        methods = parser.get_parsed_content("xai_methods")
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"the bundle's `network` must be a torch.nn.Module, got {type(network).__name__}; "
            "configs/explain.json explains `network` (usually '$@network_def.to(@device)')."
        )
    if not target_layers:
        candidates = [name for name, module in network.named_modules() if name and not list(module.children())][-5:]
        raise ValueError(
            "xai_target_layer is not set: pass the layer to explain, e.g. --xai_target_layer <name> "
            f"(a name from network.named_modules(); the last leaf layers of this network are {candidates})."
        )
    methods = (methods,) if isinstance(methods, str) else tuple(methods or ())
    try:
        for layers, grouped in group_methods_by_layer(target_layers, methods):
            CAMExplainer(network, layers, grouped)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{error} (set them with --xai_target_layer <name> and --xai_methods \"['gradcam']\")"
        ) from error
