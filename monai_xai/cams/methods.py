"""Gradient-based CAM formulas, one short function each, registered by name in ``GRADIENT_METHODS``.

Every function maps ``activations`` A (B, K, *spatial) of a layer and ``grads`` g = d score / dA (same shape) to a raw,
pre-ReLU map (B, 1, *spatial) at feature resolution. All are N-D (2D and 3D) and never mix samples of a batch. The
formulas follow pytorch-grad-cam 1.5.7 (including its epsilons), which the tests use as the parity oracle. Methods
listed in ``METHODS_WITHOUT_GRADIENTS`` ignore ``grads`` (the engine passes ``None`` and skips the backward pass).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GRADIENT_METHODS", "METHODS_WITHOUT_GRADIENTS", "first_principal_component", "weighted_channel_sum"]


def _spatial_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, tensor.ndim))


def weighted_channel_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for channel weights (B, K) -> (B, 1, *spatial)."""
    weights = weights.reshape(*weights.shape[:2], *([1] * (activations.ndim - 2)))
    return (weights * activations).sum(dim=1, keepdim=True)


def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): w_k = spatial mean of g_k."""
    return weighted_channel_sum(grads.mean(dim=_spatial_dims(grads)), activations)


def gradcampp(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al.): w_k = sum_space ReLU(g) a, a = g^2 / (2 g^2 + sum_space(A_k) g^3 + 1e-6)."""
    spatial = _spatial_dims(grads)
    grads_squared = grads.pow(2)
    activation_sums = activations.sum(dim=spatial, keepdim=True)
    alpha = grads_squared / (2 * grads_squared + activation_sums * grads_squared * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return weighted_channel_sum((grads.clamp_min(0) * alpha).sum(dim=spatial), activations)


def xgradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al.): w_k = sum_space(g_k A_k) / (sum_space A_k + 1e-7)."""
    spatial = _spatial_dims(grads)
    activation_sums = activations.sum(dim=spatial, keepdim=True)
    return weighted_channel_sum((grads * activations / (activation_sums + 1e-7)).sum(dim=spatial), activations)


def hirescam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos and Carin): sum_k g_k * A_k, no spatial averaging (Seg-HiRes-Grad-CAM with a pixel set)."""
    return (grads * activations).sum(dim=1, keepdim=True)


def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): sum_k ReLU(g_k) * A_k."""
    return (grads.clamp_min(0) * activations).sum(dim=1, keepdim=True)


def gradcam_elementwise(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's GradCAMElementWise): sum_k ReLU(g_k * A_k)."""
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
        (B, 1, *spatial) projection, may be negative.
    """
    positions = features.flatten(2).transpose(1, 2)
    centred = positions - positions.mean(dim=1, keepdim=True)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0, :]
    projection = (centred @ direction.unsqueeze(-1))[..., 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.reshape(features.shape[0], 1, *features.shape[2:])


def eigencam(activations: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    """Eigen-CAM (Muhammad and Yeasin): first principal component of the activations; ``grads`` is not used."""
    return first_principal_component(activations)


def eigengradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam): first principal component of g * A."""
    return first_principal_component(grads * activations)


GRADIENT_METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {}
GRADIENT_METHODS["gradcam"] = gradcam
GRADIENT_METHODS["gradcampp"] = gradcampp
GRADIENT_METHODS["xgradcam"] = xgradcam
GRADIENT_METHODS["hirescam"] = hirescam
GRADIENT_METHODS["layercam"] = layercam
GRADIENT_METHODS["gradcam_elementwise"] = gradcam_elementwise
GRADIENT_METHODS["eigencam"] = eigencam
GRADIENT_METHODS["eigengradcam"] = eigengradcam

METHODS_WITHOUT_GRADIENTS = frozenset({"eigencam"})
