"""The recorder and writers on a real evaluator: NIfTI maps with the input's affine, overlays, descriptions in
words, per-case and summary tables, and the records they come from."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from torch import nn

from monai_xai.handlers import explanation_writers
from monai_xai.handlers.recorder import EXPLAINED_REGION, GROUND_TRUTH_REGION, class_probabilities
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import SECONDS, MetricKey
from monai_xai.networks import scale_logits
from tests.helpers.engines import affine_for, case_dataset, make_evaluator
from tests.helpers.nets import TinyResNet, tiny_unet3d
from tests.helpers.runs import METHODS


def test_writer_files_and_tables(classification_run):
    out, state = classification_run["out"], classification_run["evaluator"].state
    for case in range(3):
        for method in METHODS:
            nifti = nib.load(str(out / f"c{case}" / f"c{case}_{method}.nii.gz"))
            np.testing.assert_allclose(nifti.affine, affine_for(case, (0.5, 0.5)).numpy(), atol=1e-6)
            saved = np.asarray(nifti.dataobj)
            expected = classification_run["outputs"][f"saliency_{method}"][case, 0].numpy()
            np.testing.assert_allclose(saved.squeeze(), expected, atol=1e-6)
            assert (out / f"c{case}" / f"c{case}_{method}.png").stat().st_size > 0
    with open(out / "cases.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3 * len(METHODS)
    for method in METHODS:
        method_rows = [row for row in rows if row["method"] == method]
        assert [row["case"] for row in method_rows] == ["c0", "c1", "c2"]
        heat = [float(row["heat_diff"]) for row in method_rows]
        np.testing.assert_allclose(heat, state.metric_details[f"heat_diff_{method}"].reshape(-1).numpy(), atol=1e-6)
    with open(out / "summary.csv") as stream:
        summary = {(r["metric"], r["method"]): float(r["mean"]) for r in csv.DictReader(stream)}
    assert summary[("ehr_auc", "gradcam")] == pytest.approx(state.metrics["ehr_auc_gradcam"], abs=1e-6)
    assert "## road_morf" in (out / "summary.md").read_text()
    assert (out / "metrics.png").exists() and (out / "road_morf_morf_curve.png").exists()


def _descriptions(out) -> list[dict[str, str]]:
    with open(out / "descriptions.csv") as stream:
        return list(csv.DictReader(stream))


def test_writer_describes_every_case_and_method(classification_run):
    """One descriptions.csv row per case x method: the prediction from the softmax of the logits (the fixture's
    evaluator has no postprocessing), the largest hot region's words; a Markdown file per case with each text."""
    out = classification_run["out"]
    with torch.no_grad():
        probabilities = classification_run["net"](classification_run["images"]).softmax(dim=1)
    rows = _descriptions(out)
    assert [(row["case"], row["method"]) for row in rows] == [(f"c{c}", m) for c in range(3) for m in METHODS]
    for row in rows:
        case = int(row["case"][1:])
        predicted = int(probabilities[case].argmax())
        assert row["text"].startswith(f"Prediction: {predicted} (") and "uncalibrated" in row["text"]
        assert float(row["confidence"]) == pytest.approx(float(probabilities[case, predicted]), abs=1e-6)
        assert row["explained"] == str(int(classification_run["outputs"]["xai_class"][case]))
        assert (
            row["region_size_word"] in ("small", "medium", "large") and row["region_shape"] and row["flat"] == "False"
        )
        assert row["region_location"] in row["text"].replace("central", "")
        assert "Focus: " in row["text"] and "mm²" in row["text"]  # the image's affine gives millimetres
    for case in range(3):
        markdown = (out / f"c{case}" / f"c{case}_description.md").read_text()
        assert markdown.startswith(f"# c{case}\n")
        for row in (row for row in rows if row["case"] == f"c{case}"):
            assert f"## {row['method']}\n\n{row['text']}\n" in markdown


class _ConstantLogits(nn.Module):
    """Logits that ignore the image: every gradient CAM of ``features`` is 0, a flat map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(0 * self.features(x).mean(dim=(2, 3)))


def test_flat_map_of_a_calibrated_network_is_described_without_error(tmp_path):
    network = scale_logits(_ConstantLogits().eval(), 2.0)
    inferer = XAIInferer(SimpleInferer(), "features", ["gradcam"])
    writers = explanation_writers(tmp_path, "gradcam", class_names=["a", "b", "c"])
    make_evaluator(network, case_dataset(torch.randn(1, 1, 16, 16)), inferer, [inferer, *writers]).run()
    (row,) = _descriptions(tmp_path)
    assert row["text"].startswith("Prediction: ") and "% confidence, calibrated)." in row["text"]
    assert row["text"].endswith("No focus: the map is flat.") and row["flat"] == "True"
    assert row["predicted"] in ("a", "b", "c") and row["calibrated"] == "True" and row["region_location"] == ""
    assert "No focus: the map is flat." in (tmp_path / "c0" / "c0_description.md").read_text()


def test_known_sanity_results_become_trust_notes(tmp_path):
    """xai_sanity: a method known to fail the randomisation check says so in its text; one not listed gets no note."""
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam", "eigencam"])
    writers = explanation_writers(tmp_path, ["gradcam", "eigencam"], sanity={"eigencam": False})
    make_evaluator(network, case_dataset(torch.randn(1, 1, 16, 16)), inferer, [inferer, *writers]).run()
    rows = {row["method"]: row for row in _descriptions(tmp_path)}
    assert "Caution: the eigencam map failed the randomisation check" in rows["eigencam"]["text"]
    assert rows["eigencam"]["sanity_passed"] == "False"
    assert "randomisation" not in rows["gradcam"]["text"] and rows["gradcam"]["sanity_passed"] == ""


def test_a_description_failure_keeps_the_maps(tmp_path):
    """Two class names for three classes: describe() refuses; the run warns naming the case and method, and writes
    the maps, the overlay and an empty text."""
    network = _ConstantLogits().eval()
    inferer = XAIInferer(SimpleInferer(), "features", ["gradcam"])
    writers = explanation_writers(tmp_path, "gradcam", class_names=["a", "b"])
    with pytest.warns(UserWarning, match="case c0: the gradcam map could not be described.*2 class names"):
        make_evaluator(network, case_dataset(torch.randn(1, 1, 16, 16)), inferer, [inferer, *writers]).run()
    assert (tmp_path / "c0" / "c0_gradcam.nii.gz").is_file() and (tmp_path / "c0" / "c0_gradcam.png").is_file()
    assert [(row["case"], row["method"], row["text"]) for row in _descriptions(tmp_path)] == [("c0", "gradcam", "")]
    assert "No description" in (tmp_path / "c0" / "c0_description.md").read_text()


def test_class_probabilities_keep_a_distribution_and_softmax_logits():
    distribution = torch.tensor([0.2, 0.5, 0.3])
    torch.testing.assert_close(class_probabilities(distribution), distribution.double())
    logits = torch.tensor([2.0, -1.0, 0.5])
    torch.testing.assert_close(class_probabilities(logits), logits.double().softmax(dim=0))
    assert class_probabilities(torch.tensor([0.7])) is None


@pytest.mark.parametrize("pixel_set", ["pred", "image"])
def test_writer_3d_segmentation_overlay(tmp_path, pixel_set):
    network = tiny_unet3d().eval()
    images = torch.randn(1, 1, 16, 16, 16)
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1, pixel_set=pixel_set)
    writers = explanation_writers(tmp_path, "gradcam", class_names=["background", "lesion"])
    evaluator = make_evaluator(network, case_dataset(images), inferer, [inferer, *writers])
    evaluator.run()
    nifti = nib.load(str(tmp_path / "c0" / "c0_gradcam.nii.gz"))
    assert nifti.shape == (16, 16, 16)
    np.testing.assert_allclose(nifti.header.get_zooms(), (0.5, 0.5, 0.5))
    assert (tmp_path / "c0" / "c0_gradcam.png").stat().st_size > 0
    # a segmenter's description: no prediction sentence, the explained class by name, the pixel set as a mask
    # (not when it is every voxel)
    (row,) = _descriptions(tmp_path)
    assert row["text"].startswith("The map explains lesion. ") and row["predicted"] == "" and row["explained"] == "1"
    assert "(patient terms)" in row["text"]
    covers = f"covers_{EXPLAINED_REGION}" in row and "% of the explained region" in row["text"]
    assert covers == (pixel_set == "pred")


def test_descriptions_say_how_much_of_the_ground_truth_the_hot_area_covers(tmp_path):
    """region_key / region_value as the XAI metrics read them: the label's region of the explained class, compared
    with the hot area of the written map (at least half its range) by hand; a class label that is not a map (a
    classifier's) is no region and changes nothing."""
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    labels = torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)
    labels[0, :, 4:12, 4:12, 4:12] = 1
    labels[0, :, 0:4, 0:4, 0:4] = 2  # another class: not the region of class 1
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1, pixel_set="image")
    writers = explanation_writers(
        tmp_path, "gradcam", class_names=["background", "lesion", "other"], region_key="label"
    )
    make_evaluator(network, case_dataset(images, label=labels), inferer, [inferer, *writers]).run()
    rows = {row["case"]: row for row in _descriptions(tmp_path)}
    heat = np.asarray(nib.load(str(tmp_path / "c0" / "c0_gradcam.nii.gz")).dataobj)
    hot = heat >= heat.min() + 0.5 * (heat.max() - heat.min())
    truth = labels[0, 0].numpy() == 1
    covered = (hot & truth).sum() / truth.sum()
    assert float(rows["c0"][f"covers_{GROUND_TRUTH_REGION}"]) == pytest.approx(covered)
    assert float(rows["c0"][f"inside_{GROUND_TRUTH_REGION}"]) == pytest.approx((hot & truth).sum() / hot.sum())
    assert f"It covers {100 * covered:.0f}% of the ground-truth region" in rows["c0"]["text"]
    assert rows["c1"][f"covers_{GROUND_TRUTH_REGION}"] == "nan"  # an empty region: no sentence
    assert "ground-truth" not in rows["c1"]["text"]

    classifier = TinyResNet(spatial_dims=2, num_classes=3).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    writers = explanation_writers(tmp_path / "cls", "gradcam", region_key="label")
    data = case_dataset(torch.randn(1, 1, 16, 16), label=torch.tensor([2]))
    make_evaluator(classifier, data, inferer, [inferer, *writers]).run()
    (row,) = _descriptions(tmp_path / "cls")
    assert f"covers_{GROUND_TRUTH_REGION}" not in row and row["text"].startswith("Prediction: ")


def test_records_name_every_value_by_its_metric_and_method(classification_run):
    """The run's records (what every table, page and caller reads) hold each case's values under the metric and
    method the handlers registered, not a name parsed back by its suffix."""
    state = classification_run["evaluator"].state
    keys = state.xai_metric_keys
    assert keys["heat_diff_gradcam"] == MetricKey("heat_diff", "gradcam", "heat_diff_gradcam")
    assert keys["xai_seconds_gradcam"] == MetricKey(SECONDS, "gradcam", "xai_seconds_gradcam")
    records = state.xai_results
    assert records.complete and [case.name for case in records.cases] == ["c0", "c1", "c2"]
    for method in METHODS:
        column = state.metric_details[f"heat_diff_{method}"].reshape(-1).tolist()
        assert [case.methods[method].metrics["heat_diff"] for case in records.cases] == pytest.approx(column)
        assert records.means()[method]["ehr_auc"] == pytest.approx(state.metrics[f"ehr_auc_{method}"], abs=1e-6)
        times = [case.methods[method].seconds for case in records.cases]
        assert all(time > 0 for time in times)
        assert records.means()[method][SECONDS] == pytest.approx(sum(times) / 3)
    assert records.cases[0].methods[METHODS[0]].files["nifti"].name == f"c0_{METHODS[0]}.nii.gz"
