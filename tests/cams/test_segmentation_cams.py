"""Seg-XRes-CAM against the authors' computation (skimage block_reduce of the gradients with np.mean, nearest resize
back, HiResCAM), 2D and 3D; Seg-Eigen-CAM's parity with pytorch-grad-cam's SegEigenCAM is in test_methods.py (it is
one of the ORACLES)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import block_reduce

from monai_xai.cams import CAMExplainer
from monai_xai.cams.methods import SEG_XRES_POOL, block_mean, segxrescam


@pytest.mark.parametrize("shape", [(3, 8, 6), (3, 7, 5), (2, 5, 6, 3)])
def test_block_mean_is_skimage_block_reduce_upsampled(shape):
    """Each position takes its block's mean, zero padding counted (block_reduce's cval=0), odd sizes included."""
    values = torch.randn(2, *shape, dtype=torch.float64)
    ours = block_mean(values, 2).numpy()
    pooled = block_reduce(values.numpy(), (1, 1, *[2] * (len(shape) - 1)), np.mean)
    expected = pooled
    for axis in range(2, values.ndim):
        expected = expected.repeat(2, axis=axis)
    expected = expected[(slice(None), slice(None), *(slice(0, n) for n in shape[1:]))]
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_segxrescam_is_hirescam_of_the_pooled_gradients():
    activations = torch.randn(2, 4, 6, 6, 4, dtype=torch.float64)
    grads = torch.randn(2, 4, 6, 6, 4, dtype=torch.float64)
    expected = np.zeros((2, 1, 6, 6, 4))
    for b in range(2):
        pooled = block_reduce(grads[b].numpy(), (1, SEG_XRES_POOL, SEG_XRES_POOL, SEG_XRES_POOL), np.mean)
        upsampled = pooled.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3)
        expected[b, 0] = (upsampled * activations[b].numpy()).sum(axis=0)
    np.testing.assert_allclose(segxrescam(activations, grads).numpy(), expected, atol=1e-12)


def test_segxrescam_of_a_box_in_a_segmenter(unet3d):
    """The explainer's raw Seg-XRes-CAM of a box equals the formula on the layer's activations and gradients."""
    images = torch.randn(1, 1, 16, 16, 16)
    box = (slice(4, 9), slice(6, 12), slice(2, 7))
    raw = CAMExplainer(unet3d, "model.1.submodule", "segxrescam")(images, class_idx=1, pixel_set=box, raw=True)
    layer = unet3d.model[1].submodule
    recorded = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: recorded.update(a=output))
    try:
        outputs = unet3d.eval()(images)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(outputs[(0, 1, *box)].sum(), recorded["a"])
    expected = segxrescam(recorded["a"].detach(), grads)
    torch.testing.assert_close(raw["segxrescam"], expected, atol=1e-6, rtol=1e-5)
