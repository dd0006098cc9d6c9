"""Wrong inputs to the explainer get an error that says what is wrong and how to fix it, never a silent guess or a
raw torch error; the model is left as it was."""

from __future__ import annotations

import pytest
import torch

from monai_xai.cams import CAMExplainer
from tests.helpers.nets import TinyResNet


@pytest.fixture
def model() -> TinyResNet:
    return TinyResNet(spatial_dims=3, num_classes=3).eval()


@pytest.mark.parametrize("class_idx", [1.7, 1.0, torch.tensor([0.0, 2.0]), [0.5, 1], True])
def test_non_integer_classes_are_refused_not_truncated(model, class_idx):
    images = torch.randn(2, 1, 16, 16, 16)
    with pytest.raises(TypeError, match="class_idx must be an int, a sequence of ints or an integer tensor"):
        CAMExplainer(model, "layer4")(images, class_idx=class_idx)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_images_of_another_dtype_than_the_model_say_how_to_convert(model, dtype):
    with pytest.raises(TypeError, match=rf"images are {dtype} but the model's weights are torch.float32"):
        CAMExplainer(model, "layer4")(torch.randn(2, 1, 16, 16, 16, dtype=dtype))


def test_channel_last_volumes_get_a_hint(model):
    with pytest.raises(RuntimeError, match=r"look channel-last .* images.movedim\(-1, 1\)"):
        CAMExplainer(model, "layer4")(torch.randn(2, 16, 16, 16, 1))
    # the channels-last *memory format* of a channel-first tensor is fine
    volumes = torch.randn(2, 1, 16, 16, 16)
    maps = CAMExplainer(model, "layer4")(volumes.to(memory_format=torch.channels_last_3d))["gradcam"]
    torch.testing.assert_close(maps, CAMExplainer(model, "layer4")(volumes)["gradcam"])


def test_missing_layers_or_methods_are_named(model):
    with pytest.raises(ValueError, match="target_layers is None; name the layer"):
        CAMExplainer(model, None)
    with pytest.raises(ValueError, match="methods is empty or None"):
        CAMExplainer(model, "layer4", None)
    with pytest.raises(ValueError, match="methods is empty or None"):
        CAMExplainer(model, "layer4", [])
