"""Per-input-channel attribution on a phantom built so that the answer is known: two channels (two MR sequences) of
the same kind of texture, a lesion in one of them only, and a lesion detector that reads both channels the same way.
The channel holding the lesion must get at least 90 % of the attribution (mean over cases; at least 95 % inside the
lesion), whichever channel it is."""

from __future__ import annotations

import pytest
import torch

from monai_xai.cams import channel_shares
from monai_xai.explanation import explain
from tests.helpers.attribution_nets import LesionDetector, two_channel_phantom

SETTINGS = {"steps": 8, "samples": 16, "occlusion_window": 4, "feature_grid": 4, "blur_sigma": 4.0}
# methods that measure each voxel's contribution to the score; the gradient-only ones below say where the score is
# sensitive, which includes texture near the detector's threshold in the lesion-free channel
CONTRIBUTION = ["integrated_gradients", "deeplift", "gradient_shap", "blur_ig", "occlusion", "feature_ablation"]
SENSITIVITY = ["saliency", "input_x_gradient", "smoothgrad"]


@pytest.fixture(scope="module")
def detector() -> LesionDetector:
    return LesionDetector().eval()


@pytest.mark.parametrize("lesion_channel", [1, 0])
def test_the_channel_that_holds_the_lesion_gets_the_attribution(detector, lesion_channel):
    images, lesions = two_channel_phantom(3, lesion_channel=lesion_channel, seed=4 - lesion_channel)
    images, lesions = images.float(), lesions.float()
    healthy = images.clone()
    healthy[:, lesion_channel] = two_channel_phantom(3, seed=11)[0][:, 0].float()
    scores = detector(images)[:, 1]
    assert (scores > 5 * detector(healthy)[:, 1]).all()  # the lesion makes the score; texture adds a little
    torch.manual_seed(0)
    explanation = explain(detector, images, methods=CONTRIBUTION + SENSITIVITY, class_idx=1, attribution=SETTINGS)
    for method in CONTRIBUTION:
        whole = channel_shares(explanation.attributions[method])
        assert torch.allclose(whole.sum(dim=1), torch.ones(3, dtype=torch.float64))
        assert (whole[:, lesion_channel] >= 0.85).all() and whole[:, lesion_channel].mean() >= 0.9, (method, whole)
        inside = channel_shares(explanation.attributions[method], lesions)[:, lesion_channel]
        assert (inside >= 0.95).all(), (method, inside)
    for method in SENSITIVITY:
        inside = channel_shares(explanation.attributions[method], lesions)[:, lesion_channel]
        assert inside.mean() >= 0.9, (method, inside)
