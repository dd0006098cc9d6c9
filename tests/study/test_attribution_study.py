"""An input attribution in a study: computed once per batch whatever the layers, its rows stored under every layer
(where each layer's table compares the CAMs with it), its values those of each case explained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monai_xai.bundle import load_trained_bundle
from monai_xai.cams.attributions import explainer as attribution_explainer
from monai_xai.explanation import explain
from monai_xai.metrics import heat_diff, pointing_game
from monai_xai.sanity.cases import load_case
from monai_xai.study import run_study, study_cases
from tests.helpers.studies import DEMO_STUDY, small_study, stored

MID, LAST = "features.denseblock1.denselayer2", "class_layers.relu"
ATTRIBUTION = {"steps": 4}


@pytest.fixture(scope="module")
def attribution_study(tmp_path_factory: pytest.TempPathFactory):
    bundles = json.loads(DEMO_STUDY.read_text())["bundles"]
    for bundle in bundles:
        bundle["path"] = str((DEMO_STUDY.parent / bundle["path"]).resolve())
        bundle["attribution"] = ATTRIBUTION
    spec = small_study(
        tmp_path_factory.mktemp("attribution_study"),
        bundles=bundles,
        methods=["gradcam", "integrated_gradients"],
        metrics=["heat_diff", "iou", "pointing_game"],
        metric_args={},
        reliability=False,  # its explanations of noisy copies would join the counted calls
    )
    calls = []
    original = attribution_explainer.AttributionExplainer.__call__

    def counted(self, images, *args, **kwargs):
        calls.append(images.shape[0])
        return original(self, images, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attribution_explainer.AttributionExplainer, "__call__", counted)
        run_study(spec, progress=False)
    return spec, calls


def test_attribution_rows_are_shared_by_the_layers_and_computed_once(attribution_study):
    spec, calls = attribution_study
    scores = stored(spec, "scores")
    classifier = scores[(scores["bundle"] == "densenet-classifier") & (scores["method"] == "integrated_gradients")]
    mid = classifier[classifier["layer"] == MID].drop(columns="layer").reset_index(drop=True)
    last = classifier[classifier["layer"] == LAST].drop(columns="layer").reset_index(drop=True)
    assert len(mid) == 6 * 4  # 6 cases x (3 metrics + seconds)
    assert mid.equals(last)
    sanity = stored(spec, "sanity")
    sanity = sanity[(sanity["bundle"] == "densenet-classifier") & (sanity["method"] == "integrated_gradients")]
    np.testing.assert_array_equal(
        sanity[sanity["layer"] == MID]["spearman"].to_numpy(), sanity[sanity["layer"] == LAST]["spearman"].to_numpy()
    )
    # per bundle: 2 scored batches of 3, 1 validation batch (IoU tuning), the sanity check's trained and randomised
    # network on its 2 cases; never once per layer
    assert sorted(calls) == sorted([3, 3, 2, 2, 2] * 2)


def test_attribution_values_are_each_case_explained_alone(attribution_study):
    spec, _ = attribution_study
    scores = stored(spec, "scores").set_index(["bundle", "layer", "method", "case_id", "metric"])["value"]
    trained = load_trained_bundle(spec.bundles[0].path)
    for case in study_cases(spec.data, spec.output_dir):
        image, label = load_case({"image": case.image, "region": case.region}, trained.preprocessing, "mask")
        image, region = image[None], (label[:1] > 0.5)[None].float()
        maps = explain(trained.network, image, methods=["integrated_gradients"], attribution=ATTRIBUTION).maps
        key = ("densenet-classifier", LAST, "integrated_gradients", case.case_id)
        expected = {
            "heat_diff": heat_diff(maps["integrated_gradients"], region),
            "pointing_game": pointing_game(maps["integrated_gradients"], region, tolerance=3),
        }
        for metric, value in expected.items():
            np.testing.assert_allclose(scores[(*key, metric)], value.item(), rtol=1e-4, atol=1e-6, err_msg=key)
        assert torch.isfinite(maps["integrated_gradients"]).all()
