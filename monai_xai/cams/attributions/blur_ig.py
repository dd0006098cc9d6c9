"""Blur IG (Xu et al. 2020, "Attribution in Scale and Space"): integrated gradients along a blur path, from a heavily
blurred image to the image itself. Captum has no Blur IG; this is its formula as PAIR's ``saliency`` library computes
it (``BlurIG``), with the exact difference of consecutive path points instead of its finite-difference derivative
of the blur, in 2D and 3D.

Path points p_k = G(sigma_k) * x, sigma_k = k * blur_sigma / steps (k = 0 .. steps, p_0 = x; Gaussian blur per channel,
borders replicated); the attribution is the Riemann sum

a(x) = sum_{k=0}^{steps-1} dy/dx (p_k) * (p_k - p_{k+1}),   sum_s a(s) ~= y(x) - y(p_steps)  (completeness)
"""

from __future__ import annotations

import torch
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d

from monai_xai.cams.attributions.methods import path_passes
from monai_xai.cams.attributions.registry import register_attribution
from monai_xai.cams.attributions.score import AttributionContext, TargetScore

__all__ = ["blur", "blur_ig"]


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, *S) images blurred per channel with a Gaussian of ``sigma`` voxels (truncated at 4 sigma, borders
    replicated); ``sigma == 0`` returns them as they are."""
    if sigma <= 0:
        return images
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0).to(images)
    return separable_filtering(images, [kernel] * (images.ndim - 2), mode="replicate")


@register_attribution("blur_ig", path_passes)
def blur_ig(score: TargetScore, images: torch.Tensor, context: AttributionContext) -> torch.Tensor:
    """Blur IG (see the module docstring): ``steps`` path points, blur up to ``blur_sigma`` voxels, path points of all
    images batched ``batch_size`` rows per pass.

    Example: ``explain(network, images, methods=["blur_ig"], attribution={"blur_sigma": 12})``
    """
    settings = context.settings
    sigmas = [settings.blur_sigma * k / settings.steps for k in range(settings.steps + 1)]
    num_images = images.shape[0]
    per_pass = context.rows_per_image(num_images)
    attribution = torch.zeros_like(images)
    for start in range(0, settings.steps, per_pass):
        stop = min(start + per_pass, settings.steps)
        points = torch.stack([blur(images.detach(), sigma) for sigma in sigmas[start : stop + 1]])
        here, further = points[:-1].flatten(0, 1), points[1:].flatten(0, 1)
        here.requires_grad_(True)
        scores = score(here, context.sample_ids.repeat(stop - start))
        (grads,) = torch.autograd.grad(scores.sum(), here)
        attribution += (grads * (here.detach() - further)).reshape(stop - start, *images.shape).sum(dim=0)
    return attribution
