"""BundleExplainTask in-process on the demo bundles' real networks (random weights): layers, grid, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException

from monai_xai.describe import describe
from monai_xai.label import BundleExplainTask


@pytest.mark.parametrize("layer", ["model.1.submodule.1.submodule.1.submodule", "model.1.submodule.2"])
def test_bundle_layers_explained_onto_the_input_grid(unet_bundle, studies_dir, layer):
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam", "eigencam"])
    image = studies_dir / "phantom_lesion.nii.gz"
    request = {"image": str(image), "device": "cpu", "target_layer": layer, "method": "eigencam", "bins": 5}
    result_file, result = task(request)
    labels = nib.load(result_file)
    source = nib.load(image)
    assert labels.shape == source.shape
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)
    assert np.asarray(labels.dataobj).dtype == np.uint8 and np.asarray(labels.dataobj).max() <= 5
    assert result["target_layer"] == layer and result["label_names"] == {
        "heat 0.0-0.2": 1,
        "heat 0.2-0.4": 2,
        "heat 0.4-0.6": 3,
        "heat 0.6-0.8": 4,
        "heat 0.8-1.0": 5,
    }
    Path(result_file).unlink()


def test_result_json_describes_the_heatmap_on_the_loaded_grid(unet_bundle, studies_dir):
    """The description is that of the returned heatmap on the loaded NIfTI's grid, with its (permuted, flipped) RAS
    affine: the same text as describing the result file with nibabel's affine; strict JSON."""
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam"])
    request = {"image": str(studies_dir / "phantom_lesion.nii.gz"), "device": "cpu", "result_volume": "heatmap"}
    result_file, result = task(request)
    heatmap = nib.load(result_file)
    expected = describe(
        np.asarray(heatmap.dataobj), heatmap.affine, class_names=task.class_names, explained=1, method="gradcam"
    )
    assert result["class"] == "lesion" and result["description"].startswith("The map explains lesion. Focus: ")
    assert result["description"] == expected.text
    assert result["description_fields"]["region_location"] == expected.as_dict()["region_location"]
    assert result["description_fields"]["method"] == "gradcam" and result["description_fields"]["calibrated"] is False
    json.dumps(result, allow_nan=False)
    Path(result_file).unlink()


def test_an_input_attribution_needs_no_layer_and_its_budget_is_a_422(unet_bundle, studies_dir):
    """integrated_gradients through the task: the heatmap on the loaded grid, whatever target_layer the request
    names; a request above the budget is a bad request naming its estimate."""
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam", "integrated_gradients"])
    image = studies_dir / "phantom_lesion.nii.gz"
    request = {"image": str(image), "device": "cpu", "method": "integrated_gradients", "result_volume": "heatmap"}
    result_file, result = task(request)
    heatmap = np.asarray(nib.load(result_file).dataobj)
    assert heatmap.shape == nib.load(image).shape  # resampled onto the loaded grid: the peak is interpolated
    assert heatmap.min() >= 0 and 0.5 < heatmap.max() <= 1
    assert result["description_fields"]["method"] == "integrated_gradients"
    Path(result_file).unlink()
    task.attribution = replace(task.attribution, max_voxel_passes=1.0)
    with pytest.raises(HTTPException) as raised:
        task(request)
    assert raised.value.status_code == 422 and "integrated_gradients: 32 forward + 32 backward" in raised.value.detail


def test_bad_request_is_an_http_422(unet_bundle, studies_dir):
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam"])
    with pytest.raises(HTTPException) as raised:
        task({"image": str(studies_dir / "case_000.nii.gz"), "class": "tumour"})
    assert raised.value.status_code == 422 and "unknown class 'tumour'" in raised.value.detail


def test_construction_errors(unet_bundle, tmp_path):
    with pytest.raises(ValueError, match="methods must be a non-empty list of method names"):
        BundleExplainTask(str(unet_bundle), {}, methods=["gradcamm"])
    with pytest.raises(ValueError, match=r"result_volume must be one of \['bins', 'segments', 'heatmap'\]"):
        BundleExplainTask(str(unet_bundle), {}, result_volume="mesh")
    segments_first = BundleExplainTask(str(unet_bundle), {}, result_volume="segments").info()
    assert segments_first["config"]["result_volume"] == ["segments", "bins", "heatmap"]
    bundle = tmp_path / "no_layers"
    shutil.copytree(unet_bundle, bundle)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    del metadata["cam_target_layers"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (bundle / "configs" / "explain.json").unlink()  # it names a layer too (see the next test)
    with pytest.raises(ValueError, match="no target layers; pass target_layers"):
        BundleExplainTask(str(bundle), {})
    assert BundleExplainTask(str(bundle), {}, target_layers=["model.1.submodule.2"]).target_layers == (
        "model.1.submodule.2",
    )


def test_defaults_are_what_the_bundles_explain_config_recommends(unet_bundle, tmp_path):
    """The demo segmenter's explain.json (layer model.1.submodule, pixel set "image", score "probability") gives the
    request defaults; a bundle without one offers the plain defaults in their usual order."""
    settings = json.loads((unet_bundle / "configs" / "explain.json").read_text())
    task = BundleExplainTask(str(unet_bundle), {})
    config = task.info()["config"]
    assert config["method"][0] == settings["xai_methods"][0]
    assert config["target_layer"][0] == settings["xai_target_layer"] == "model.1.submodule"
    assert config["target_layer"][1:] == list(
        json.loads((unet_bundle / "configs" / "metadata.json").read_text())["cam_target_layers"]
    )
    assert config["pixel_set"] == ["image", "pred", "largest_component", "empty", "peak"]
    assert config["score"] == ["probability", "logit"]
    plain = tmp_path / "plain"
    shutil.copytree(unet_bundle, plain)
    (plain / "configs" / "explain.json").unlink()
    config = BundleExplainTask(str(plain), {}).info()["config"]
    assert config["pixel_set"] == ["pred", "largest_component", "image", "empty", "peak"]
    assert config["score"] == ["logit", "probability"]
    assert "model.1.submodule" not in config["target_layer"]
