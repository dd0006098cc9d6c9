"""Blur IG (Xu et al. 2020, "Attribution in Scale and Space"): integrated gradients along a blur path, from a heavily
blurred image to the image itself, in 2D and 3D. Captum has no Blur IG; this is its formula as PAIR's ``saliency``
library computes it (``BlurIG``: the path x(sigma) = G(sigma) * x, gradients times the path's steps, summed), with
two changes that make it complete to second order: each step is the exact difference of consecutive path points
(PAIR: a finite-difference derivative of the blur) and its gradient is taken at the step's midpoint (PAIR: at its
start).

Path points p_k = G(sigma_k) * x, sigma_k = k * blur_sigma / steps (k = 0 .. steps, p_0 = x; Gaussian blur per channel,
borders replicated, :func:`blur`); the attribution is the midpoint sum along the polyline through them

a(x) = sum_{k=0}^{steps-1} dy/dx ((p_k + p_{k+1}) / 2) * (p_k - p_{k+1}),   sum_s a(s) ~= y(x) - y(p_steps)
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
    """(B, C, *S) images blurred per channel with a sampled, normalised Gaussian of ``sigma`` voxels, borders
    replicated, truncated at 4 sigma (``scipy.ndimage.gaussian_filter(mode="nearest")``) or at the image's largest
    size when that is shorter (beyond it a replicated border adds nothing new); ``sigma == 0`` returns the images."""
    if sigma <= 0:
        return images
    truncated = min(4.0, max(images.shape[2:]) / sigma)
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=truncated, approx="sampled", normalize=True)
    return separable_filtering(images, [kernel.to(images)] * (images.ndim - 2), mode="replicate")


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
        steps = (points[:-1] - points[1:]).flatten(0, 1)
        midpoints = ((points[:-1] + points[1:]) / 2).flatten(0, 1).requires_grad_(True)
        scores = score(midpoints, context.sample_ids.repeat(stop - start))
        (grads,) = torch.autograd.grad(scores.sum(), midpoints)
        attribution += (grads * steps).reshape(stop - start, *images.shape).sum(dim=0)
    return attribution
