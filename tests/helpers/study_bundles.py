"""Checks that every bundle of the published 2D studies passes, each on a tiny copy of its public data set in the
published layout: model-zoo layout and metadata, then one short training, the calibrated evaluation, inference, an
explanation run and the bundle's study file, all through ``monai.bundle.run`` (in process) as a user would."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser, run, verify_metadata, verify_net_in_out

from monai_xai.bundle import explain_bundle
from monai_xai.cams import resolve_layers
from monai_xai.networks import BACKBONE_CAM_LAYERS
from monai_xai.study import load_study, run_study, study_tables
from tests.helpers.studies import REPO

BUNDLES_DIR = REPO / "bundles"
SCHEMA = BUNDLES_DIR / "schema" / "bundle_metadata_schema.json"
# small and fast: what the tests train; the bundles' defaults (resnet50, 224^2) are checked for shapes only
TINY = {"backbone": "resnet18", "image_size": [64, 64], "batch_size": 8, "num_workers": 0, "pretrained": False}


@dataclass(frozen=True)
class StudyBundle:
    """A study bundle under test.

    Attributes:
        name: folder under ``bundles/``.
        class_names: its classes in label order.
        write_data: ``write_data(root) -> dataset_dir``, a tiny copy of the data set in its published layout.
        study_file: its study file under ``configs/studies/``.
        overrides: config ids every run of the test sets besides :data:`TINY` (e.g. ``{"dataset_name": "isic2019"}``).
        explain_metrics: the XAI metrics of the explanation run (cheap ones that the data allow).
    """

    name: str
    class_names: tuple[str, ...]
    write_data: Callable[[Path], Path]
    study_file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    explain_metrics: tuple[str, ...] = ("road_combined", "confidence_increase")


def bundle_configs(bundle: Path, *names: str) -> list[str]:
    """Paths of the named files of ``bundle/configs``, in order (a ``config_file`` list)."""
    return [str(bundle / "configs" / name) for name in names]


def run_bundle(bundle: Path, names: list[str], **override: Any) -> None:
    """``python -m monai.bundle run`` in process with the bundle's configs ``names``, metadata and logging."""
    run(
        config_file=bundle_configs(bundle, *names),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        **override,
    )


def check_model_zoo_layout(bundle: Path) -> None:
    """The model-zoo files, the metadata against the local schema, and ``network_def``'s shapes per the metadata."""
    for name in ("metadata.json", "train.json", "evaluate.json", "inference.json", "explain.json", "logging.conf"):
        assert (bundle / "configs" / name).is_file(), name
    assert (bundle / "docs" / "README.md").is_file() and "Apache License" in (bundle / "LICENSE").read_text()
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
    )


def check_layout_metadata_and_default_network(spec: StudyBundle) -> None:
    """Model-zoo files, metadata against the local schema, the default network's shapes and CAM layer."""
    bundle = BUNDLES_DIR / spec.name
    check_model_zoo_layout(bundle)
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json", "explain.json"))
    network = parser.get_parsed_content("network_def")
    assert network(torch.zeros(1, 3, 224, 224)).shape == (1, len(spec.class_names))
    resolve_layers(network, parser.get_parsed_content("xai_target_layer"))
    assert parser.get_parsed_content("xai_target_layer") == BACKBONE_CAM_LAYERS[parser["backbone"]]
    train = json.loads((bundle / "configs" / "train.json").read_text())
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in ("network_def", "dataset_dir", "backbone", "image_size", "ckpt_dir", "datalist"):
        assert train[key] == inference[key], key


def check_train_evaluate_infer_explain_and_study(spec: StudyBundle, tmp_path: Path) -> None:
    """One short training, the calibrated evaluation, inference, an explanation run and the bundle's study."""
    data = spec.write_data(tmp_path / "data")
    bundle = shutil.copytree(BUNDLES_DIR / spec.name, tmp_path / spec.name)  # bundle_root: weights land here
    common = {"bundle_root": str(bundle), "dataset_dir": str(data), **TINY, **spec.overrides}

    tracking_uri = f"sqlite:///{tmp_path / 'training_mlruns.db'}"
    run_bundle(bundle, ["train.json"], max_epochs=2, tracking="mlflow", tracking_uri=tracking_uri, **common)
    weights = bundle / "models" / "resnet18" / "model.pt"
    assert weights.is_file()
    # MONAI's own MLflow tracking of the training run (`--tracking mlflow`): both epochs' validation accuracies
    client = MlflowClient(tracking_uri)
    (run_info,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(client.get_metric_history(run_info.info.run_id, "val_accuracy")) == 2

    run_bundle(bundle, ["train.json", "evaluate.json"], **common)
    report = json.loads((bundle / "eval" / "resnet18" / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "auc_macro", "ece_uncalibrated", "ece_calibrated", "temperature"} <= set(
        report
    )
    assert [row["class"] for row in report["per_class"]] == list(spec.class_names)
    temperature = json.loads((bundle / "models" / "resnet18" / "temperature.json").read_text())["temperature"]
    assert temperature == pytest.approx(report["temperature"]) and temperature > 0
    assert (bundle / "eval" / "resnet18" / "reliability_diagram.png").stat().st_size > 10_000

    run_bundle(bundle, ["inference.json"], **common)
    rows = list(csv.reader((bundle / "eval" / "resnet18" / "predictions.csv").read_text().splitlines()))
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json"))
    parser.update(common)
    test_images = [entry["image"] for entry in parser.get_parsed_content("datalist")["test"]]
    assert sorted(row[0] for row in rows) == sorted(test_images)
    probabilities = np.array([[float(v) for v in row[1:]] for row in rows])
    assert probabilities.shape == (len(test_images), len(spec.class_names))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the calibrated probabilities, recomputed by hand from the trained network's raw logits and the temperature
    raw = parser.get_parsed_content("network_def")
    raw.load_state_dict(torch.load(weights, weights_only=True))
    first_case = parser.get_parsed_content("preprocessing")(parser.get_parsed_content("datalist")["test"][0])
    with torch.no_grad():
        expected = torch.softmax(raw.eval()(first_case["image"][None].as_tensor()) / temperature, dim=1)[0]
    (first_row,) = [row for row in probabilities[[row[0] == test_images[0] for row in rows]]]
    np.testing.assert_allclose(first_row, expected.numpy(), atol=1e-5)

    explain_bundle(
        bundle,
        xai_methods=["gradcampp"],
        xai_metrics=list(spec.explain_metrics),
        xai_metric_args={"road_combined": {"percentiles": [50], "score": "probability"}},
        xai_output_dir=str(tmp_path / "xai"),
        xai_tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        # the training's loader settings are not inference.json's ids: an explanation run refuses ids it has not
        **{key: value for key, value in common.items() if key not in ("bundle_root", "batch_size", "num_workers")},
    )
    summary = (tmp_path / "xai" / "summary.csv").read_text()
    assert all(metric in summary for metric in spec.explain_metrics)
    first = Path(test_images[0]).name.rsplit(".", 1)[0]
    assert (tmp_path / "xai" / first / f"{first}_gradcampp.png").is_file()
    # each map in words, with the bundle's class names (xai_class_names) and the network's confidence, said to be
    # calibrated unless the validation split could not calibrate it (a tiny split the network gets all right: the
    # temperature is then left at 1 and metrics.json says why)
    calibrated = "temperature_note" not in report
    assert calibrated or (report["temperature_note"].startswith("temperature left at 1") and temperature == 1.0)
    descriptions = list(csv.DictReader((tmp_path / "xai" / "descriptions.csv").read_text().splitlines()))
    assert len(descriptions) == len(test_images)
    for row in descriptions:
        assert row["predicted"] in spec.class_names and row["calibrated"] == str(calibrated)
        said = "calibrated" if calibrated else "uncalibrated"
        assert row["text"].startswith(f"Prediction: {row['predicted']} (") and f"% confidence, {said})." in row["text"]
        # DICOM has a pixel spacing; a JPEG/PNG does not, so its sizes are counted in the file's pixels
        assert ("mm²)" if test_images[0].lower().endswith(".dcm") else " pixels)") in row["text"]

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(parser.get_parsed_content("datalist")))
    study_file = BUNDLES_DIR.parent / "configs" / "studies" / spec.study_file
    content = json.loads(study_file.read_text())
    entry = {**content["bundles"][0], "path": str(bundle), "weights": "models/resnet18/model.pt"}
    entry["overrides"] = {
        **entry.get("overrides", {}),
        **spec.overrides,
        "backbone": "resnet18",
        "image_size": [64, 64],
    }
    entry["layers"] = [BACKBONE_CAM_LAYERS["resnet18"]]
    study = load_study(
        study_file,
        output_dir=str(tmp_path / "study"),
        data={**content["data"], "datalist": str(datalist)},
        bundles=[entry],
        methods=content["methods"][:2],
        metric_args={  # one ROAD percentile: fast enough for a test
            metric: {**args, "percentiles": [50]} if metric.startswith("road_") else args
            for metric, args in content.get("metric_args", {}).items()
        },
        sanity={"cases": 2},
        mlflow=False,
    )
    run_study(study, progress=False)
    summary = study_tables(study)["summary"]
    assert set(summary["metric"]) == {*content["metrics"], "seconds"}
    scored = summary[summary["metric"] != "seconds"]
    assert (scored["n"] + scored["n_undefined"] == len(test_images)).all()
