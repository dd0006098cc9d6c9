"""``AttributionExplainer``: input attributions of any network, 2D or 3D, batched, with the CAMs' targets.

The sibling of :class:`~monai_xai.cams.CAMExplainer` for the ``ATTRIBUTION`` family: one forward pass (timed, for the
budget's estimate; or the caller's outputs, as the explanation step gives them) gives the target (a class, a class set
or a class over any pixel set, per image, exactly as for the CAMs: :func:`~monai_xai.cams.build_target`) and, for
FeatureAblation/KernelSHAP, the feature groups; then each method runs through Captum on
:class:`~monai_xai.cams.attributions.score.TargetScore`. The network's weights are frozen for the call (only input
gradients are computed) and every mode and flag is restored afterwards, also when a call raises.

With a sliding window (``roi_size``) each window is explained for its own score (its class summed over its crop of the
pixel set), and the signed attributions of the windows are blended with MONAI's ``sliding_window_inference`` exactly
as a bundle blends its predictions: a voxel's attribution is the blending-weighted mean, over the windows that contain
it, of its attribution to each window's score (:mod:`monai_xai.cams.sliding_window`). Windows whose crop of the pixel
set is empty are not run. A window's target needs its own forward pass only when it depends on that window's
prediction (``"pred"``, or feature groups of the predicted structures); for a given pixel set (a mask, a voxel, a box,
``"image"``, ``"empty"``) only the first batch of windows runs one (it times the budget's estimate and gives the
outputs' shape), and every later window goes straight to the method's own passes. The budget counts every window.
nnU-Net's tiles (``tiles``) are blended the same way as
nnU-Net blends its predictions (:func:`~monai_xai.cams.tiles.tiled_cam`: Gaussian weights, mirrored copies, folds),
and the budget counts every tile, mirrored copy and fold.

Like :class:`~monai_xai.cams.CAMExplainer`, it explains the network as its own inference runs it: in ``model_mode``
(e.g. HD-BET's InstanceNorm layers in train mode, :mod:`monai_xai.cams.model_mode`) and scoring its outputs as
``outputs`` reads them (the prediction head of a deep-supervision network, probabilities returned by ``forward`` as
log-probabilities, :mod:`monai_xai.cams.outputs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial

import torch
from monai.data import MetaTensor
from monai.utils import fall_back_tuple
from torch import nn

from monai_xai.cams.attributions.cost import check_budget, estimate_cost
from monai_xai.cams.attributions.features import feature_groups, groups_per_channel
from monai_xai.cams.attributions.registry import attribution_method
from monai_xai.cams.attributions.score import AttributionContext, TargetScore
from monai_xai.cams.attributions.settings import AttributionSettings, FeatureGroups
from monai_xai.cams.explainer import CAMExplainer, ClassIndex, _check_dtype, _check_images, _forward
from monai_xai.cams.model_mode import pinned_modes
from monai_xai.cams.outputs import OutputHandling, ScoredNetwork
from monai_xai.cams.registry import CAMMethod, get_methods
from monai_xai.cams.sliding_window import sliding_window_cam
from monai_xai.cams.targets import ClassSet, ClassTarget, PixelSetSpec, SegmentationTarget, build_target
from monai_xai.cams.tiles import TiledWindow, tiled_cam, tiles_per_image
from monai_xai.enums import MethodFamily, ModelMode, PixelSet, Score, as_choice
from monai_xai.utils import preserved_model_state, with_meta_of

__all__ = ["AttributionExplainer", "windows_per_image"]


def windows_per_image(spatial: Sequence[int], roi_size: Sequence[int] | int, overlap: float) -> int:
    """The number of windows MONAI's ``sliding_window_inference`` runs on one image of ``spatial`` size (padded to the
    window where smaller): per dim ``ceil((size - roi) / interval) + 1``, ``interval = int(roi * (1 - overlap))``."""
    roi = fall_back_tuple(roi_size, tuple(spatial))
    count = 1
    for size, window in zip(spatial, roi):
        size = max(size, window)
        interval = window if window == size else max(int(window * (1 - overlap)), 1)
        count *= math.ceil((size - window) / interval) + 1
    return count


def _zero_empty(attributions: dict[str, torch.Tensor], target: ClassTarget | SegmentationTarget) -> None:
    """Images whose pixel set is empty have no score: all-zero attributions (in place)."""
    if isinstance(target, SegmentationTarget):
        for method, values in attributions.items():
            keep = (~target.empty).to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
            attributions[method] = values * keep


class AttributionExplainer:
    """Input attributions (Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP, ...) of classifiers and
    segmenters, 2D and 3D, batched.

    Args:
        model: the network; called as ``model(images)``, it must return (B, C) or (B, C, *spatial).
        methods: attribution method names (``monai_xai.cams.method_names("attribution")``).
        score: the explained score, ``"logit"`` (default) or ``"probability"``.
        batch_size: images per forward pass of the methods' perturbed, noisy or path copies (bounds the memory).
        settings: steps, samples, windows, feature groups and budget
            (:class:`~monai_xai.cams.attributions.AttributionSettings`; a dict is read as ``xai_attribution``).
        roi_size: when set, explain window by window (see the module docstring).
        sw_batch_size: windows per forward pass (sliding window only).
        overlap: window overlap in [0, 1) (sliding window only).
        sw_mode: window blending, ``"gaussian"`` or ``"constant"`` (sliding window only).
        model_mode: the modes the model is explained in (:class:`~monai_xai.enums.ModelMode`): ``"eval"``
            (default), ``"norm_train"``, ``"as_given"`` or ``"auto"``
            (:func:`~monai_xai.cams.model_mode.resolve_model_mode`).
        outputs: how the model's outputs become the explained logits (:class:`~monai_xai.cams.outputs.
            OutputHandling`); None: the model returns one tensor of logits.
        tiles: explain tile by tile as nnU-Net predicts (:class:`~monai_xai.cams.tiles.TiledWindow`) instead of
            ``roi_size``'s MONAI sliding window.

    Example::

        explainer = AttributionExplainer(unet, ("integrated_gradients", "occlusion"), settings={"steps": 64})
        attributions = explainer(volumes, class_idx=1, pixel_set="pred")   # {method: (B, C, *spatial) signed}
    """

    def __init__(
        self,
        model: nn.Module,
        methods: str | Sequence[str],
        score: Score | str = Score.LOGIT,
        batch_size: int = 32,
        settings: AttributionSettings | dict | None = None,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        sw_mode: str = "gaussian",
        model_mode: ModelMode | str = ModelMode.EVAL,
        outputs: OutputHandling | None = None,
        tiles: TiledWindow | None = None,
    ) -> None:
        self._records: list[CAMMethod] = list(get_methods(methods))
        layered = [record.name for record in self._records if record.family != MethodFamily.ATTRIBUTION]
        if layered:
            raise ValueError(f"{layered} are not input-attribution methods: explain them with CAMExplainer.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int (images per forward pass), got {batch_size!r}.")
        self.model = model
        self.model_mode = as_choice(ModelMode, model_mode, "model_mode")
        # every forward pass (the target's, Captum's) goes through the output handling
        self._scored = model if outputs is None or not outputs.changes_outputs else ScoredNetwork(model, outputs)
        self.methods = tuple(record.name for record in self._records)
        self.score = as_choice(Score, score, "score")
        self.batch_size = batch_size
        self.settings = AttributionSettings.of(settings)
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.sw_mode = sw_mode
        self.tiles = tiles
        self._uses_features = any(attribution_method(name).uses_features for name in self.methods)
        self._unchecked_windows: int | None = None
        # (C_out, *spatial) of one window's outputs, learnt from the sliding window's first forward pass
        self._window_outputs_shape: tuple[int, ...] | None = None

    def __call__(
        self,
        images: torch.Tensor,
        class_idx: ClassIndex = None,
        pixel_set: PixelSetSpec = None,
        outputs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Attribute a batch's explained scores to its input voxels.

        Args:
            images: (B, C, H, W) or (B, C, D, H, W) float tensor or MetaTensor, finite.
            class_idx: as :meth:`CAMExplainer.__call__ <monai_xai.cams.CAMExplainer.__call__>`: None (a classifier's
                predicted class), an int, one per image, or a :class:`~monai_xai.cams.ClassSet` of a segmenter (one
                class or class set for the whole batch with a sliding window).
            pixel_set: a segmenter's pixel set, as for the CAMs (``"pred"``, ``"image"``, ``"empty"``, a mask, a voxel,
                a box, ...); an image whose set is empty gets all-zero attributions.
            outputs: the network's (B, C) or (B, C, *spatial) output on ``images`` when the caller has it (the
                explanation step does): the target is built on it instead of a forward pass of its own (the budget's
                estimate then has no time). Not with a sliding window, where each window has its own.

        Returns:
            dict method -> (B, C, *spatial) signed attributions in the images' dtype, on their device (a MetaTensor
            for MetaTensor images).

        Raises:
            ValueError: a request above the budget (with the estimate), a network DeepLift cannot take, or anything
                :func:`~monai_xai.cams.build_target` refuses.
        """
        _check_images(images)
        _check_dtype(images, self.model)
        pixels = images.as_tensor() if isinstance(images, MetaTensor) else images
        if pixels.is_inference():
            with torch.inference_mode(False):
                pixels = pixels.clone()
        if self.roi_size is not None or self.tiles is not None:
            if outputs is not None:
                raise ValueError("outputs are not taken with a sliding window: each window is explained on its own.")
            attributions = self._sliding_window(pixels, class_idx, pixel_set)
        else:
            attributions, target, _ = self._attribute(pixels, class_idx, pixel_set, True, True, outputs)
            _zero_empty(attributions, target)
        if isinstance(images, MetaTensor):
            attributions = {method: with_meta_of(value, images) for method, value in attributions.items()}
        return attributions

    def _attribute(
        self,
        images: torch.Tensor,
        class_idx: ClassIndex,
        pixel_set: PixelSetSpec,
        warn_empty: bool,
        budget_images: bool,
        outputs: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], ClassTarget | SegmentationTarget, torch.Size]:
        """Every method's attributions of ``images`` (a batch, or a batch of windows), after one timed forward pass
        (unless ``outputs`` are given) that gives the target, the feature groups and, when ``budget_images``, the
        budget check; with the target and the outputs' shape."""
        with pinned_modes(self.model, self.model_mode), preserved_model_state(self.model):
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
            seconds_per_forward = None
            if outputs is None:
                start = time.perf_counter()
                with torch.no_grad():
                    outputs = _forward(self._scored, images)
                seconds_per_forward = (time.perf_counter() - start) / images.shape[0]
            CAMExplainer._check_outputs(outputs, images)
            target = build_target(outputs, class_idx, pixel_set, self.score, warn_empty=warn_empty)
            if budget_images:
                self._check_budget(images, outputs, seconds_per_forward)
            features = feature_groups(self.settings, images, outputs) if self._uses_features else None
            sample_ids = torch.arange(images.shape[0], device=images.device)
            context = AttributionContext(self.settings, self.batch_size, sample_ids, features)
            score = TargetScore(self._scored, target)
            with torch.enable_grad():
                attributions = {record.name: self._run(record, score, images, context) for record in self._records}
        return attributions, target, outputs.shape

    def _check_budget(self, images: torch.Tensor, outputs: torch.Tensor, seconds_per_forward: float | None) -> None:
        """The budget check of the whole call: this batch, or every window of every image (counted by
        :meth:`_sliding_window`)."""
        spatial = tuple(images.shape[2:])
        explained = images.shape[0] if self._unchecked_windows is None else self._unchecked_windows
        groups = groups_per_channel(self.settings, spatial, tuple(outputs.shape))
        cost = estimate_cost(self.methods, self.settings, images.shape[1], spatial, explained, groups)
        check_budget(cost, self.settings, seconds_per_forward)

    def _run(
        self, record: CAMMethod, score: TargetScore, images: torch.Tensor, context: AttributionContext
    ) -> torch.Tensor:
        try:
            return record.function(score, images, context).detach()
        except (AssertionError, RuntimeError) as error:
            if record.name != "deeplift" or "DeepLift" not in str(error):
                raise
            raise ValueError(
                f"deeplift cannot explain {type(self.model).__name__}: {error} Captum's DeepLift needs every "
                "non-linearity as its own module, used once per forward pass; explain this network with "
                "integrated_gradients or gradient_shap instead."
            ) from error

    def _explain_window(
        self, window_images: torch.Tensor, window_pixel_set: PixelSetSpec, class_idx: int | ClassSet
    ) -> dict[str, torch.Tensor]:
        """Signed attributions (n, C, *roi) of a batch of windows, each for its own score; the first call checks the
        budget of all windows and learns the shape of a window's outputs, which is all that a later window's target
        takes from them when it does not depend on the prediction (see the module docstring)."""
        budget = self._unchecked_windows is not None
        outputs = None
        if self._window_outputs_shape is not None and self._target_ignores_prediction(window_pixel_set):
            # only the shape is read: a zero-strided tensor, no forward pass
            outputs = window_images.new_zeros(()).expand(window_images.shape[0], *self._window_outputs_shape)
        attributions, target, outputs_shape = self._attribute(
            window_images, class_idx, window_pixel_set, False, budget, outputs
        )
        self._unchecked_windows = None
        self._window_outputs_shape = tuple(outputs_shape[1:])
        _zero_empty(attributions, target)
        return attributions

    def _target_ignores_prediction(self, window_pixel_set: PixelSetSpec) -> bool:
        """Whether a window's target and feature groups can be built from its outputs' shape alone: a given pixel
        set (the window's crop of a mask, voxel or box; every voxel; none) and no groups of the predicted
        structures."""
        given = isinstance(window_pixel_set, torch.Tensor) or window_pixel_set in (PixelSet.IMAGE, PixelSet.EMPTY)
        return given and not (self._uses_features and self.settings.features == FeatureGroups.PREDICTION)

    def _sliding_window(
        self, images: torch.Tensor, class_idx: ClassIndex, pixel_set: PixelSetSpec
    ) -> dict[str, torch.Tensor]:
        if not isinstance(class_idx, ClassSet):
            if class_idx is None or torch.as_tensor(class_idx).unique().numel() != 1:
                raise ValueError(
                    "with a sliding window (roi_size) windows of different images share a forward pass, so class_idx "
                    f"must be one class for the whole batch (e.g. class_idx=1, or one ClassSet), got {class_idx!r}."
                )
            class_idx = int(torch.as_tensor(class_idx).reshape(-1)[0])
        spatial = images.shape[2:]
        per_image = (
            tiles_per_image(spatial, self.tiles)
            if self.tiles is not None
            else windows_per_image(spatial, self.roi_size, self.overlap)
        )
        self._unchecked_windows = images.shape[0] * per_image
        self._window_outputs_shape = None
        explain_window = partial(self._explain_window, class_idx=class_idx)
        try:
            if self.tiles is not None:
                return tiled_cam(explain_window, images, pixel_set, self.tiles, self.model)
            return sliding_window_cam(
                explain_window, images, pixel_set, self.roi_size, self.sw_batch_size, self.overlap, self.sw_mode
            )
        finally:
            self._unchecked_windows = None
            self._window_outputs_shape = None
