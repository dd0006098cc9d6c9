"""Several classes of a segmenter at once through a real evaluator: no class given (every foreground class), a
``"1+2"`` config string with the label as pixel set, the metrics scoring the same multi-class target, and one error
for every choice the inferer cannot make."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.nets import UNet

from monai_xai.cams import CAMExplainer, ClassSet
from monai_xai.handlers import XAIMetricHandler, explanation_writers
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import NoisyLinearImputer, heat_diff
from monai_xai.metrics.road import road
from tests.helpers.engines import case_dataset, collect_outputs, make_evaluator, stack_outputs
from tests.helpers.nets import tiny_unet3d

LAYER = "model.1.submodule"


def test_no_class_for_a_segmenter_explains_its_foreground(caplog):
    """A two-class segmenter's foreground is class 1: the maps are those of class 1 over its predicted region."""
    torch.manual_seed(0)
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    inferer = XAIInferer(SimpleInferer(), LAYER, ["gradcam"])
    with caplog.at_level(logging.INFO, logger="monai_xai.explanation.step"):
        outputs = collect_outputs(make_evaluator(network, case_dataset(images), inferer, [inferer]))
    assert "every foreground class" in caplog.text
    expected = CAMExplainer(network, LAYER, ["gradcam"])(images, class_idx=1, pixel_set="pred")["gradcam"]
    for index, case in enumerate(outputs):
        assert case["xai_class"].tolist() == [1]
        torch.testing.assert_close(case["saliency_gradcam"].as_tensor(), expected[index], atol=1e-5, rtol=1e-4)


def test_two_classes_over_their_labels_are_explained_and_scored_together(tmp_path):
    torch.manual_seed(1)
    network = UNet(3, 1, 4, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    images = torch.randn(2, 1, 12, 12, 12)
    labels = torch.zeros(2, 1, 12, 12, 12)
    labels[:, :, 1:5, 1:5, 1:5] = 1
    labels[:, :, 6:11, 6:11, 6:11] = 2
    labels[1, :, 0:3, 8:12, 0:3] = 3  # a class that is not explained
    inferer = XAIInferer(SimpleInferer(), LAYER, ["hirescam"], class_idx="1+2", pixel_set_key="label")
    imputer = NoisyLinearImputer(0.0)
    metric_args = {"road_morf": {"percentiles": [50], "imputer": imputer}}
    metrics = XAIMetricHandler(
        ["road_morf", "heat_diff"], ["hirescam"], network=network, metric_args=metric_args, region_value="class"
    )
    writers = explanation_writers(tmp_path / "xai", ["hirescam"], png=False, region_key="label")
    evaluator = make_evaluator(network, case_dataset(images, label=labels), inferer, [inferer, metrics, *writers])
    outputs = collect_outputs(evaluator)
    run = stack_outputs(outputs, ("saliency_hirescam", "xai_class", "xai_pixel_set"))
    sets = torch.cat([labels == 1, labels == 2], dim=1).float()
    assert run["xai_class"].tolist() == [[1, 2], [1, 2]]
    torch.testing.assert_close(run["xai_pixel_set"], sets)
    expected = CAMExplainer(network, LAYER, ["hirescam"])(images, ClassSet((1, 2)), sets)["hirescam"]
    torch.testing.assert_close(run["saliency_hirescam"], expected, atol=1e-5, rtol=1e-4)
    # ROAD scores the summed target the maps explain (oracle: road() given the classes and sets directly)
    morf = road(network, images, expected, torch.tensor([[1, 2]] * 2), [50], pixel_set=sets, imputer=imputer)
    details = evaluator.state.metric_details
    torch.testing.assert_close(details["road_morf_hirescam"][:, -1], morf.mean_score_change, atol=1e-4, rtol=1e-5)
    # the ground truth of "the class" is the union of the explained classes' regions (class 3 left out)
    union = ((labels == 1) | (labels == 2)).float()
    torch.testing.assert_close(details["heat_diff_hirescam"].reshape(-1), heat_diff(expected, union))
    assert (heat_diff(expected, (labels > 0).float()) - heat_diff(expected, union)).abs()[1] > 1e-4
    # the writer names the classes as the config does and measures the joined sets and regions
    with open(tmp_path / "xai" / "cases.csv", newline="") as stream:
        assert [row["class"] for row in csv.DictReader(stream)] == ["1+2", "1+2"]
    with open(tmp_path / "xai" / "descriptions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row, case_map in zip(rows, expected):
        hot = case_map[0] >= 0.5 * case_map.max()  # the description's hot area: at least half the peak
        in_union = (hot & union[0, 0].bool()).sum() / union[0, 0].sum()
        assert 0 < float(in_union) < 1
        assert float(row["covers_ground-truth region"]) == pytest.approx(float(in_union), abs=0.02)


class TupleNet(torch.nn.Module):
    """A network returning two tensors: neither a layer nor a class can be chosen for it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y


def test_every_choice_that_cannot_be_made_is_named_in_one_error():
    inferer = XAIInferer(SimpleInferer(), "", ["gradcam"])
    with pytest.raises(ValueError, match=r"set these config ids(.|\n)*- xai_class: (.|\n)*- xai_target_layer: "):
        inferer(torch.randn(1, 1, 8, 8), TupleNet().eval())
    with pytest.raises(ValueError, match="'foreground'"):
        XAIInferer(SimpleInferer(), "", ["gradcam"], class_idx="kidney")
