"""pytorch-grad-cam as the oracle of the gradient methods: its raw per-layer maps, and the parity check against ours."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    SegEigenCAM,
    XGradCAM,
)

from monai_xai.utils import normalize_per_sample

__all__ = ["ORACLES", "EIGEN", "oracle_raw_cam", "assert_parity"]

ORACLES = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "gradcam_elementwise": GradCAMElementWise,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "segeigencam": SegEigenCAM,  # sign-corrected like ours: no sign flip needed
}
EIGEN = ("eigencam", "eigengradcam")


def oracle_raw_cam(
    cam_class, model, images, layer, targets, reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """pytorch-grad-cam's per-layer cam before ReLU and resizing, (B, 1, *feature), from its own hooks and backward
    (``reshape``: its ``reshape_transform``, for transformer layers)."""
    cam = cam_class(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        outputs = cam.activations_and_grads(images)
        model.zero_grad()
        sum(target(output) for target, output in zip(targets, outputs)).backward()
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(images, layer, targets, activations, grads, eigen_smooth=False)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.float32(raw))[:, None]


def assert_parity(ours_raw: torch.Tensor, oracle_raw: torch.Tensor, method: str) -> None:
    if method in EIGEN:  # pytorch-grad-cam leaves the SVD sign to numpy; ours is sign-corrected (see methods.py)
        signs = torch.sign((ours_raw * oracle_raw).flatten(1).sum(1)).reshape(-1, *[1] * (ours_raw.ndim - 1))
        oracle_raw = oracle_raw * signs
    scale = oracle_raw.flatten(1).abs().amax(1).reshape(-1, *[1] * (ours_raw.ndim - 1))
    assert (ours_raw - oracle_raw).abs().div(scale).max() <= 1e-4, method
    # what pytorch-grad-cam shows before resizing: ReLU then per-image min-max
    ours_shown = normalize_per_sample(ours_raw.clamp_min(0))
    oracle_shown = normalize_per_sample(oracle_raw.clamp_min(0))
    assert (ours_shown - oracle_shown).abs().max() <= 1e-4, method
