"""``CAMExplainer``: class-activation maps of any MONAI/PyTorch network, 2D or 3D, batched, one target per sample.

One call runs one forward pass with hooks on the target layers, builds the target (a class, or a class over a pixel set
for segmentation), and, when any gradient method is requested, ONE backward pass shared by all of them. Perturbation
methods (ScoreCAM, AblationCAM) and pytorch-grad-cam methods (``"grad-cam:<Class>"``) reuse the same forward pass and
target. Everything stays in torch on the images' device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from monai_xai.cams.hooks import ActivationRecorder
from monai_xai.cams.layers import resolve_layers
from monai_xai.cams.layouts import FeatureLayout, Reshape, resolve_layout
from monai_xai.cams.model_mode import pinned_modes
from monai_xai.cams.outputs import OutputHandling, ScoredNetwork
from monai_xai.cams.registry import CAMMethod, get_methods
from monai_xai.cams.sliding_window import sliding_window_cam
from monai_xai.cams.targets import ClassSet, ClassTarget, PixelSetSpec, SegmentationTarget, build_target
from monai_xai.cams.tiles import TiledWindow, tiled_cam
from monai_xai.enums import Layout, MethodFamily, ModelMode, Score, as_choice
from monai_xai.utils import normalize_per_sample, preserved_model_state

__all__ = ["CAMExplainer"]

ClassIndex = int | Sequence[int] | torch.Tensor | ClassSet | None


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, *spatial), got {type(images).__name__}.")
    if images.ndim not in (4, 5):
        raise ValueError(
            f"images must be a batch (B, C, H, W) or (B, C, D, H, W), got shape {tuple(images.shape)}; "
            "add the missing batch/channel dims, e.g. image[None] for one (C, *spatial) image."
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}; convert them, e.g. images.float().")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values; fix or mask them before explaining.")


def _check_dtype(images: torch.Tensor, model: nn.Module) -> None:
    weights = next((param for param in model.parameters() if param.is_floating_point()), None)
    if weights is not None and images.dtype != weights.dtype:
        raise TypeError(
            f"images are {images.dtype} but the model's weights are {weights.dtype}: convert one to the other, e.g. "
            f"images.to({weights.dtype})."
        )


def _forward(model: nn.Module, images: torch.Tensor) -> object:
    """``model(images)``; a failure is re-raised with the images' shape and the usual cause of a shape error."""
    try:
        return model(images)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        hint = ""
        if images.shape[-1] <= 4 < images.shape[1]:
            hint = (
                f" The images look channel-last (B, *spatial, C) = {tuple(images.shape)}: CAMs need channel-first "
                "(B, C, *spatial), e.g. images.movedim(-1, 1)."
            )
        raise RuntimeError(f"the model failed on images of shape {tuple(images.shape)}: {error}.{hint}") from error


def _adapter_reshape(layouts: list[FeatureLayout]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's ``reshape_transform`` for the target layers (one for all of them)."""
    kinds = {(layout.layout, layout.grid) for layout in layouts if layout.layout != Layout.CHANNEL_FIRST}
    if not kinds:
        return None
    if len(layouts) > 1:
        raise ValueError(
            "'grad-cam:*' methods take one reshape for all layers: explain one transformer layer at a time."
        )
    return layouts[0].to_grid


def _at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """Half-precision activations and gradients in float32 for the formulas; float32 and float64 as they are (a float64
    network's CAM keeps its precision: an element-wise CAM sums terms much larger than the result)."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, 1, *feature_size) -> (B, 1, *size), bilinear (2D) or trilinear (3D), align_corners=False."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(
        maps, size=tuple(size), mode="bilinear" if maps.ndim == 4 else "trilinear", align_corners=False
    )


def _with_meta(maps: torch.Tensor, images: MetaTensor) -> MetaTensor:
    """Wrap maps as a MetaTensor carrying the images' meta (affine, filenames, batch flag), e.g. for NIfTI writers."""
    wrapped = MetaTensor(maps)
    wrapped.copy_meta_from(images)
    return wrapped


class CAMExplainer:
    """Class-activation maps for classification and segmentation networks, 2D and 3D, batched.

    Args:
        model: the network; called as ``model(images)``, it must return a tensor (B, C) (classification) or
            (B, C, *spatial) (segmentation). Its train/eval mode, ``requires_grad`` flags and modules are restored after
            every call, also when the call raises.
        target_layers: the layer(s) to explain: a dotted name from ``model.named_modules()`` (e.g. ``"layer4"``,
            ``"model.1.submodule"``), a submodule, or a list of either. Several layers: per-layer maps are normalised
            at input resolution, averaged and normalised again (pytorch-grad-cam's rule).
        methods: method names (``monai_xai.cams.method_names()``): gradient methods ``gradcam``, ``gradcampp``,
            ``xgradcam``, ``hirescam``, ``layercam``, ``gradcam_elementwise``, ``eigencam``, ``eigengradcam`` (all
            share one forward and one backward pass); perturbation methods ``scorecam``, ``ablationcam``; or any
            pytorch-grad-cam class as ``"grad-cam:<Class>"``.
        score: the explained score: ``"logit"`` (default, pre-activation) or ``"probability"`` (softmax over classes,
            sigmoid for single-channel outputs).
        batch_size: number of perturbed copies per forward pass in the perturbation methods.
        roi_size: when set, explain window by window with MONAI's sliding-window inference (large volumes); maps are
            blended over windows and normalised over the whole volume.
        sw_batch_size: windows per forward pass (sliding window only).
        overlap: window overlap in [0, 1) (sliding window only).
        sw_mode: window blending, ``"gaussian"`` or ``"constant"`` (sliding window only).
        reshape: where the target layers keep their channels (:mod:`monai_xai.cams.layouts`): None finds it from
            the shapes and the model (channel-first maps, channel-last Swin blocks, transformer tokens with class or
            register tokens); ``"channel_first"``, ``"channel_last"`` or ``"tokens"`` states it; a function
            ``output -> (B, K, *grid)`` handles an unusual model (AblationCAM then cannot run).
        model_mode: the modes the model is explained in (:class:`~monai_xai.enums.ModelMode`): ``"eval"``
            (default), ``"norm_train"`` (normalisation layers with each input's statistics, as HD-BET's inference),
            ``"as_given"`` or ``"auto"`` (:func:`~monai_xai.cams.model_mode.resolve_model_mode`).
        tiles: explain tile by tile as nnU-Net predicts (:class:`~monai_xai.cams.tiles.TiledWindow`: its tiles,
            Gaussian weights, mirroring and folds) instead of ``roi_size``'s MONAI sliding window.
        outputs: how the model's outputs become the explained logits (:class:`~monai_xai.cams.outputs.
            OutputHandling`: the head of a deep-supervision model, probabilities returned by ``forward``); None: the
            model returns one tensor of logits.

    Example::

        explainer = CAMExplainer(model, target_layers="layer4", methods=("gradcam", "hirescam"))
        maps = explainer(images)                           # predicted class per sample
        maps = explainer(images, class_idx=1, pixel_set="pred")  # segmentation: class 1 over its predicted region
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: str | nn.Module | Sequence[str | nn.Module],
        methods: str | Sequence[str] = ("gradcam",),
        score: Score | str = Score.LOGIT,
        batch_size: int = 32,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        sw_mode: str = "gaussian",
        reshape: Reshape = None,
        model_mode: ModelMode | str = ModelMode.EVAL,
        outputs: OutputHandling | None = None,
        tiles: TiledWindow | None = None,
    ) -> None:
        self.model = model
        self.model_mode = as_choice(ModelMode, model_mode, "model_mode")
        # every forward pass (the hooked one, the perturbation methods') goes through the output handling
        self._scored = model if outputs is None or not outputs.changes_outputs else ScoredNetwork(model, outputs)
        self.layers = resolve_layers(model, target_layers)
        self._records = list(get_methods(methods))
        attributions = [record.name for record in self._records if not record.needs_layer]
        if attributions:
            raise ValueError(
                f"{attributions} are input attributions, which explain no layer: use AttributionExplainer, or "
                "monai_xai.explanation.explain, which runs CAMs and attributions together."
            )
        self.methods = tuple(record.name for record in self._records)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int (copies per forward pass), got {batch_size}.")
        self.score = as_choice(Score, score, "score")
        self.batch_size = batch_size
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.sw_mode = sw_mode
        self.reshape = reshape
        self.tiles = tiles

    def __call__(
        self, images: torch.Tensor, class_idx: ClassIndex = None, pixel_set: PixelSetSpec = None, raw: bool = False
    ) -> dict[str, torch.Tensor]:
        """Explain a batch.

        Args:
            images: (B, C, H, W) or (B, C, D, H, W) float tensor or MetaTensor, finite.
            class_idx: class to explain: ``None`` (classifiers only: the predicted class of each sample), an int for the
                whole batch, or one per sample (sequence or (B,) tensor). Required for segmentation networks, which
                also take a :class:`~monai_xai.cams.targets.ClassSet`: several classes explained at once, each over
                its own pixel set (e.g. ``ClassSet((1, 2))`` with ``"pred"``: the predicted kidney and tumour).
            pixel_set: segmentation only, the pixel set M whose class scores are summed (Seg-Grad-CAM):
                ``None``/``"pred"`` (predicted region of the class), ``"largest_component"``, ``"image"`` (every
                voxel; with ``score="probability"``, the class's expected volume), a (B or 1, 1, *spatial) tensor in
                [0, 1] (e.g. a ground-truth mask), a tuple of ints (one voxel) or a tuple of slices (a box). A
                sample with an empty pixel set gets all-zero maps and a warning.
            raw: return the un-normalised, pre-ReLU maps at the target layer's resolution (layers averaged; they must
                then share a feature shape). Not available for methods without raw maps (``"grad-cam:*"``) or with a
                sliding window.

        Returns:
            dict method name -> float32 (B, 1, *spatial) maps on the images' device: at input resolution in [0, 1], or
            raw at feature resolution. MetaTensor images give MetaTensor maps with the images' meta (affine).
        """
        _check_images(images)
        _check_dtype(images, self.model)
        pixels = images.as_tensor() if isinstance(images, MetaTensor) else images
        if pixels.is_inference():
            with torch.inference_mode(False):
                pixels = pixels.clone()
        finished = [record.name for record in self._records if not record.supports_raw]
        if raw and finished:
            raise ValueError(f"raw=True is not available for {finished}: they return normalised maps only.")
        if self.roi_size is not None or self.tiles is not None:
            maps = self._sliding_window(pixels, class_idx, pixel_set, raw)
        else:
            layer_maps, target = self._layer_maps(pixels, class_idx, pixel_set, warn_empty=True)
            if raw:
                maps = {method: self._average_raw(per_layer) for method, per_layer in layer_maps.items()}
            else:
                maps = {
                    record.name: self._combine_layers(record, layer_maps[record.name], pixels.shape[2:])
                    for record in self._records
                }
            if isinstance(target, SegmentationTarget):
                keep = (~target.empty).to(pixels.dtype).reshape(-1, *([1] * (pixels.ndim - 1)))
                maps = {method: value * keep for method, value in maps.items()}
        maps = {method: value.float() for method, value in maps.items()}
        if isinstance(images, MetaTensor):
            maps = {method: _with_meta(value, images) for method, value in maps.items()}
        return maps

    def _layer_maps(
        self, images: torch.Tensor, class_idx: ClassIndex, pixel_set: PixelSetSpec, warn_empty: bool
    ) -> tuple[dict[str, list[torch.Tensor]], ClassTarget | SegmentationTarget]:
        """Per method, one map per target layer: raw (B, 1, *feature), or one finished map for methods without raw maps.

        The model runs once with hooks; the gradient family shares one backward pass; perturbation and pytorch-grad-cam
        methods run afterwards with the hooks removed but the model still in eval mode.
        """
        gradient_family = [record for record in self._records if record.family == MethodFamily.GRADIENT]
        maps: dict[str, list[torch.Tensor]] = {}
        with pinned_modes(self.model, self.model_mode), preserved_model_state(self.model):
            with ActivationRecorder(self.layers) as recorder:
                outputs = _forward(self._scored, images)
                self._check_outputs(outputs, images)
                recorded = recorder.activations()
                layouts = [
                    resolve_layout(name, module, output, images, self.model, self.reshape)
                    for (name, module), output in zip(self.layers, recorded)
                ]
                target = build_target(outputs, class_idx, pixel_set, self.score, warn_empty=warn_empty)
                grads: list[torch.Tensor | None] = [None] * len(recorded)
                if any(record.needs_gradients for record in gradient_family):
                    raw_grads = self._gradients(target(outputs), recorded)
                    grads = [layout.to_grid(grad) for layout, grad in zip(layouts, raw_grads)]
            activations = [
                _at_least_float32(layout.to_grid(output.detach())) for layout, output in zip(layouts, recorded)
            ]
            for record in self._records:
                if record.family == MethodFamily.GRADIENT:
                    maps[record.name] = [record.function(a, g) for a, g in zip(activations, grads)]
                elif record.family == MethodFamily.PERTURBATION:
                    maps[record.name] = [
                        record.function(self._scored, images, module, activation, target, self.batch_size, layout)
                        for (_, module), activation, layout in zip(self.layers, activations, layouts)
                    ]
                else:
                    modules = [module for _, module in self.layers]
                    maps[record.name] = [
                        record.function(self._scored, images, modules, target, _adapter_reshape(layouts))
                    ]
        return maps, target

    @staticmethod
    def _gradients(scores: torch.Tensor, activations: list[torch.Tensor]) -> list[torch.Tensor]:
        """d sum(scores) / d activation for every layer in one backward pass; zeros where the score ignores a layer.

        Summing is safe: the model is in eval mode and each score depends only on its own sample.
        """
        if not scores.requires_grad:
            return [_at_least_float32(torch.zeros_like(activation)) for activation in activations]
        grads = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
        return [
            _at_least_float32(torch.zeros_like(activation) if grad is None else grad)
            for activation, grad in zip(activations, grads)
        ]

    @staticmethod
    def _check_outputs(outputs: object, images: torch.Tensor) -> None:
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"the model returned {type(outputs).__name__}; CAMExplainer needs a tensor (B, C) or (B, C, *spatial): "
                "wrap the model so forward() returns that tensor (e.g. the main head of a deep-supervision network)."
            )
        if outputs.ndim < 2 or outputs.shape[0] != images.shape[0]:
            raise ValueError(
                f"the model returned shape {tuple(outputs.shape)} for {images.shape[0]} images; expected (B, C) or "
                "(B, C, *spatial) with one row per image."
            )

    def _average_raw(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(layer_map.shape) for layer_map in per_layer}
        if len(shapes) > 1:
            raise ValueError(
                f"raw=True averages the layers' maps, but the target layers {[name for name, _ in self.layers]} give "
                f"different feature shapes {sorted(shapes)}; explain one layer at a time for raw maps."
            )
        return torch.stack(per_layer).mean(dim=0)

    @staticmethod
    def _combine_layers(record: CAMMethod, per_layer: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """ReLU, upsample to the input size, normalise per layer; several layers: average and normalise again.
        Methods without raw maps return their one finished map."""
        if not record.supports_raw:
            return per_layer[0]
        normalised = [normalize_per_sample(_upsample(layer_map.clamp_min(0), size)) for layer_map in per_layer]
        if len(normalised) == 1:
            return normalised[0]
        return normalize_per_sample(torch.stack(normalised).mean(dim=0))

    def _explain_window(
        self, window_images: torch.Tensor, window_pixel_set: PixelSetSpec = None, class_idx: ClassIndex = None
    ) -> dict[str, torch.Tensor]:
        """Non-negative, un-normalised maps (n, 1, *roi) of one batch of sliding windows (layers averaged).

        Normalising per window would make windows incomparable; the whole volume is normalised after blending.
        Windows with an empty pixel set (most windows when the class is small) contribute zeros, silently.
        """
        layer_maps, target = self._layer_maps(window_images, class_idx, window_pixel_set, warn_empty=False)
        size = window_images.shape[2:]
        maps = {
            method: torch.stack([_upsample(layer_map.clamp_min(0), size) for layer_map in per_layer]).mean(dim=0)
            for method, per_layer in layer_maps.items()
        }
        if isinstance(target, SegmentationTarget):
            keep = (~target.empty).to(window_images.dtype).reshape(-1, *([1] * (window_images.ndim - 1)))
            maps = {method: value * keep for method, value in maps.items()}
        return maps

    def _sliding_window(
        self, images: torch.Tensor, class_idx: ClassIndex, pixel_set: PixelSetSpec, raw: bool
    ) -> dict[str, torch.Tensor]:
        if raw:
            raise ValueError("raw=True is not available with a sliding window (roi_size); set roi_size=None.")
        if not isinstance(class_idx, ClassSet):
            if class_idx is None or torch.as_tensor(class_idx).unique().numel() != 1:
                raise ValueError(
                    "with a sliding window (roi_size) windows of different images share a forward pass, so "
                    f"class_idx must be one class for the whole batch (e.g. class_idx=1, or one ClassSet), got "
                    f"{class_idx!r}."
                )
            class_idx = int(torch.as_tensor(class_idx).reshape(-1)[0])
        explain_window = partial(self._explain_window, class_idx=class_idx)
        if self.tiles is not None:
            maps = tiled_cam(explain_window, images, pixel_set, self.tiles, self.model)
        else:
            maps = sliding_window_cam(
                explain_window, images, pixel_set, self.roi_size, self.sw_batch_size, self.overlap, self.sw_mode
            )
        return {method: normalize_per_sample(maps[method]) for method in self.methods}
