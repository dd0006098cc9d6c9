"""Every gradient method against pytorch-grad-cam 1.5.7 (the oracle), 2D and 3D, classification and segmentation."""

import pytest
import torch
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    SemanticSegmentationTarget,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from monai_xai.cams import CAMExplainer
from monai_xai.cams.methods import GRADIENT_METHODS, first_principal_component
from monai_xai.utils import normalize_per_sample
from tests.helpers.oracles import ORACLES, assert_parity, oracle_raw_cam


@pytest.mark.parametrize("method", list(ORACLES))
def test_classification_parity_2d_and_3d(method, classifier, images):
    classes = [0, 2]
    ours = CAMExplainer(classifier, "layer4", methods=method)(images, class_idx=classes, raw=True)[method]
    assert ours.shape == (2, 1, *[s // 4 for s in images.shape[2:]])
    targets = [ClassifierOutputTarget(c) for c in classes]
    assert_parity(ours, oracle_raw_cam(ORACLES[method], classifier, images, classifier.layer4, targets), method)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_probability_score_parity(method, classifier, images):
    classes = [1, 2]
    explainer = CAMExplainer(classifier, "layer4", methods=method, score="probability")
    ours = explainer(images, class_idx=classes, raw=True)[method]
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    assert_parity(ours, oracle_raw_cam(ORACLES[method], classifier, images, classifier.layer4, targets), method)
    logit = CAMExplainer(classifier, "layer4", methods=method)(images, class_idx=classes, raw=True)[method]
    assert not torch.allclose(normalize_per_sample(ours), normalize_per_sample(logit), atol=1e-3)


@pytest.mark.parametrize("method", list(ORACLES))
def test_segmentation_parity_3d_unet(method, unet3d):
    images = torch.randn(2, 1, 16, 16, 16)
    mask = torch.zeros(2, 1, 16, 16, 16)
    mask[0, 0, 2:9, 3:12, 4:10] = 1
    mask[1, 0, 8:15, 1:6, 5:16] = 1
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=method)
    ours = explainer(images, class_idx=1, pixel_set=mask, raw=True)[method]
    targets = [SemanticSegmentationTarget(1, mask[b, 0].numpy()) for b in range(2)]
    layer = unet3d.model[1].submodule
    assert_parity(ours, oracle_raw_cam(ORACLES[method], unet3d, images, layer, targets), method)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam", "eigengradcam"])
def test_segmentation_parity_whole_image_expected_volume(method, unet3d):
    """pixel_set="image", score="probability": the target is the class's softmax probability summed over every voxel,
    given to pytorch-grad-cam as its own callable target."""
    images = torch.randn(2, 1, 16, 16, 16)
    explainer = CAMExplainer(unet3d, "model.1.submodule", methods=method, score="probability")
    ours = explainer(images, class_idx=1, pixel_set="image", raw=True)[method]
    targets = [lambda output: torch.softmax(output, dim=0)[1].sum()] * 2
    layer = unet3d.model[1].submodule
    assert_parity(ours, oracle_raw_cam(ORACLES[method], unet3d, images, layer, targets), method)
    logit = CAMExplainer(unet3d, "model.1.submodule", methods=method)(images, class_idx=1, pixel_set="image", raw=True)
    assert not torch.allclose(ours, logit[method], atol=1e-3)


def test_all_methods_share_one_backward_and_match_separate_calls(classifier, images, monkeypatch):
    """All gradient methods at once: one forward, one backward, and the same maps as one method per call."""
    forwards, backwards = [], []
    handle = classifier.register_forward_hook(lambda *args: forwards.append(1))
    autograd_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or autograd_grad(*a, **k))
    together = CAMExplainer(classifier, "layer4", methods=list(GRADIENT_METHODS))(images, raw=True)
    handle.remove()
    monkeypatch.undo()
    assert len(forwards) == 1 and len(backwards) == 1
    for method in GRADIENT_METHODS:
        alone = CAMExplainer(classifier, "layer4", methods=method)(images, raw=True)[method]
        assert torch.allclose(together[method], alone, atol=1e-6)


def test_hand_computed_gradcam_and_hirescam():
    # one sample, two channels, 1x2 positions
    activations = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
    grads = torch.tensor([[[[1.0, -1.0]], [[4.0, 2.0]]]])
    # gradcam weights: mean(g) = [0, 3] -> 0 * A_0 + 3 * A_1 = [6, 0]
    assert GRADIENT_METHODS["gradcam"](activations, grads).tolist() == [[[[6.0, 0.0]]]]
    # hirescam: sum_k g*A = [1*1 + 4*2, -1*3 + 2*0] = [9, -3]
    assert GRADIENT_METHODS["hirescam"](activations, grads).tolist() == [[[[9.0, -3.0]]]]
    # layercam: sum_k ReLU(g)*A = [1 + 8, 0 + 0]; elementwise: sum_k ReLU(g*A) = [9, 0]
    assert GRADIENT_METHODS["layercam"](activations, grads).tolist() == [[[[9.0, 0.0]]]]
    assert GRADIENT_METHODS["gradcam_elementwise"](activations, grads).tolist() == [[[[9.0, 0.0]]]]


def test_principal_component_sign_matches_pytorch_grad_cam_sign_correction():
    features = torch.randn(3, 5, 4, 6)
    features[1] *= -1  # a sample whose projection is likely negative-dominated before correction
    ours = first_principal_component(features)[:, 0]
    oracle = torch.from_numpy(get_2d_projection_with_sign_correction(features.numpy()))
    assert (ours - oracle).abs().max() <= 1e-4 * oracle.abs().max()
    assert (ours.flatten(1).amax(1) >= ours.flatten(1).amin(1).abs()).all()


def test_principal_component_of_non_finite_features_is_nan_for_that_sample_only():
    """NaN gradients in one sample (a re-initialised network) give that sample a NaN map, the others their own map,
    where one batched SVD would raise for all of them."""
    features = torch.randn(3, 5, 4, 6)
    alone = first_principal_component(features[1:])
    features[0, 2, 1, 1] = float("nan")
    maps = first_principal_component(features)
    assert maps[0].isnan().all()
    torch.testing.assert_close(maps[1:], alone)


def test_methods_are_batched_per_sample():
    """Each sample's map from a batch equals the map of that sample alone (no cross-sample reductions)."""
    activations, grads = torch.randn(3, 4, 3, 4, 5), torch.randn(3, 4, 3, 4, 5)
    for method, fn in GRADIENT_METHODS.items():
        batched = fn(activations, grads)
        for b in range(3):
            assert torch.allclose(batched[b : b + 1], fn(activations[b : b + 1], grads[b : b + 1]), atol=1e-5), method
