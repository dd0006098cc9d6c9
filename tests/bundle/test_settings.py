"""ExplainSettings: the xai_* ids read once, layered as a bundle run layers them, typed and checked."""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser

from monai_xai.bundle import ExplainSettings, check_explain_config, explain_config_files
from monai_xai.enums import PixelSet, Score
from tests.helpers.bundles import make_classification_bundle, make_segmentation_bundle
from tests.helpers.nets import TinyResNet


def test_from_bundle_layers_overlays_then_the_bundles_explain_json_then_overrides(tmp_path):
    bundle = make_segmentation_bundle(tmp_path / "bundle", n_cases=1)
    plain = ExplainSettings.from_bundle(bundle)  # only the overlays' defaults
    assert plain.methods == ("gradcam",) and plain.target_layers is None and plain.class_idx is None
    assert plain.pixel_set == PixelSet.PRED and plain.score == Score.LOGIT and plain.pixel_set_key is None
    assert plain.metrics == ("ehr_auc", "heat_diff", "pointing_game") and plain.region_key == "label"
    assert plain.metric_args["road_combined"] == {"percentiles": [10, 30, 50, 70, 90]}
    own = {"xai_methods": ["hirescam"], "xai_target_layer": "model.1", "xai_class": 1, "xai_pixel_set": "image"}
    (bundle / "configs" / "explain.json").write_text(json.dumps({**own, "xai_score": "probability"}))
    settings = ExplainSettings.from_bundle(bundle, xai_class=0)
    assert settings.methods == ("hirescam",) and settings.target_layers == "model.1" and settings.class_idx == 0
    assert settings.pixel_set == "image" and settings.score is Score.PROBABILITY
    # without the overlays: only what the bundle itself sets
    alone = ExplainSettings.from_bundle(bundle, overlays=())
    assert alone.methods == ("hirescam",) and alone.region_key is None and alone.metrics == ()


def test_former_ids_still_work(tmp_path):
    bundle = make_segmentation_bundle(tmp_path / "bundle", n_cases=1)
    (bundle / "configs" / "explain.json").write_text(json.dumps({"xai_mask": "largest_component"}))
    assert ExplainSettings.from_bundle(bundle).pixel_set == PixelSet.LARGEST_COMPONENT
    assert ExplainSettings.from_bundle(bundle, overlays=()).pixel_set == PixelSet.LARGEST_COMPONENT
    assert ExplainSettings.from_bundle(bundle, xai_mask_key="label").pixel_set_key == "label"
    # the new id wins over the former one
    assert ExplainSettings.from_bundle(bundle, xai_pixel_set="image").pixel_set == PixelSet.IMAGE


def test_from_config_parses_expressions_and_references():
    parser = ConfigParser({"n": 2, "xai_methods": "$['gradcam'] * @n", "xai_class": "@n", "xai_score": "probability"})
    settings = ExplainSettings.from_config(parser)
    assert settings.methods == ("gradcam", "gradcam") and settings.class_idx == 2 and settings.score == "probability"


def test_values_are_checked_once_with_the_id_to_fix():
    with pytest.raises(
        ValueError,
        match=r"xai_pixel_set\) must be one of \['pred', 'largest_component', 'image', 'empty', 'peak'\].*one voxel",
    ):
        ExplainSettings(pixel_set="box")
    with pytest.raises(ValueError, match=r"xai_score\) must be one of"):
        ExplainSettings(score="softmax")
    with pytest.raises(ValueError, match=r"xai_class\) must be an int"):
        ExplainSettings(class_idx=1.7)
    with pytest.raises(ValueError, match='xai_region_value must be "class", null or an int'):
        ExplainSettings(region_value="lesion")
    settings = ExplainSettings(methods="gradcam", target_layers="")
    assert settings.methods == ("gradcam",) and settings.target_layers is None
    changed = settings.replace(methods=["hirescam"], class_idx=None, score="probability")
    assert changed.methods == ("hirescam",) and changed.score == Score.PROBABILITY and changed.class_idx is None


def test_check_names_the_setting_to_fix():
    network = TinyResNet(spatial_dims=2)
    ExplainSettings(methods=("gradcam",), target_layers="layer4").check(network)
    # no layer: the inferer chooses one on the first batch, so only the methods are checked
    ExplainSettings(methods=("gradcam",)).check(network)
    with pytest.raises(ValueError, match="unknown CAM method 'gradcamm'.*--xai_methods"):
        ExplainSettings(methods=("gradcamm",)).check(network)
    with pytest.raises(ValueError, match=r"methods \(xai_methods\) is empty"):
        check_explain_config(network, None, [])
    with pytest.raises(ValueError, match="no layer named 'layer9'.*--xai_target_layer"):
        ExplainSettings(methods=("gradcam",), target_layers="layer9").check(network)
    with pytest.raises(ValueError, match=r"methods \(xai_methods\) is empty"):
        check_explain_config(network, "layer4", [])
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        check_explain_config("network", "layer4", ["gradcam"])


def test_the_overlays_pass_their_ids_to_the_settings(tmp_path):
    """Every field's id is what the overlays define (a renamed id would silently fall back to the default)."""
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=1)
    parser = ConfigParser()
    parser.read_config(explain_config_files(bundle))
    for config_id in ExplainSettings.CONFIG_IDS.values():
        assert config_id in parser, config_id
