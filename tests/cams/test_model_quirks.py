"""Networks explained as their own inference runs them: normalisation layers in train mode (HD-BET), probabilities
returned by ``forward`` (no second softmax), deep-supervision outputs (the highest-resolution head).

Each map is checked against the same network written without the quirk (plain logits, one output, the statistics
computed by hand), never against the code under test."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_xai.cams import CAMExplainer
from monai_xai.cams.model_mode import pinned_modes, resolve_model_mode
from monai_xai.cams.outputs import OutputHandling, is_probability_output, probabilities_to_logits, select_head
from monai_xai.enums import ModelMode
from monai_xai.explanation import ExplainRequest, explain
from monai_xai.utils import preserved_model_state


class NormNet(nn.Module):
    """conv -> InstanceNorm with running statistics (as HD-BET's) -> LeakyReLU(inplace) -> conv head, 3 classes;
    ``probabilities`` puts a softmax inside forward, ``deep_supervision`` also returns a half-resolution output."""

    def __init__(self, probabilities: bool = False, deep_supervision: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv3d(1, 4, 3, padding=1)
        self.norm = nn.InstanceNorm3d(4, affine=True, track_running_stats=True)
        self.head = nn.Conv3d(4, 3, 1)
        self.probabilities = probabilities
        self.deep_supervision = deep_supervision
        with torch.no_grad():  # running statistics far from any input's: eval and train mode differ clearly
            self.norm.running_mean.fill_(3.0)
            self.norm.running_var.fill_(0.05)

    def forward(self, x: torch.Tensor):
        x = F.leaky_relu(self.norm(self.features(x)), 0.01, inplace=True)
        out = self.head(x)
        if self.probabilities:
            out = out.softmax(dim=1)
        if self.deep_supervision:
            return [out, F.avg_pool3d(out, 2)]
        return out


def _images() -> torch.Tensor:
    torch.manual_seed(1)
    images = torch.randn(2, 1, 12, 12, 12)
    images[:, :, 3:7, 4:9, 2:6] += 2.0
    return images


def test_norm_train_explains_the_instance_statistics_output_and_leaves_the_network_as_found():
    net = NormNet()
    images = _images()
    net.eval()
    with torch.no_grad():
        eval_out = net(images)
        # by hand: InstanceNorm with each input's own statistics, the rest as in eval mode
        features = net.features(images)
        normed = F.instance_norm(features, weight=net.norm.weight, bias=net.norm.bias, eps=net.norm.eps)
        by_hand = net.head(F.leaky_relu(normed, 0.01))
    running = net.norm.running_mean.clone()
    with pinned_modes(net, ModelMode.NORM_TRAIN), preserved_model_state(net), torch.no_grad():
        assert net.norm.training and not net.head.training
        pinned_out = net(images)
    torch.testing.assert_close(pinned_out, by_hand)
    assert (eval_out - by_hand).abs().max() > 0.1  # the mode matters for this network
    assert not net.training and not net.norm.training
    torch.testing.assert_close(net.norm.running_mean, running)  # the train-mode pass's update was undone
    assert "train" not in net.norm.__dict__

    explained = explain(net, images, methods=["gradcam"], target_layers="norm", class_idx=1, model_mode="norm_train")
    torch.testing.assert_close(explained.prediction, by_hand)
    torch.testing.assert_close(net.norm.running_mean, running)


def test_auto_keeps_the_modes_a_network_s_own_code_chose():
    net = NormNet().eval()
    net.norm.train()  # what HD-BET's SetNetworkToVal does: the network in eval mode, its norms in train mode
    mode, reason = resolve_model_mode(net, "auto")
    assert mode == ModelMode.AS_GIVEN and "normalisation" in reason
    images = _images()
    with torch.no_grad():
        own = net(images)
    explained = explain(net, images, methods=["gradcam"], target_layers="norm", class_idx=1)
    torch.testing.assert_close(explained.prediction, own)
    assert net.norm.training and not net.training  # as given, and given back so
    assert resolve_model_mode(NormNet().eval(), "auto")[0] == ModelMode.EVAL
    assert resolve_model_mode(NormNet().train(), "auto")[0] == ModelMode.EVAL


def test_probabilities_returned_by_forward_are_not_passed_through_a_second_softmax():
    logits_net, probability_net = NormNet(), NormNet(probabilities=True)
    probability_net.load_state_dict(logits_net.state_dict())
    images = _images()
    for net in (logits_net, probability_net):
        net.eval()
    reference = CAMExplainer(logits_net, "features", ("gradcam", "hirescam"), score="probability")(
        images, class_idx=1, pixel_set="image"
    )
    # detected on the prediction: the same maps as the logits network's probability
    explained = explain(
        probability_net, images, methods=["gradcam", "hirescam"], target_layers="features", class_idx=1,
        pixel_set="image", score="probability",
    )  # fmt: skip
    for method, maps in reference.items():
        torch.testing.assert_close(explained.maps[method], maps, atol=1e-5, rtol=0)
    # a second softmax (the network's probabilities taken for logits) gives other maps
    doubled = CAMExplainer(probability_net, "features", "gradcam", score="probability")(
        images, class_idx=1, pixel_set="image"
    )
    assert (doubled["gradcam"] - reference["gradcam"]).abs().max() > 1e-3
    # the explained prediction's softmax is the network's own probabilities
    with torch.no_grad():
        torch.testing.assert_close(explained.prediction.softmax(dim=1), probability_net(images), atol=1e-6, rtol=0)


def test_probability_detection_and_logits():
    probabilities = torch.rand(2, 3, 4, 4).softmax(dim=1)
    assert is_probability_output(probabilities)
    assert not is_probability_output(torch.randn(2, 3, 4, 4))
    assert not is_probability_output(torch.rand(2, 1, 4, 4))  # one channel: a logit may lie in [0, 1]
    torch.testing.assert_close(probabilities_to_logits(probabilities).softmax(dim=1), probabilities)
    logit = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(probabilities_to_logits(logit.sigmoid()), logit, atol=1e-5, rtol=0)


def test_deep_supervision_explained_at_the_highest_resolution_head():
    single, supervised = NormNet().eval(), NormNet(deep_supervision=True).eval()
    supervised.load_state_dict(single.state_dict())
    images = _images()
    request = {"methods": ["gradcam"], "class_idx": 1, "pixel_set": "image", "model_mode": "eval"}
    reference = explain(single, images, **request)
    explained = explain(supervised, images, output_head="highest_resolution", **request)
    assert reference.maps["gradcam"].amax() == 1
    assert explained.layers == reference.layers  # the layer chosen on the prediction head too
    torch.testing.assert_close(explained.maps["gradcam"], reference.maps["gradcam"], atol=1e-6, rtol=0)
    torch.testing.assert_close(explained.prediction, reference.prediction)
    with pytest.raises(ValueError, match="xai_output_head 'highest_resolution'"):
        explain(supervised, images, methods=["gradcam"], target_layers="norm", class_idx=1)
    outputs = [torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 4, 4)]
    assert select_head(outputs, "highest_resolution") is outputs[1]
    assert select_head(outputs, 0) is outputs[0]
    with pytest.raises(ValueError, match="out of range"):
        OutputHandling(head=2)(outputs)


def test_request_refuses_unknown_quirk_settings():
    with pytest.raises(ValueError, match="xai_model_mode"):
        ExplainRequest(methods=("gradcam",), model_mode="training")
    with pytest.raises(ValueError, match="xai_output_head"):
        ExplainRequest(methods=("gradcam",), output_head="last")
    with pytest.raises(ValueError, match="xai_network_output"):
        ExplainRequest(methods=("gradcam",), network_output="softmax")


def _input_gradient(net: nn.Module, images: torch.Tensor, norms_in_train_mode: bool) -> torch.Tensor:
    """d p_1 / d x of NormNet's class-1 probability summed over each image, written without the quirks: the network's
    layers called by hand, InstanceNorm with each input's statistics or the running ones, one softmax."""
    pixels = images.clone().requires_grad_(True)
    features = net.features(pixels)
    if norms_in_train_mode:
        normed = F.instance_norm(features, weight=net.norm.weight, bias=net.norm.bias, eps=net.norm.eps)
    else:
        normed = F.instance_norm(
            features, net.norm.running_mean, net.norm.running_var, net.norm.weight, net.norm.bias, False, 0.0,
            net.norm.eps,
        )  # fmt: skip
    probabilities = net.head(F.leaky_relu(normed, 0.01)).softmax(dim=1)
    (grad,) = torch.autograd.grad(probabilities[:, 1].sum(), pixels)
    return grad


def test_input_attributions_run_in_the_network_s_own_modes_on_its_probabilities():
    """An HD-BET-like network (eval mode with its InstanceNorm layers in train mode, a softmax inside forward) is
    explained by input attributions as by CAMs: in its own modes (auto), its probabilities taken as they are."""
    net = NormNet(probabilities=True).eval()
    net.norm.train()  # as HD-BET's SetNetworkToVal
    images = _images()
    running = net.norm.running_mean.clone()
    request = {"methods": ["saliency", "input_x_gradient"], "class_idx": 1, "pixel_set": "image"}
    explained = explain(net, images, score="probability", **request)
    grad = _input_gradient(net, images, norms_in_train_mode=True)
    torch.testing.assert_close(explained.attributions["saliency"], grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(explained.attributions["input_x_gradient"], images * grad, atol=1e-6, rtol=1e-4)
    assert net.norm.training and not net.training  # given back in its modes
    torch.testing.assert_close(net.norm.running_mean, running)  # the train-mode passes' updates undone
    # plain eval mode explains another network
    in_eval = explain(net, images, score="probability", model_mode="eval", **request)
    torch.testing.assert_close(
        in_eval.attributions["saliency"], _input_gradient(net, images, False), atol=1e-6, rtol=1e-4
    )
    assert (in_eval.attributions["saliency"] - grad).abs().max() > 1e-3
    # probabilities taken for logits (a second softmax) would give other attributions
    doubled = explain(net, images, score="probability", network_output="logits", **request)
    assert (doubled.attributions["saliency"] - grad).abs().max() > 1e-4


def test_input_attributions_of_a_deep_supervision_network_take_the_highest_resolution_head():
    single, supervised = NormNet().eval(), NormNet(deep_supervision=True).eval()
    supervised.load_state_dict(single.state_dict())
    images = _images()
    request = {"methods": ["saliency", "integrated_gradients"], "class_idx": 1, "pixel_set": "pred"}
    reference = explain(single, images, model_mode="eval", **request)
    explained = explain(supervised, images, model_mode="eval", output_head="highest_resolution", **request)
    for method in request["methods"]:
        torch.testing.assert_close(explained.attributions[method], reference.attributions[method], atol=1e-6, rtol=0)
    assert explained.layers == {"saliency": None, "integrated_gradients": None}
