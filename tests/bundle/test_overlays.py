"""configs/explain.json, xai_metrics.json and mlflow.json applied to unedited model-zoo-layout bundles.

End to end through ``python -m monai.bundle run`` (subprocess): a 3D segmentation bundle with a sliding-window inferer
and a 2D classification bundle; the missing-id checks run in-process through MONAI's ``ConfigWorkflow``.
"""

from __future__ import annotations

import csv
import json
import logging

import nibabel as nib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from monai_xai.bundle import ExplainWorkflow, check_bundle_ids, explain_bundle
from tests.helpers.bundles import make_classification_bundle, make_segmentation_bundle
from tests.helpers.engines import CONFIGS, run_bundle

pytestmark = pytest.mark.slow


EXPLAIN, METRICS, MLFLOW = CONFIGS / "explain.json", CONFIGS / "xai_metrics.json", CONFIGS / "mlflow.json"


def summary_means(path) -> dict[tuple[str, str], float]:
    with open(path) as stream:
        return {(row["metric"], row["method"]): float(row["mean"]) for row in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory):
    bundle = make_segmentation_bundle(tmp_path_factory.mktemp("seg") / "bundle")
    finished = run_bundle(
        [bundle / "configs" / "inference.json", EXPLAIN, METRICS],
        "--xai_methods", "['gradcam','hirescam']",
        "--xai_target_layer", "model.1.submodule",
        "--xai_class", "1",
        "--xai_mask_key", "label",
        cwd=bundle,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    return bundle


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    bundle = make_classification_bundle(tmp_path_factory.mktemp("cls") / "bundle")
    finished = run_bundle(
        [bundle / "configs" / "inference.json", EXPLAIN, METRICS, MLFLOW],
        "--xai_methods", "['gradcam','layercam']",
        # a layer per method, as a dict on the command line
        "--xai_target_layer", "{'gradcam': 'features.denseblock2', 'layercam': 'features.denseblock1'}",
        "--xai_metrics", "['ehr_auc','pointing_game','road_combined','deletion','insertion']",
        "--xai_metric_args#road_combined#percentiles", "[30,70]",
        # the imputation's settings are one object, built from the config
        "--xai_metric_args#road_combined#imputer",
        "{'_target_': 'monai_xai.metrics.NoisyLinearImputer', 'noise': 0.02}",
        "--xai_region_key", "mask",
        "--xai_region_value", "None",
        "--xai_run_name", "bundle_run",
        cwd=bundle,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    return bundle


def test_segmentation_bundle_writes_maps_in_the_input_space(segmentation_run):
    out = segmentation_run / "eval" / "xai"
    for case in ("img0", "img1"):
        source = nib.load(str(segmentation_run / "data" / f"{case}.nii.gz"))
        for method in ("gradcam", "hirescam"):
            saved = nib.load(str(out / case / f"{case}_{method}.nii.gz"))
            assert saved.shape == source.shape
            np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
            values = np.asarray(saved.dataobj)
            assert values.min() >= 0 and values.max() <= 1 and values.max() > 0
            assert (out / case / f"{case}_{method}.png").exists()
    means = summary_means(out / "summary.csv")
    for method in ("gradcam", "hirescam"):
        for metric in ("ehr_auc", "heat_diff", "pointing_game", "seconds"):
            assert np.isfinite(means[(metric, method)]), (metric, method)
    with open(out / "cases.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert {(row["case"], row["method"], row["class"]) for row in rows} == {
        (case, method, "1") for case in ("img0", "img1") for method in ("gradcam", "hirescam")
    }
    # MONAI's MetricsSaver wrote the per-case details under the same names, in their own folder
    assert (out / "per_metric" / "ehr_auc_hirescam_raw.csv").exists() and not list(out.glob("*_raw.csv"))


def test_classification_bundle_logs_to_mlflow(classification_run):
    out = classification_run / "eval" / "xai"
    means = summary_means(out / "summary.csv")
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("monai_xai")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'bundle_run'")
    for method in ("gradcam", "layercam"):
        for metric in ("ehr_auc", "pointing_game", "road_combined", "deletion", "insertion"):
            assert run.data.metrics[f"{metric}_{method}"] == pytest.approx(means[(metric, method)], abs=1e-6)
        steps = [p.step for p in client.get_metric_history(run.info.run_id, f"road_combined_{method}_lerf")]
        assert sorted(steps) == [30, 70]
    assert json.loads(run.data.params["xai_methods"].replace("'", '"')) == ["gradcam", "layercam"]
    assert run.data.params["xai_target_layer"] == str(
        {"gradcam": "features.denseblock2", "layercam": "features.denseblock1"}
    )
    assert "30, 70" in run.data.params["xai_metric_args"]
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "xai")}
    assert {"xai/summary.csv", "xai/summary.md", "xai/road_combined_morf_curve.png", "xai/img0"} <= artifacts


@pytest.mark.parametrize(
    "remove, message",
    [
        (
            "inferer",
            "missing or wired otherwise:\n- `inferer` is missing: the bundle's inferer, e.g. --inferer",
        ),
        ("evaluator", "- `evaluator` is not a component"),
        ("preprocessing", "- `preprocessing` is missing: the bundle's preprocessing Compose, whose inverse"),
        ("handlers", "evaluator#val_handlers` must be '@handlers'"),
    ],
)
def test_missing_bundle_id_is_named_with_how_to_set_it(tmp_path, remove, message):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=1)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    del config[remove]
    if remove == "handlers":
        config["evaluator"]["val_handlers"] = None
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    workflow = ExplainWorkflow(
        config_file=[str(bundle / "configs" / "inference.json"), str(EXPLAIN)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        xai_target_layer="features.denseblock2",
    )
    with pytest.raises(Exception) as caught:  # MONAI wraps the check's ValueError when instantiating it
        workflow.initialize()
    chain, error = [], caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, ValueError) and message in str(e) for e in chain), [str(e) for e in chain]


def test_every_missing_bundle_id_is_named_in_one_error(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=1)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    for config_id in ("inferer", "dataset", "preprocessing"):
        del config[config_id]
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    workflow = ExplainWorkflow(
        config_file=[str(bundle / "configs" / "inference.json"), str(EXPLAIN)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
    )
    with pytest.raises(ValueError) as caught:
        check_bundle_ids(workflow.parser, workflow.bundle_config)
    listed = [line for line in str(caught.value).splitlines() if line.startswith("- ")]
    assert [line.split("`")[1] for line in listed] == ["inferer", "dataset", "preprocessing"]
    assert "--xai_maps_grid preprocessed --xai_preprocessing '$None'" in listed[2]


def test_bundle_without_a_layer_explains_the_chosen_one(tmp_path, caplog):
    """No xai_target_layer: the inferer chooses MONAI DenseNet's `features` (the last layer before global pooling)."""
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=2)
    with caplog.at_level(logging.INFO, logger="monai_xai.explanation.step"):
        explain_bundle(bundle, overlays=("explain",), xai_methods=["gradcam"])
    assert any(message.startswith("xai: explaining layer 'features' (classifier:") for message in caplog.messages)
    for case in ("img0", "img1"):
        saved = nib.load(str(bundle / "eval" / "xai" / case / f"{case}_gradcam.nii.gz"))
        values = np.asarray(saved.dataobj)
        assert values.shape == (32, 32) and values.max() > values.min()
