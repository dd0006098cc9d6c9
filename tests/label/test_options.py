"""Reading explain options from MONAI Label request params: defaults, Slicer-style lists, clear errors."""

from __future__ import annotations

import pytest

from monai_xai.cams import ClassSet
from monai_xai.explanation import ExplainRequest
from monai_xai.label import InvalidExplainRequest, parse_explain_options

METHODS = ("gradcam", "hirescam")
LAYERS = ("layer4", "layer3")
CLASSIFIER = dict(methods=METHODS, target_layers=LAYERS, class_names=["no lesion", "lesion"], segmentation=False)
SEGMENTER = dict(methods=METHODS, target_layers=LAYERS, class_names=["background", "lesion"], segmentation=True)


def test_defaults():
    options = parse_explain_options({}, **CLASSIFIER)
    request = options.request
    assert (options.method, options.target_layer, request.class_idx) == ("gradcam", "layer4", None)
    assert (options.n_bins, options.min_heat, options.result_volume, request.score) == (10, 0.1, "bins", "logit")
    assert request == ExplainRequest(methods=("gradcam",), target_layers="layer4")
    segmentation = parse_explain_options({}, **SEGMENTER).request
    assert (segmentation.class_idx, segmentation.pixel_set) == (1, "pred")  # first class that is not background


def test_values_lists_names_and_indices():
    # MONAI Label merges the model's config lists under the request; Slicer sends the chosen combo item.
    params = {"method": ["hirescam", "gradcam"], "class": "Lesion", "bins": "4", "min_heat": "0.5"}
    options = parse_explain_options(params, **CLASSIFIER)
    assert (options.method, options.request.class_idx, options.n_bins, options.min_heat) == ("hirescam", 1, 4, 0.5)
    assert parse_explain_options({"class": 0}, **CLASSIFIER).request.class_idx == 0
    assert parse_explain_options({"class": "1"}, **CLASSIFIER).request.class_idx == 1
    assert parse_explain_options({"class": "predicted"}, **CLASSIFIER).request.class_idx is None
    options = parse_explain_options({"pixel_set": "largest_component", "result_volume": "heatmap"}, **SEGMENTER)
    assert (options.request.pixel_set, options.result_volume) == ("largest_component", "heatmap")
    options = parse_explain_options({"pixel_set": ["image", "pred"], "score": "probability"}, **SEGMENTER)
    assert (options.request.pixel_set, options.request.score) == ("image", "probability")


def test_several_classes_of_a_segmenter_and_pytorch_grad_cam_methods_as_the_overlays_take_them():
    kits = dict(SEGMENTER, class_names=["background", "kidney", "tumour", "cyst"])
    assert parse_explain_options({"class": "foreground"}, **kits).request.class_idx == ClassSet()
    assert parse_explain_options({"class": "Kidney+tumour"}, **kits).request.class_idx == ClassSet((1, 2))
    assert parse_explain_options({"class": "1+3"}, **kits).request.class_idx == ClassSet((1, 3))
    with pytest.raises(InvalidExplainRequest, match="names a class twice"):
        parse_explain_options({"class": "1+kidney"}, **kits)
    with pytest.raises(InvalidExplainRequest, match="unknown class 'liver'"):
        parse_explain_options({"class": "kidney+liver"}, **kits)
    # classifiers explain one class: "+" is no class name there
    with pytest.raises(InvalidExplainRequest, match="unknown class 'lesion\\+no lesion'"):
        parse_explain_options({"class": "lesion+no lesion"}, **CLASSIFIER)
    assert parse_explain_options({"method": "grad-cam:FinerCAM"}, **CLASSIFIER).method == "grad-cam:FinerCAM"
    with pytest.raises(InvalidExplainRequest, match="NoSuchCAM"):
        parse_explain_options({"method": "grad-cam:NoSuchCAM"}, **CLASSIFIER)


@pytest.mark.parametrize(
    "params, segmenter, message",
    [
        ({"method": "gradcamm"}, False, r"unknown method 'gradcamm'; choose one of \['gradcam', 'hirescam'\]"),
        ({"target_layer": "layer9"}, False, "unknown target_layer 'layer9'"),
        ({"class": 2}, False, r"class 2 is out of range: the network has 2 classes \(0..1"),
        ({"class": "-1"}, False, "class -1 is out of range"),
        ({"class": "tumour"}, False, r"unknown class 'tumour'; choose one of \['predicted', 'no lesion', 'lesion'\]"),
        ({"class": "predicted"}, True, r"unknown class 'predicted'; choose one of \['background', 'lesion'\]"),
        ({"pixel_set": "box"}, True, "unknown pixel_set 'box'"),
        ({"score": "softmax"}, False, r"unknown score 'softmax'; choose one of \['logit', 'probability'\]"),
        ({"bins": 0}, False, r"bins must be an int in \[1, 255\], got 0"),
        ({"bins": "ten"}, False, "bins must be an int"),
        ({"min_heat": 2}, False, r"min_heat must be in \[0, 1\], got 2.0"),
        ({"min_heat": "hot"}, False, "min_heat must be a number"),
        ({"result_volume": "png"}, False, "unknown result_volume 'png'"),
        ({"method": []}, False, "'method' is an empty list"),
    ],
)
def test_bad_requests_say_what_is_allowed(params, segmenter, message):
    with pytest.raises(InvalidExplainRequest, match=message):
        parse_explain_options(params, **(SEGMENTER if segmenter else CLASSIFIER))
