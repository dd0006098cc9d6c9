"""End to end through a real ``monailabel start_server``: the sample app, REST requests as 3D Slicer sends them.

One server per module (it takes ~15-30 s to start). The segmentation bundle's network is a hand-set 1x1x1 convolution
whose lesion logit rises with intensity (see conftest), so its CAM must be hottest on the (brightest) lesion; the
classification bundle has random weights and is checked for geometry and values only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import requests
import torch
from requests_toolbelt.multipart.decoder import MultipartDecoder

from monai_xai.describe import describe
from monai_xai.label import heat_bins, quantize_heatmap
from tests.helpers.label import CH2, CLASSIFICATION, SEGMENTATION

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def infer(server: str, model: str, image: str | None, params: dict, output: str | None = "image") -> requests.Response:
    """POST /infer/<model>?image=<id>[&output=...] with the params as a multipart form field, like the Slicer client."""
    query = {**({"image": image} if image is not None else {}), **({"output": output} if output else {})}
    return requests.post(
        f"{server}/infer/{model}", params=query, files={"params": (None, json.dumps(params))}, timeout=300
    )


def save_result(response: requests.Response, folder: Path) -> Path:
    assert response.status_code == 200, response.text
    name = re.search(r'filename="?([^";]+)"?', response.headers["content-disposition"]).group(1)
    path = folder / name
    path.write_bytes(response.content)
    return path


def assert_alive(server: str) -> None:
    assert requests.get(f"{server}/info/", timeout=30).status_code == 200


def test_info_lists_explain_models_and_options(server):
    info = requests.get(f"{server}/info/", timeout=30).json()
    assert set(info["models"]) == {
        SEGMENTATION,
        f"{SEGMENTATION}_explain",
        CLASSIFICATION,
        f"{CLASSIFICATION}_explain",
    }
    bin_names = [b.name for b in heat_bins(10)]
    assert info["labels"] == ["lesion", *bin_names]
    segmentation = info["models"][f"{SEGMENTATION}_explain"]
    assert segmentation["type"] == "segmentation"  # listed by Slicer's auto-segmentation selector
    assert segmentation["labels"] == {name: label for label, name in enumerate(bin_names, start=1)}
    config = segmentation["config"]
    assert config["method"] == ["gradcam", "hirescam", "eigencam"]
    assert config["class"] == ["lesion", "background"]
    assert config["pixel_set"] == ["pred", "largest_component", "image", "empty", "peak"]
    assert config["score"] == ["logit", "probability"]
    assert config["target_layer"] == ["conv"]
    assert (config["bins"], config["min_heat"], config["result_volume"]) == (10, 0.1, ["bins", "segments", "heatmap"])
    classification = info["models"][f"{CLASSIFICATION}_explain"]["config"]
    assert classification["class"] == ["predicted", "no lesion", "lesion"]
    assert classification["target_layer"] == ["class_layers.relu", "features.denseblock1.denselayer2"]
    assert "pixel_set" not in classification


@pytest.mark.parametrize("image", ["phantom_lesion", "case_000", "ch2"])
@pytest.mark.parametrize("model", [SEGMENTATION, CLASSIFICATION])
def test_heatmap_lies_on_the_input_grid(server, studies_dir, tmp_path, model, image):
    if image == "ch2" and not CH2.exists():
        pytest.skip(f"{CH2} not found (Debian package mricron-data provides it)")
    response = infer(server, f"{model}_explain", image, {"result_volume": "heatmap", "result_dtype": "uint8"})
    heatmap = nib.load(save_result(response, tmp_path))
    source = nib.load(studies_dir / f"{image}.nii.gz")
    assert heatmap.shape == source.shape[:3]
    np.testing.assert_allclose(heatmap.affine, source.affine, atol=1e-4)  # spacing, direction and origin
    values = np.asarray(heatmap.dataobj)
    assert values.dtype == np.float32  # float whatever result_dtype the client asked for
    assert values.min() >= 0.0 and values.max() <= 1.0
    if model == SEGMENTATION and image != "ch2":
        assert values.max() > 0.5


def test_slicer_request_gives_named_bins_matching_the_heatmap(server, studies_dir, tmp_path):
    """Slicer's request: the model's config with each list's first item, result .nrrd/uint8, multipart answer."""
    info = requests.get(f"{server}/info/", timeout=30).json()
    config = info["models"][f"{SEGMENTATION}_explain"]["config"]
    params = {key: value[0] if isinstance(value, list) else value for key, value in config.items()}
    params.update({"result_extension": ".nrrd", "result_dtype": "uint8"})
    response = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params, output=None)
    assert response.status_code == 200, response.text
    parts = {
        re.search(rb'name="([^"]+)"', part.headers[b"Content-Disposition"]).group(1).decode(): part
        for part in MultipartDecoder.from_response(response).parts
    }
    result = json.loads(parts["params"].text)
    assert result["label_names"] == {b.name: b.label for b in heat_bins(10)}
    assert result["class"] == "lesion" and result["method"] == "gradcam" and result["predicted_voxels"] > 0
    assert [b["color"] for b in result["bins"]] == [list(b.color) for b in heat_bins(10)]
    # in words, in the patient's terms: the map's focus lies on the side of the lesion (from the mask and its affine)
    lesion = nib.load(studies_dir.parent / "masks" / "phantom_lesion.nii.gz")
    lesion_sides = describe(np.asarray(lesion.dataobj, dtype=np.float32), lesion.affine).as_dict()["region_location"]
    assert (
        result["description"].startswith("The map explains lesion. Focus: ")
        and "(patient terms)" in result["description"]
    )
    assert lesion_sides and result["description_fields"]["region_location"] == lesion_sides
    nrrd_path = tmp_path / "bins.nrrd"
    nrrd_path.write_bytes(parts["image"].content)
    labels, header = nrrd.read(str(nrrd_path))

    source = nib.load(studies_dir / "phantom_lesion.nii.gz")
    assert labels.dtype == np.uint8 and labels.shape == source.shape
    # NRRD geometry is LPS: one row of "space directions" per voxel axis.
    np.testing.assert_allclose(header["space directions"], (LPS_FROM_RAS @ source.affine[:3, :3]).T, atol=1e-4)
    np.testing.assert_allclose(header["space origin"], LPS_FROM_RAS @ source.affine[:3, 3], atol=1e-4)

    params.update({"result_volume": "heatmap", "result_extension": ".nii.gz"})
    response = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params)
    heat = np.asarray(nib.load(save_result(response, tmp_path)).dataobj)
    expected = quantize_heatmap(torch.from_numpy(heat), n_bins=10, min_heat=0.1).numpy()
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= set(range(11)) and labels.max() == 10


def test_segments_come_as_a_slicer_segmentation_with_the_bins_names_and_colours(server, studies_dir, tmp_path):
    """result_volume "segments": Slicer's request answered with a .seg.nrrd (the client keeps the server's file name,
    so Slicer loads it as a segmentation), read back with ITK: the bins' label map on the input's grid, each segment
    named and coloured after its bin, the description in the file."""
    import itk

    params = {"result_volume": "segments", "result_extension": ".nrrd", "result_dtype": "uint8"}
    response = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params)
    path = save_result(response, tmp_path)
    assert path.name.endswith(".seg.nrrd")
    segments = itk.imread(str(path))
    source = itk.imread(str(studies_dir / "phantom_lesion.nii.gz"))
    np.testing.assert_allclose(np.asarray(segments.GetOrigin()), np.asarray(source.GetOrigin()), atol=1e-4)
    np.testing.assert_allclose(np.asarray(segments.GetSpacing()), np.asarray(source.GetSpacing()), atol=1e-4)
    np.testing.assert_allclose(
        itk.array_from_matrix(segments.GetDirection()), itk.array_from_matrix(source.GetDirection()), atol=1e-4
    )
    fields = segments.GetMetaDataDictionary()
    for index, heat_bin in enumerate(heat_bins(10)):
        assert fields[f"Segment{index}_Name"] == heat_bin.name
        assert fields[f"Segment{index}_LabelValue"] == str(heat_bin.label)
        color = [float(channel) for channel in fields[f"Segment{index}_Color"].split()]
        np.testing.assert_allclose(color, heat_bin.color, atol=1e-4)
    assert fields["monai_xai_description"].startswith("The map explains lesion.")
    heat_params = {"result_volume": "heatmap", "result_extension": ".nii.gz"}
    heat = np.asarray(
        nib.load(save_result(infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", heat_params), tmp_path)).dataobj
    )
    expected = quantize_heatmap(torch.from_numpy(heat), n_bins=10, min_heat=0.1).numpy()
    np.testing.assert_array_equal(itk.array_from_image(segments).transpose(), expected)  # ITK arrays are z, y, x


@pytest.mark.parametrize(
    "pixel_set, score", [("pred", "logit"), ("largest_component", "logit"), ("image", "probability")]
)
def test_hottest_region_lies_on_the_lesion(server, studies_dir, tmp_path, pixel_set, score):
    params = {"result_volume": "heatmap", "pixel_set": pixel_set, "score": score}
    response = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params)
    heat = np.asarray(nib.load(save_result(response, tmp_path)).dataobj)
    lesion = np.asarray(nib.load(studies_dir.parent / "masks" / "phantom_lesion.nii.gz").dataobj).astype(bool)
    assert lesion[np.unravel_index(np.argmax(heat), heat.shape)]
    hottest = heat >= 0.9
    assert hottest.sum() > 0
    assert (hottest & lesion).sum() / hottest.sum() > 0.8
    assert heat[lesion].mean() > 5 * heat[~lesion].mean()


def test_score_reaches_the_explainer(server, tmp_path):
    """The whole image's class-1 logit sum and its expected volume (probability) are different targets. At this
    network's only layer (the logits z) HiResCAM gives z_1 for the logit and p (1 - p) z_1 for the probability: the
    maps differ, and the result JSON says which one was explained. (GradCAM would not tell them apart here: its
    spatially averaged weights make both maps proportional to z_1.)"""
    heat = {}
    for score in ("logit", "probability"):
        params = {"result_volume": "heatmap", "pixel_set": "image", "score": score, "method": "hirescam"}
        response = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params)
        (tmp_path / score).mkdir()
        heat[score] = np.asarray(nib.load(save_result(response, tmp_path / score)).dataobj)
        summary = infer(server, f"{SEGMENTATION}_explain", "phantom_lesion", params, "json").json()
        assert (summary["pixel_set"], summary["score"]) == ("image", score) and "warning" not in summary
    assert np.abs(heat["logit"] - heat["probability"]).max() > 0.05


def test_classification_reports_the_prediction(server):
    response = infer(server, f"{CLASSIFICATION}_explain", "case_000", {"class": "lesion", "method": "hirescam"}, "json")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["class"], result["class_index"], result["method"]) == ("lesion", 1, "hirescam")
    assert result["score"] == "logit"
    assert set(result["probabilities"]) == {"no lesion", "lesion"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["predicted_class"] == max(result["probabilities"], key=result["probabilities"].get)
    confidence = 100 * result["probabilities"][result["predicted_class"]]
    assert result["description"].startswith(
        f"Prediction: {result['predicted_class']} ({confidence:.2f}% confidence, uncalibrated)."
    )
    assert result["description_fields"]["predicted"] == result["predicted_class"]
    assert result["description_fields"]["text"] == result["description"]


@pytest.mark.parametrize(
    "model, image, params, status, message",
    [
        (f"{SEGMENTATION}_explain", "phantom_lesion", {"method": "gradcamm"}, 422, "unknown method 'gradcamm'"),
        (f"{SEGMENTATION}_explain", "phantom_lesion", {"method": "scorecam"}, 422, "unknown method 'scorecam'"),
        (f"{CLASSIFICATION}_explain", "case_000", {"class": 5}, 422, "class 5 is out of range"),
        (f"{SEGMENTATION}_explain", "phantom_lesion", {"bins": 300}, 422, r"bins must be an int in \[1, 255\]"),
        (f"{SEGMENTATION}_explain", "no_such_case", {}, 404, "not found"),
        (f"{SEGMENTATION}_explain", None, {}, 422, "no image: give the 'image' query parameter"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(server, model, image, params, status, message):
    response = infer(server, model, image, params)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"])
    assert_alive(server)


def test_plain_bundle_segmentation_still_served(server, tmp_path, studies_dir):
    """The sample app also serves the bundle's own inference (lesion = intensity above the threshold)."""
    response = infer(server, SEGMENTATION, "phantom_lesion", {"result_extension": ".nii.gz"})
    segmentation = np.asarray(nib.load(save_result(response, tmp_path)).dataobj)
    lesion = np.asarray(nib.load(studies_dir.parent / "masks" / "phantom_lesion.nii.gz").dataobj).astype(bool)
    assert segmentation.shape == lesion.shape
    assert (segmentation[lesion] > 0).mean() > 0.5
