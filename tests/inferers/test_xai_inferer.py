"""XAIInferer in a real SupervisedEvaluator: maps reach the engine output, per case, under the evaluator's no_grad."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from monai_xai.bundle import check_explain_config
from monai_xai.cams import CAMExplainer
from monai_xai.explanation import SlidingWindowNetwork, network_as_inferred
from monai_xai.inferers import XAIInferer
from monai_xai.utils import label_mask
from tests.helpers.engines import affine_for, case_dataset, collect_outputs, make_evaluator
from tests.helpers.nets import TinyResNet, tiny_unet3d


def test_classification_maps_reach_output_per_case():
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(3, 1, 32, 32)
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam", "hirescam"])
    evaluator = make_evaluator(network, case_dataset(images), inferer, [inferer])
    outputs = collect_outputs(evaluator)

    # oracle: the explainer called directly, outside any engine and outside no_grad
    predicted = network(images).argmax(dim=1)
    expected = {m: CAMExplainer(network, "layer4", [m])(images)[m] for m in ("gradcam", "hirescam")}
    assert len(outputs) == 3
    for index, case in enumerate(outputs):
        assert int(case["xai_class"]) == int(predicted[index])
        for method in ("gradcam", "hirescam"):
            maps = case[f"saliency_{method}"]
            assert maps.shape == (1, 32, 32)
            torch.testing.assert_close(maps.as_tensor(), expected[method][index], atol=1e-5, rtol=1e-4)
            # each case keeps its own affine after decollation (the NIfTI writer relies on it)
            torch.testing.assert_close(maps.affine, affine_for(index, (0.5, 0.5)))
            assert float(case[f"xai_seconds_{method}"]) > 0
        assert case["pred"].shape == (3,)
        assert "xai_pixel_set" not in case  # a classifier explains a class, not a pixel set


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shared_pass_gives_the_same_maps_with_one_forward(spatial_dims):
    methods = ["gradcam", "hirescam", "layercam", "eigencam"]
    network = TinyResNet(spatial_dims=spatial_dims, num_classes=3).eval()
    images = torch.randn(2, 1, *(16,) * spatial_dims)
    forwards = []
    network.register_forward_hook(lambda module, inputs, output: forwards.append(inputs[0].shape[0]))
    runs = {}
    for time_each_method in (True, False):
        forwards.clear()
        inferer = XAIInferer(SimpleInferer(), "layer4", methods, time_each_method=time_each_method)
        runs[time_each_method] = (
            collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer])),
            len(forwards),
        )
    (separate, separate_forwards), (shared, shared_forwards) = runs[True], runs[False]
    # the evaluator's own forward, then one per method (separate) or one for all gradient methods (shared)
    assert separate_forwards == 1 + len(methods) and shared_forwards == 1 + 1
    for one, other in zip(separate, shared):
        for method in methods:
            torch.testing.assert_close(one[f"saliency_{method}"].as_tensor(), other[f"saliency_{method}"].as_tensor())
        # a shared call has one time, recorded under every method
        assert len({float(other[f"xai_seconds_{method}"]) for method in methods}) == 1
        assert len({float(one[f"xai_seconds_{method}"]) for method in methods}) == len(methods)


def test_given_class_per_sample_and_prediction_unchanged():
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(2, 1, 32, 32)
    inferer = XAIInferer(None, "layer4", "gradcam", class_idx=[2, 0])
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer]))
    expected = CAMExplainer(network, "layer4", ["gradcam"])(images, class_idx=[2, 0])["gradcam"]
    with torch.no_grad():
        logits = network(images)
    for index, case in enumerate(outputs):
        assert int(case["xai_class"]) == [2, 0][index]
        torch.testing.assert_close(case["saliency_gradcam"].as_tensor(), expected[index], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(case["pred"].as_tensor(), logits[index], atol=1e-5, rtol=1e-4)


def test_segmentation_pixel_set_from_batch_label():
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    labels = torch.zeros(2, 1, 16, 16, 16)
    labels[0, :, 2:8, 3:9, 4:10] = 1
    labels[1, :, 8:14, 6:12, 2:8] = 1
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1, pixel_set_key="label")
    outputs = collect_outputs(make_evaluator(network, case_dataset(images, label=labels), inferer, [inferer]))
    expected = CAMExplainer(network, "model.1.submodule", ["gradcam"])(images, class_idx=1, pixel_set=labels)["gradcam"]
    for index, case in enumerate(outputs):
        assert case["saliency_gradcam"].shape == (1, 16, 16, 16)
        torch.testing.assert_close(case["saliency_gradcam"].as_tensor(), expected[index], atol=1e-5, rtol=1e-4)
        # the engine output says what was explained: the label's class-1 region, with the image's affine
        torch.testing.assert_close(case["xai_pixel_set"].as_tensor(), labels[index])
        torch.testing.assert_close(case["xai_pixel_set"].affine, affine_for(index, (0.5, 0.5, 0.5)))


@pytest.mark.parametrize("pixel_set", ["pred", "largest_component", "image"])
def test_named_pixel_set_reaches_the_output_as_explained(pixel_set):
    """The pixel set in the engine output is the one the maps explain: the maps of the explainer given that tensor
    equal the engine's maps (oracle: the target resolved by hand from the network's own prediction)."""
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", ["hirescam"], class_idx=1, pixel_set=pixel_set)
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer]))
    with torch.no_grad():
        predicted = (network(images).argmax(dim=1, keepdim=True) == 1).float()
    explainer = CAMExplainer(network, "model.1.submodule", ["hirescam"])
    for index, case in enumerate(outputs):
        explained = case["xai_pixel_set"].as_tensor()
        assert explained.shape == (1, 16, 16, 16)
        if pixel_set == "pred":
            torch.testing.assert_close(explained, predicted[index])
        elif pixel_set == "image":
            assert bool((explained == 1).all())
        else:  # one connected part of the prediction
            assert 0 < explained.sum() <= predicted[index].sum() and bool((explained <= predicted[index]).all())
        expected = explainer(images[index : index + 1], class_idx=1, pixel_set=explained[None])["hirescam"][0]
        torch.testing.assert_close(case["saliency_hirescam"].as_tensor(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("window", [None, 16])
def test_one_voxel_and_the_empty_set_as_a_config_gives_them(window):
    """The segmentation-CAM study's other pixel sets: one voxel, given as a JSON list, is the recorded set and gives
    the explainer's maps of that voxel (whole volume or window by window); the empty set gives all-zero maps, a
    warning that says why, and no error."""
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 24, 24, 24)
    inner = SimpleInferer() if window is None else SlidingWindowInferer(roi_size=window, sw_batch_size=2)
    window_args = (
        {} if window is None else {"roi_size": window, "sw_batch_size": 2, "overlap": 0.25, "sw_mode": "constant"}
    )
    voxel = [5, 17, 11]
    inferer = XAIInferer(inner, "model.1.submodule", ["gradcam", "hirescam"], class_idx=1, pixel_set=voxel)
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer], batch_size=2))
    explainer = CAMExplainer(network, "model.1.submodule", ["gradcam", "hirescam"], **window_args)
    expected = explainer(images, class_idx=1, pixel_set=tuple(voxel))
    for index, case in enumerate(outputs):
        explained = case["xai_pixel_set"].as_tensor()
        assert explained.sum() == 1 and explained[0, 5, 17, 11] == 1
        for method in ("gradcam", "hirescam"):
            torch.testing.assert_close(
                case[f"saliency_{method}"].as_tensor(), expected[method][index], atol=1e-5, rtol=1e-4
            )
        assert case["saliency_gradcam"].max() > 0
    empty = XAIInferer(inner, "model.1.submodule", ["gradcam", "hirescam"], class_idx=1, pixel_set="empty")
    with (
        pytest.warns(UserWarning, match="pixel_set='empty' was asked for.*all zeros")
        if window is None
        else nullcontext()
    ):
        outputs = collect_outputs(make_evaluator(network, case_dataset(images), empty, [empty], batch_size=2))
    for case in outputs:
        assert case["xai_pixel_set"].sum() == 0
        assert case["saliency_gradcam"].abs().max() == 0 and case["saliency_hirescam"].abs().max() == 0


@pytest.mark.parametrize("window", [None, 16])
def test_the_peak_is_each_images_own_voxel_also_with_a_sliding_window(window):
    """ "peak": each image's voxel of highest class score on the whole (blended) prediction; with a sliding window the
    inferer resolves it on the whole prediction and the windows explain that voxel, as given the voxel by hand."""
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 24, 24, 24)
    inner = SimpleInferer() if window is None else SlidingWindowInferer(roi_size=window, sw_batch_size=2)
    window_args = {} if window is None else {"roi_size": window, "sw_batch_size": 2, "sw_mode": "constant"}
    inferer = XAIInferer(inner, "model.1.submodule", ["gradcam"], class_idx=1, pixel_set="peak")
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer], batch_size=2))
    with torch.no_grad():
        prediction = inner(images, network)
    explainer = CAMExplainer(network, "model.1.submodule", ["gradcam"], **window_args)
    for index, case in enumerate(outputs):
        explained = case["xai_pixel_set"].as_tensor()
        peak = prediction[index, 1].flatten().argmax()
        assert explained.sum() == 1 and explained.flatten()[peak] == 1
        expected = explainer(images[index : index + 1], class_idx=1, pixel_set=explained[None])["gradcam"][0]
        torch.testing.assert_close(case["saliency_gradcam"].as_tensor(), expected, atol=1e-5, rtol=1e-4)
        assert case["saliency_gradcam"].max() > 0
    assert not torch.equal(outputs[0]["xai_pixel_set"], outputs[1]["xai_pixel_set"])  # one voxel per image


@pytest.mark.parametrize("value", [[1.5, 2, 3], [], [True, 1, 2], "voxel"])
def test_a_pixel_set_that_is_neither_a_name_nor_a_voxel_is_refused(value):
    with pytest.raises(ValueError, match="pixel_set"):
        XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1, pixel_set=value)


def test_sliding_window_inferer_settings_are_used_for_the_maps():
    network = tiny_unet3d().eval()
    images = torch.randn(1, 1, 24, 24, 24)
    window = SlidingWindowInferer(roi_size=16, sw_batch_size=2, overlap=0.5, mode="constant")
    inferer = XAIInferer(window, "model.1.submodule", ["gradcam"], class_idx=1)
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer], batch_size=1))
    explainer = CAMExplainer(
        network, "model.1.submodule", ["gradcam"], roi_size=16, sw_batch_size=2, overlap=0.5, sw_mode="constant"
    )
    expected = explainer(images, class_idx=1, pixel_set="pred")["gradcam"]
    torch.testing.assert_close(outputs[0]["saliency_gradcam"].as_tensor(), expected[0], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        prediction = window(images, network)
    torch.testing.assert_close(outputs[0]["pred"].as_tensor(), prediction[0], atol=1e-5, rtol=1e-4)
    # the recorded pixel set is the blended prediction's class-1 region (what the metrics score)
    torch.testing.assert_close(outputs[0]["xai_pixel_set"].as_tensor(), (prediction[0:1].argmax(1) == 1).float())


def test_label_pixel_set_label_map_and_one_hot():
    label_map = torch.tensor([[[0, 1, 2, 1]], [[2, 2, 0, 1]]]).reshape(2, 1, 2, 2)
    classes = torch.tensor([1, 2])
    expected = torch.tensor([[[0, 1], [0, 1]], [[1, 1], [0, 0]]], dtype=torch.float32).reshape(2, 1, 2, 2)
    torch.testing.assert_close(label_mask(label_map, classes), expected)
    one_hot = torch.nn.functional.one_hot(label_map[:, 0], 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(label_mask(one_hot, classes), expected)


@pytest.mark.parametrize("time_each_method", [True, False])
def test_each_method_at_its_own_layer(time_each_method):
    # oracle: each method explained alone at its layer; shared passes: one per distinct layer
    layers = {"gradcam": "layer3", "hirescam": "layer4", "layercam": "layer3", "eigencam": "layer4"}
    network = TinyResNet(spatial_dims=3, num_classes=3).eval()
    images = torch.randn(2, 1, 16, 16, 16)
    forwards = []
    network.register_forward_hook(lambda module, inputs, output: forwards.append(inputs[0].shape[0]))
    inferer = XAIInferer(SimpleInferer(), layers, list(layers), time_each_method=time_each_method)
    outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer]))
    assert len(forwards) == 1 + (len(layers) if time_each_method else 2)
    for method, layer in layers.items():
        expected = CAMExplainer(network, layer, [method])(images)[method]
        at_other = CAMExplainer(network, "layer4" if layer == "layer3" else "layer3", [method])(images)[method]
        for index, case in enumerate(outputs):
            torch.testing.assert_close(case[f"saliency_{method}"].as_tensor(), expected[index], atol=1e-5, rtol=1e-4)
            assert not torch.allclose(case[f"saliency_{method}"].as_tensor(), at_other[index], atol=1e-3)


def test_errors_say_what_to_set():
    network = TinyResNet(spatial_dims=2)
    # no layer: chosen at the first call (see test_no_layer_chooses_one_and_says_which)
    assert XAIInferer(SimpleInferer(), "", ["gradcam"]).chosen_layer is None
    with pytest.raises(ValueError, match=r"pixel_set \(xai_pixel_set\) must be one of"):
        XAIInferer(SimpleInferer(), "layer4", ["gradcam"], pixel_set="box")
    segmenter = tiny_unet3d().eval()
    unattached = XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1, pixel_set_key="label")
    with pytest.raises(RuntimeError, match="attach the inferer"):
        unattached(torch.randn(1, 1, 16, 16, 16), segmenter)
    check_explain_config(network, "", ["gradcam"])  # the inferer chooses the layer
    with pytest.raises(ValueError, match="unknown CAM method"):
        check_explain_config(network, "", ["gradcamm"])
    with pytest.raises(ValueError, match="--xai_target_layer"):
        check_explain_config(network, "layer9", ["gradcam"])
    with pytest.raises(ValueError, match="unknown CAM method"):
        check_explain_config(network, "layer4", ["gradcamm"])
    check_explain_config(network, {"gradcam": "layer3", "hirescam": "layer4"}, ["gradcam", "hirescam"])
    with pytest.raises(ValueError, match=r"missing \['hirescam'\].*--xai_target_layer"):
        check_explain_config(network, {"gradcam": "layer3"}, ["gradcam", "hirescam"])
    with pytest.raises(ValueError, match=r"not among the methods \['layercam'\]"):
        XAIInferer(SimpleInferer(), {"gradcam": "layer3", "layercam": "layer4"}, ["gradcam"])
    with pytest.raises(ValueError, match="no layer named 'layer9'"):
        check_explain_config(network, {"gradcam": "layer3", "hirescam": "layer9"}, ["gradcam", "hirescam"])


def test_attached_but_not_the_evaluators_inferer_is_reported():
    network = TinyResNet(spatial_dims=2).eval()
    images = torch.randn(2, 1, 32, 32)
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    evaluator = make_evaluator(network, case_dataset(images), SimpleInferer(), [inferer])
    with pytest.raises(RuntimeError, match="make it the evaluator's inferer"):
        evaluator.run()


def test_a_network_as_its_sliding_window_inferer_runs_it():
    """What the metrics that re-run the network call: the bundle's own windowed prediction, whatever the image size."""
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 24, 20, 16)
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian")
    windowed = network_as_inferred(network, inferer)
    assert isinstance(windowed, SlidingWindowNetwork) and network_as_inferred(network, SimpleInferer()) is network
    with torch.no_grad():
        torch.testing.assert_close(windowed(images), inferer(images, network))
        assert not torch.allclose(windowed(images), network(images), atol=1e-3)  # the window matters here


class _Answering(torch.nn.Module):
    """A network that answers as some published ones do: probabilities from forward, or deep-supervision outputs."""

    def __init__(self, network: torch.nn.Module, probabilities: bool = False, deep_supervision: bool = False) -> None:
        super().__init__()
        self.network, self.probabilities, self.deep_supervision = network, probabilities, deep_supervision

    def forward(self, images: torch.Tensor):
        out = self.network(images)
        out = out.softmax(dim=1) if self.probabilities else out
        return [out, torch.nn.functional.avg_pool3d(out, 2)] if self.deep_supervision else out


def test_the_metrics_network_is_run_as_inferred_and_scored_as_the_step_reads_it():
    """xai_scored_network: the window as the bundle's inferer, the head per window, probabilities as the
    log-probabilities of the blended prediction (whose softmax is the bundle's own blended probabilities)."""
    network = tiny_unet3d().eval()
    images = torch.randn(1, 1, 24, 20, 16)
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian")
    probabilities = _Answering(network, probabilities=True)
    supervised = _Answering(network, deep_supervision=True)
    with torch.no_grad():
        bundle_probabilities = inferer(images, probabilities)
        for network_output in ("probabilities", "auto"):
            scored = network_as_inferred(probabilities, inferer, None, network_output)
            torch.testing.assert_close(scored(images).softmax(dim=1), bundle_probabilities, atol=1e-5, rtol=0)
        heads = network_as_inferred(supervised, inferer, "highest_resolution", "logits")
        torch.testing.assert_close(heads(images), inferer(images, network))
        whole = network_as_inferred(probabilities, SimpleInferer(), None, "probabilities")
        torch.testing.assert_close(whole(images).softmax(dim=1), probabilities(images), atol=1e-5, rtol=0)
    assert network_as_inferred(network, inferer, None, "logits").network is network  # SlidingWindowNetwork's
