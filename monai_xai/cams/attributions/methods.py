"""Input-attribution methods through Captum, one short function each, registered by name.

Every function maps ``(score, images (B, C, *S), context)`` to a signed attribution (B, C, *S) of the input: one value
per input channel and voxel, any sign and range (:mod:`monai_xai.cams.attributions.reduction` turns it into the
(B, 1, *S) [0, 1] map the metrics and writers take). ``score`` is the explained score as a network
(:class:`~monai_xai.cams.attributions.score.TargetScore`), so each method is exactly Captum's, called with the summing
target a Captum user writes by hand; ``context`` carries the settings, the rows per forward pass and the feature groups.
All are N-D (2D and 3D), batched and never mix images of a batch.

Costs (per image; ``n`` forward or backward passes of one image, see :mod:`monai_xai.cams.attributions.cost`):
Saliency and InputXGradient 1 + 1, DeepLift 2 + 2 (image and baseline), Integrated Gradients and Blur IG ``steps``
+ ``steps``, SmoothGrad, VarGrad and GradientSHAP ``samples`` + ``samples``, Occlusion one forward per window and
channel, FeatureAblation one per feature group, KernelSHAP ``shap_samples``.

Noise-based methods (SmoothGrad, VarGrad, GradientSHAP) draw the noise of each image with its own intensity range, so
they run image by image (their noisy copies batched), and an image's result does not depend on the others in its
batch; they draw from torch's global random state (seed it for repeatable maps).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from monai_xai.cams.attributions.registry import Passes, register_attribution
from monai_xai.cams.attributions.score import AttributionContext, TargetScore
from monai_xai.cams.attributions.settings import AttributionSettings

__all__ = [
    "deeplift",
    "feature_ablation",
    "gradient_shap",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "noise_std",
    "occlusion",
    "occlusion_windows",
    "path_passes",
    "saliency",
    "smoothgrad",
    "vargrad",
]


def noise_std(image: torch.Tensor, fraction: float) -> float:
    """The noise standard deviation of one (C, *S) image: ``fraction`` of its intensity range (max - min)."""
    return fraction * float(image.max() - image.min())


def occlusion_windows(settings: AttributionSettings, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Occlusion's window and stride per spatial dim: the settings' sizes, the window clipped to the image, the stride
    the window's unless set.

    Raises:
        ValueError: sizes that are not one per spatial dim, or a stride larger than its window.
    """

    def per_dim(value: int | tuple[int, ...]) -> tuple[int, ...]:
        values = (value,) * len(spatial) if isinstance(value, int) else tuple(value)
        if len(values) != len(spatial):
            raise ValueError(
                f"xai_attribution occlusion sizes {value!r} need one int per spatial dim of images {tuple(spatial)}."
            )
        return values

    window = tuple(min(w, size) for w, size in zip(per_dim(settings.occlusion_window), spatial))
    if settings.occlusion_stride is None:
        return window, window
    stride = per_dim(settings.occlusion_stride)
    if any(s > w for s, w, size in zip(stride, window, spatial) if w < size):
        raise ValueError(
            f"xai_attribution occlusion_stride {stride} must not exceed the window {window} (voxels would never be "
            "occluded); lower the stride or leave it out (the window)."
        )
    return window, stride


def _gradient_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    return Passes(1, 1)


def path_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    """The passes of a path method (Integrated Gradients, Blur IG): ``steps`` forward and backward passes."""
    return Passes(settings.steps, settings.steps)


def _noise_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    return Passes(settings.samples, settings.samples)


def _occlusion_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    window, stride = occlusion_windows(settings, spatial)
    positions = math.prod(math.ceil((size - w) / s) + 1 for size, w, s in zip(spatial, window, stride))
    return Passes(1 + channels * positions, 0)


def _feature_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    return Passes(1 + channels * features, 0)


def _shap_passes(settings: AttributionSettings, channels: int, spatial: Sequence[int], features: int) -> Passes:
    return Passes(1 + settings.shap_samples, 0)


def _requiring_grad(images: torch.Tensor) -> torch.Tensor:
    """The images as a leaf that requires gradients (Captum's gradient methods warn when they have to set it)."""
    return images.detach().requires_grad_(True)


def _image_by_image(
    attribute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor, context: AttributionContext
) -> torch.Tensor:
    """``attribute(image (1, C, *S), sample_ids (1,))`` of each image, stacked (B, C, *S)."""
    return torch.cat([attribute(images[i : i + 1], context.sample_ids[i : i + 1]) for i in range(images.shape[0])])


@register_attribution("saliency", _gradient_passes)
def saliency(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014), Captum's ``Saliency`` with ``abs=False``: the signed gradient.

    a(x) = dy / dx

    Example: ``explain(network, images, methods=["saliency"])``
    """
    return Saliency(score).attribute(_requiring_grad(images), abs=False, additional_forward_args=context.sample_ids)


@register_attribution("input_x_gradient", _gradient_passes)
def input_x_gradient(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Input x Gradient (Shrikumar et al. 2016), Captum's ``InputXGradient``.

    a(x) = x * dy / dx
    """
    return InputXGradient(score).attribute(_requiring_grad(images), additional_forward_args=context.sample_ids)


@register_attribution("integrated_gradients", path_passes)
def integrated_gradients(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), Captum's ``IntegratedGradients`` (Gauss-Legendre rule,
    ``steps`` points, ``steps`` x B path points per batch of ``batch_size`` rows); baseline x' = ``baseline``:

    a(x) = (x - x') * integral_0^1 dy/dx (x' + t (x - x')) dt,   sum_s a(s) ~= y(x) - y(x')  (completeness)
    """
    return IntegratedGradients(score).attribute(
        images,
        baselines=context.settings.baseline,
        additional_forward_args=context.sample_ids,
        n_steps=context.settings.steps,
        internal_batch_size=max(context.batch_size, images.shape[0]),
    )


def _noise_tunnel(kind: str, score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    tunnel = NoiseTunnel(Saliency(score))
    return _image_by_image(
        lambda image, ids: tunnel.attribute(
            image,
            nt_type=kind,
            nt_samples=context.settings.samples,
            nt_samples_batch_size=context.batch_size,
            stdevs=noise_std(image, context.settings.noise),
            abs=False,
            additional_forward_args=ids,
        ),
        images,
        context,
    )


@register_attribution("smoothgrad", _noise_passes)
def smoothgrad(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017), Captum's ``NoiseTunnel(Saliency)``: the mean gradient over ``samples`` noisy
    copies, noise sigma = ``noise`` x the image's range.

    a(x) = (1 / n) sum_i dy/dx (x + e_i),   e_i ~ N(0, sigma^2)
    """
    return _noise_tunnel("smoothgrad", score, images, context)


@register_attribution("vargrad", _noise_passes)
def vargrad(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """VarGrad (Adebayo et al. 2018), Captum's ``NoiseTunnel(Saliency)``: the variance of the gradient over the noisy
    copies (non-negative).

    a(x) = (1 / n) sum_i (dy/dx (x + e_i))^2 - ((1 / n) sum_i dy/dx (x + e_i))^2
    """
    return _noise_tunnel("vargrad", score, images, context)


@register_attribution("gradient_shap", _noise_passes)
def gradient_shap(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """GradientSHAP (Lundberg and Lee 2017), Captum's ``GradientShap`` with the one baseline ``baseline`` and noise
    sigma = ``noise`` x the image's range: the expected gradient x (input - baseline) over random points between
    them. Captum draws all ``samples`` at once; here they run in chunks of ``batch_size`` whose means are averaged.
    Captum draws the points on the path from numpy's global generator, which is seeded from torch's for the call
    (numpy's own state is restored afterwards).

    a(x) = E_{t ~ U(0, 1), e ~ N(0, sigma^2)} [(x - x') * dy/dx (x' + t (x + e - x'))]
    """
    explainer = GradientShap(score)
    samples = context.settings.samples
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy generator Captum draws from)
    # Captum draws GradientSHAP's points on the path from numpy's global generator: seed it from torch's, so that one
    # torch seed makes every method repeatable, and give numpy its state back
    np.random.seed(int(torch.randint(2**31 - 1, (1,))))  # noqa: NPY002 (the legacy generator Captum draws from)

    def attribute(image: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        baselines = torch.full_like(image, context.settings.baseline)
        total = torch.zeros_like(image)
        for start in range(0, samples, context.batch_size):
            chunk = min(context.batch_size, samples - start)
            mean = explainer.attribute(
                image,
                baselines=baselines,
                n_samples=chunk,
                stdevs=noise_std(image, context.settings.noise),
                additional_forward_args=ids,
            )
            total = total + mean * (chunk / samples)
        return total

    try:
        return _image_by_image(attribute, images, context)
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002


@register_attribution("deeplift", lambda settings, channels, spatial, features: Passes(2, 2))
def deeplift(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """DeepLIFT (Shrikumar et al. 2017; rescale rule), Captum's ``DeepLift`` against the baseline ``baseline``.

    Captum replaces the gradients of the network's ``nn.ReLU``, ``nn.Sigmoid``, ``nn.Tanh``, ``nn.Softmax``,
    ``nn.ELU`` and max-pooling modules by DeepLIFT's multipliers; a network that calls such a non-linearity as a
    function (``F.relu``) or uses one module twice is not supported (the explainer says so and names alternatives).

    a(x) ~= sum over paths of multipliers x (x - x'),   sum_s a(s) = y(x) - y(x')
    """
    with warnings.catch_warnings():  # Captum's notice that it hooks the non-linearities for the call
        warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks and attributes.*")
        return DeepLift(score).attribute(
            _requiring_grad(images), baselines=context.settings.baseline, additional_forward_args=context.sample_ids
        )


@register_attribution("occlusion", _occlusion_passes)
def occlusion(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Occlusion (Zeiler and Fergus 2014), Captum's ``Occlusion``: each window of ``occlusion_window`` voxels of one
    input channel at a time (stride ``occlusion_stride``) set to ``baseline``; each voxel gets the mean score drop of
    the windows covering it.

    a(s, c) = mean over windows W containing s of  y(x) - y(x with channel c of W set to x')
    """
    window, stride = occlusion_windows(context.settings, images.shape[2:])
    return Occlusion(score).attribute(
        images,
        sliding_window_shapes=(1, *window),
        strides=(1, *stride),
        baselines=context.settings.baseline,
        additional_forward_args=context.sample_ids,
        perturbations_per_eval=context.rows_per_image(images.shape[0]),
    )


@register_attribution("feature_ablation", _feature_passes, uses_features=True)
def feature_ablation(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Feature ablation, Captum's ``FeatureAblation``: each feature group (supervoxels or structures, per input
    channel; :mod:`~monai_xai.cams.attributions.features`) set to ``baseline`` in turn; each voxel gets its group's
    score drop.

    a(s, c) = y(x) - y(x with the group of (s, c) set to x')
    """
    return FeatureAblation(score).attribute(
        images,
        baselines=context.settings.baseline,
        feature_mask=context.features,
        additional_forward_args=context.sample_ids,
        perturbations_per_eval=context.rows_per_image(images.shape[0]),
    )


@register_attribution("kernel_shap", _shap_passes, uses_features=True)
def kernel_shap(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Kernel SHAP (Lundberg and Lee 2017), Captum's ``KernelShap`` over the feature groups (supervoxels, or the
    structures of the network's label map: organ-level Shapley values), ``shap_samples`` random coalitions per image
    (removed groups set to ``baseline``), image by image as Captum does for a batch.

    a(s, c) = phi_g, the Shapley value of the group g of (s, c) estimated by the Shapley-kernel weighted regression
    """
    explainer = KernelShap(score)
    with warnings.catch_warnings():  # Captum warns that a batch trains one regression per image, which is the intent
        warnings.filterwarnings("ignore", message=".*multiple inputs for Lime / Kernel SHAP.*")
        return explainer.attribute(
            images,
            baselines=context.settings.baseline,
            feature_mask=context.features,
            n_samples=context.settings.shap_samples,
            additional_forward_args=context.sample_ids,
            perturbations_per_eval=context.batch_size,
        )
