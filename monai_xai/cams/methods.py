"""Gradient-family CAM formulas, one short function each, registered by name (``monai_xai.cams.registry``).

Every function maps ``activations`` A (B, K, *spatial) of a layer and ``grads`` g = d score / dA (same shape) to a raw,
pre-ReLU map (B, 1, *spatial) at feature resolution; the engine then applies ReLU, upsamples to the input and normalises
to [0, 1]. All are N-D (2D and 3D) and never mix samples of a batch. The formulas follow pytorch-grad-cam 1.5.7
(including its epsilons), which the tests use as the parity oracle. Methods registered with ``needs_gradients=False``
ignore ``grads`` (the engine passes ``None`` and skips the backward pass when no requested method needs it).

Notation: k runs over channels, s over spatial positions (pixels or voxels), N is the number of positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from monai_xai.cams.registry import get_method, method_names, register_method
from monai_xai.enums import MethodFamily

__all__ = ["GRADIENT_METHODS", "SEG_XRES_POOL", "block_mean", "first_principal_component", "weighted_channel_sum"]


def _spatial_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, tensor.ndim))


def weighted_channel_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for channel weights (B, K) -> (B, 1, *spatial)."""
    weights = weights.reshape(*weights.shape[:2], *([1] * (activations.ndim - 2)))
    return (weights * activations).sum(dim=1, keepdim=True)


@register_method("gradcam", MethodFamily.GRADIENT)
def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017); Seg-Grad-CAM with a pixel set.

    L = sum_k w_k A_k,   w_k = (1 / N) sum_s g_k(s)

    Example: ``CAMExplainer(model, "layer4", "gradcam")(images)["gradcam"]``
    """
    return weighted_channel_sum(grads.mean(dim=_spatial_dims(grads)), activations)


@register_method("gradcampp", MethodFamily.GRADIENT)
def gradcampp(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018).

    L = sum_k w_k A_k,   w_k = sum_s ReLU(g_k(s)) a_k(s),
    a_k(s) = g_k(s)^2 / (2 g_k(s)^2 + (sum_s' A_k(s')) g_k(s)^3 + 1e-6)   (0 where g_k(s) = 0)

    Example: ``CAMExplainer(model, "layer4", "gradcampp")(images)["gradcampp"]``
    """
    spatial = _spatial_dims(grads)
    grads_squared = grads.pow(2)
    activation_sums = activations.sum(dim=spatial, keepdim=True)
    alpha = grads_squared / (2 * grads_squared + activation_sums * grads_squared * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return weighted_channel_sum((grads.clamp_min(0) * alpha).sum(dim=spatial), activations)


@register_method("xgradcam", MethodFamily.GRADIENT)
def xgradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020).

    L = sum_k w_k A_k,   w_k = sum_s g_k(s) A_k(s) / (sum_s A_k(s) + 1e-7)

    Example: ``CAMExplainer(model, "layer4", "xgradcam")(images)["xgradcam"]``
    """
    spatial = _spatial_dims(grads)
    activation_sums = activations.sum(dim=spatial, keepdim=True)
    return weighted_channel_sum((grads * activations / (activation_sums + 1e-7)).sum(dim=spatial), activations)


@register_method("hirescam", MethodFamily.GRADIENT)
def hirescam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos and Carin 2020); Seg-HiRes-Grad-CAM with a pixel set. No spatial averaging:

    L(s) = sum_k g_k(s) A_k(s)

    Example: ``CAMExplainer(unet, "model.1.submodule", "hirescam")(volumes, class_idx=1)["hirescam"]``
    """
    return (grads * activations).sum(dim=1, keepdim=True)


@register_method("layercam", MethodFamily.GRADIENT)
def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021).

    L(s) = sum_k ReLU(g_k(s)) A_k(s)

    Example: ``CAMExplainer(model, "layer3", "layercam")(images)["layercam"]``
    """
    return (grads.clamp_min(0) * activations).sum(dim=1, keepdim=True)


@register_method("gradcam_elementwise", MethodFamily.GRADIENT)
def gradcam_elementwise(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's GradCAMElementWise).

    L(s) = sum_k ReLU(g_k(s) A_k(s))

    Example: ``CAMExplainer(model, "layer4", "gradcam_elementwise")(images)["gradcam_elementwise"]``
    """
    return (grads * activations).clamp_min(0).sum(dim=1, keepdim=True)


def first_principal_component(features: torch.Tensor) -> torch.Tensor:
    """Projection of every position's K-vector on the first principal component of the sample's positions.

    Positions (pixels or voxels) are the observations and channels the variables: per sample, the (positions, K) matrix
    is centred over positions, its first right singular vector v comes from one batched SVD, and the map is
    ``centred @ v``, as in pytorch-grad-cam's ``get_2d_projection``. A singular vector's sign is arbitrary (LAPACK,
    cuSOLVER and numpy builds may disagree), so the map is flipped when its most negative value is larger in magnitude
    than its most positive one, the sign correction of pytorch-grad-cam's ``get_2d_projection_with_sign_correction``
    (Seg-Eigen-CAM, Eq. 13): the dominant extreme is positive and survives the ReLU. pytorch-grad-cam's EigenCAM and
    EigenGradCAM skip this correction, so they agree with these maps only up to sign.

    Args:
        features: (B, K, *spatial) activations (EigenCAM) or gradient-weighted activations (EigenGradCAM).

    Returns:
        (B, 1, *spatial) projection, may be negative; NaN everywhere for a sample whose features are not all finite
        (e.g. NaN gradients of a re-initialised network), as the other gradient CAMs give NaN there, where one SVD of
        the batch would fail for every sample.
    """
    positions = features.flatten(2).transpose(1, 2)
    centred = positions - positions.mean(dim=1, keepdim=True)
    finite = torch.isfinite(centred).flatten(1).all(dim=1)
    centred = torch.where(finite[:, None, None], centred, 0.0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0, :]
    projection = (centred @ direction.unsqueeze(-1))[..., 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    projection = torch.where(finite[:, None], projection, torch.nan)
    return projection.reshape(features.shape[0], 1, *features.shape[2:])


@register_method("eigencam", MethodFamily.GRADIENT, needs_gradients=False)
def eigencam(activations: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    """Eigen-CAM (Muhammad and Yeasin 2020): the class-agnostic first principal component of the activations; ``grads``
    is not used.

    L(s) = (A(s) - mean_s' A(s')) . v_1,   v_1 the first right singular vector of the centred (N, K) matrix

    Example: ``CAMExplainer(model, "layer4", "eigencam")(images)["eigencam"]``
    """
    return first_principal_component(activations)


@register_method("eigengradcam", MethodFamily.GRADIENT)
def eigengradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam): the first principal component of the gradient-weighted activations.

    L(s) = (F(s) - mean_s' F(s')) . v_1,   F = g * A, v_1 as in :func:`eigencam`

    Example: ``CAMExplainer(model, "layer4", "eigengradcam")(images)["eigengradcam"]``
    """
    return first_principal_component(grads * activations)


# Seg-XRes-CAM's gradient pooling: blocks of this many positions per spatial dim, averaged (the authors' example,
# Nouman97/Seg_XRes_CAM main.py, pools with np.mean over 2 x 2 blocks)
SEG_XRES_POOL = 2


def block_mean(values: torch.Tensor, size: int) -> torch.Tensor:
    """Each position's mean over its block of ``size`` positions per spatial dim, at the input's resolution.

    The (B, K, *S) values are zero-padded at the end of each dim to a multiple of ``size``, averaged per block (padded
    zeros included, as skimage's ``block_reduce`` with ``np.mean``) and every position takes its block's mean (nearest
    upsampling back to S).
    """
    spatial = values.shape[2:]
    padding = [pad for length in reversed(spatial) for pad in (0, -length % size)]
    pooled = (F.avg_pool2d if values.ndim == 4 else F.avg_pool3d)(F.pad(values, padding), size)
    for dim in range(2, values.ndim):
        pooled = pooled.repeat_interleave(size, dim=dim)
    return pooled[(slice(None), slice(None), *(slice(0, length) for length in spatial))]


@register_method("segxrescam", MethodFamily.GRADIENT)
def segxrescam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Seg-XRes-CAM (Hasany et al., CVPR Workshops 2023, "Seg-XRes-CAM: Explaining Spatially Local Regions in Image
    Segmentation"; the authors' code: Nouman97/Seg_XRes_CAM): HiResCAM of a pixel set with the gradients pooled over
    blocks of ``SEG_XRES_POOL`` positions (:func:`block_mean`), so the map keeps the sub-region's locality without
    HiResCAM's position-by-position noise.

    L(s) = sum_k pool(g_k)(s) A_k(s)

    Example: ``CAMExplainer(unet, "model.1.submodule", "segxrescam")(volumes, class_idx=1, pixel_set=box)``
    """
    return (block_mean(grads, SEG_XRES_POOL) * activations).sum(dim=1, keepdim=True)


@register_method("segeigencam", MethodFamily.GRADIENT)
def segeigencam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Seg-Eigen-CAM (Chung and Ying, Applied Sciences 15(13) 7562, 2025; pytorch-grad-cam's ``SegEigenCAM``): the
    first principal component of the activations weighted by the absolute gradients (Eq. 10), sign-corrected so the
    dominant extreme is positive (Eq. 13, :func:`first_principal_component`).

    L(s) = (F(s) - mean_s' F(s')) . v_1,   F = |g| * A, v_1 as in :func:`eigencam`

    Example: ``CAMExplainer(unet, "model.1.submodule", "segeigencam")(volumes, class_idx=1)["segeigencam"]``
    """
    return first_principal_component(grads.abs() * activations)


# name -> formula of every method above, in registration order (the registry's view of this module)
GRADIENT_METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    name: get_method(name).function for name in method_names(MethodFamily.GRADIENT)
}
