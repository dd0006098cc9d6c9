"""Controls: "methods" that must fail every sanity check, registered like methods (family ``CONTROL``).

A check that a control passes cannot tell a map that reads the network from one that does not: it is not
discriminating for that bundle (:mod:`monai_xai.sanity.trust`). Binder et al. (CVPR 2023, "Shortcomings of top-down
randomization-based sanity checks for evaluations of deep neural network explanations") show such maps exist for the
top-down model randomisation test. Each control takes the images (B, C, *spatial), 2D or 3D, and returns
(B, 1, *spatial) float32 in [0, 1] like every method; none of them looks at the network or at the explained target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_xai.cams.registry import register_method
from monai_xai.enums import MethodFamily
from monai_xai.utils import normalize_per_sample

__all__ = ["CONTROL_METHODS", "centre_gaussian_control", "sobel_control", "random_control", "RANDOM_CONTROL_SEED"]

# the random control's maps are drawn from this seed, so that they depend on the image's shape only
RANDOM_CONTROL_SEED = 0


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        raise ValueError(
            f"a control takes images (B, C, H, W) or (B, C, D, H, W), got {getattr(images, 'shape', type(images))}."
        )


@register_method("control_centre_gaussian", MethodFamily.CONTROL, needs_gradients=False)
def centre_gaussian_control(images: torch.Tensor) -> torch.Tensor:
    """Zero-covariance control: a fixed Gaussian at the image centre (sigma a quarter of each extent), the same map
    for every image and every network (no covariance with either)."""
    _check_images(images)
    spatial = images.shape[2:]
    axes = [
        torch.exp(-0.5 * ((torch.arange(size, device=images.device) - (size - 1) / 2) / max(size / 4, 1e-6)) ** 2)
        for size in spatial
    ]
    bump = axes[0]
    for axis in axes[1:]:
        bump = bump[..., None] * axis
    maps = bump.expand(images.shape[0], 1, *spatial).float()
    return normalize_per_sample(maps)


def _sobel_kernels(spatial_dims: int, device: torch.device) -> torch.Tensor:
    """(spatial_dims, 1, 3, ..., 3) N-D Sobel kernels: the central difference [-1, 0, 1] along one axis, the
    smoothing [1, 2, 1] along every other."""
    derivative = torch.tensor([-1.0, 0.0, 1.0], device=device)
    smoothing = torch.tensor([1.0, 2.0, 1.0], device=device)
    kernels = []
    for axis in range(spatial_dims):
        kernel = torch.ones((1,) * spatial_dims, device=device)
        for other in range(spatial_dims):
            factor = (derivative if other == axis else smoothing).reshape(
                [3 if dim == other else 1 for dim in range(spatial_dims)]
            )
            kernel = kernel * factor
        kernels.append(kernel)
    return torch.stack(kernels)[:, None]


@register_method("control_sobel", MethodFamily.CONTROL, needs_gradients=False)
def sobel_control(images: torch.Tensor) -> torch.Tensor:
    """Edge-detector control: the N-D Sobel gradient magnitude of the image (channels summed), model-independent:
    it follows the input's structure, which is what a map that ignores the network can still show."""
    _check_images(images)
    spatial_dims = images.ndim - 2
    pixels = images.detach().float().sum(dim=1, keepdim=True)
    padded = F.pad(pixels, (1, 1) * spatial_dims, mode="replicate")
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    gradients = conv(padded, _sobel_kernels(spatial_dims, images.device))
    return normalize_per_sample(gradients.square().sum(dim=1, keepdim=True).sqrt())


@register_method("control_random", MethodFamily.CONTROL, needs_gradients=False)
def random_control(images: torch.Tensor) -> torch.Tensor:
    """Random control: i.i.d. uniform values drawn from :data:`RANDOM_CONTROL_SEED`, so the same noise for every
    image of a shape, wherever it stands in its batch, and for every network."""
    _check_images(images)
    generator = torch.Generator(device=images.device).manual_seed(RANDOM_CONTROL_SEED)
    noise = torch.rand((1, 1, *images.shape[2:]), generator=generator, device=images.device)
    return normalize_per_sample(noise.expand(images.shape[0], -1, *images.shape[2:]).clone())


CONTROL_METHODS = ("control_centre_gaussian", "control_sobel", "control_random")
