"""The gaze-saliency bundle (Qiu, ch. 4) on a tiny EGD-CXR copy in the published layout: model-zoo layout and
metadata, the three training stages (each freezing what it should, checked on the saved weights), evaluation,
inference (the diagnosis and the gaze map on the input's grid) and the explanation run that scores CAMs and the
predicted gaze map against the radiologists' gaze, all through ``monai.bundle.run`` (in process) as a user would."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from monai.transforms import LoadImage
from PIL import Image

from monai_xai.bundle import explain_bundle
from monai_xai.cams import resolve_layers
from monai_xai.data import EGD_CXR_CLASSES
from monai_xai.networks import GAZE_CAM_LAYER, gaze_map
from tests.helpers.fixture_egd_cxr import EGD_COLUMNS, EGD_ROWS, write_egd_cxr
from tests.helpers.study_bundles import BUNDLES_DIR, SCHEMA, bundle_configs, run_bundle

pytestmark = [
    pytest.mark.filterwarnings("ignore:PydicomReader. ImageOrientationPatient"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader"),
]
BUNDLE = BUNDLES_DIR / "gaze_saliency_cxr"
# small and fast: a tiny network on 64 x 80 (columns x rows) images; the bundle's defaults are checked for shapes
TINY = {
    "image_size": [64, 80],
    "densenet_block_config": [1, 1, 1, 1],
    "densenet_growth_rate": 4,
    "densenet_init_features": 8,
    "unet_channels": [4, 8, 8, 8, 8, 8],
    "classifier_channels": 8,
    "test_size": 3,
    "validation_size": 3,
    "batch_size": 3,
    "num_workers": 0,
}


def test_model_zoo_layout_metadata_and_study_recipe() -> None:
    for name in ("metadata.json", "train.json", "evaluate.json", "inference.json", "explain.json", "logging.conf"):
        assert (BUNDLE / "configs" / name).is_file(), name
    assert (BUNDLE / "docs" / "README.md").is_file() and "Apache License" in (BUNDLE / "LICENSE").read_text()
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))
    verify_net_in_out(  # the default network: DenseNet-201, 512 x 640
        net_id="network_def",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=str(BUNDLE / "configs" / "inference.json"),
        device="cpu",
    )
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    for key in ("network_def", "dataset_dir", "image_dir", "heatmap_dir", "image_size", "ckpt_dir", "datalist"):
        assert train[key] == inference[key], key
    assert train["train"]["deterministic_transforms"] == inference["preprocessing"]["transforms"]
    # the study's recipe: DenseNet-201, 640 x 512, Adam 1e-4 (0.9, 0.999, 1e-8), 50 epochs per stage, early stopping
    assert train["densenet_block_config"] == [6, 12, 48, 32] and train["image_size"] == [512, 640]
    for section in ("train", "pretrain"):
        optimizer = train[section]["optimizer"]
        assert optimizer["_target_"] == "torch.optim.Adam" and optimizer["betas"] == [0.9, 0.999]
        assert [h["_target_"] for h in train[section]["validation"]["handlers"]][-1] == "EarlyStopHandler"
    assert train["learning_rate"] == 1e-4 and train["max_epochs"] == 50 and train["triplet_epochs"] == 50
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, "inference.json", "explain.json"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    assert parser.get_parsed_content("xai_target_layer") == GAZE_CAM_LAYER
    resolve_layers(network, GAZE_CAM_LAYER)


def _state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in torch.load(path, weights_only=True).items() if k.startswith(prefix)}


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_train_stages_evaluate_infer_explain(tmp_path: Path) -> None:
    data = write_egd_cxr(tmp_path / "data")
    bundle = shutil.copytree(BUNDLE, tmp_path / "gaze_saliency_cxr")
    common = {"bundle_root": str(bundle), "dataset_dir": str(data), "image_dir": str(data), **TINY}
    models = bundle / "models"

    with pytest.raises(RuntimeError) as failure:  # MONAI wraps the expression's error
        run_bundle(bundle, ["train.json"], stage=2, max_epochs=1, **common)
    assert isinstance(failure.value.__cause__, FileNotFoundError) and "run stage 1 first" in str(
        failure.value.__cause__
    )
    run_bundle(bundle, ["train.json"], stage=1, max_epochs=2, triplet_epochs=1, **common)
    assert (models / "stage1_triplet.pt").is_file() and (models / "stage1.pt").is_file()
    assert not _same(_state(models / "stage1_triplet.pt", "densenet."), _state(models / "stage1.pt", "densenet."))
    run_bundle(bundle, ["train.json"], stage=2, max_epochs=2, **common)
    # stage 2 trained the UNet and left the DenseNet (weights and batch-norm statistics) as stage 1 saved it
    assert _same(_state(models / "stage1.pt", "densenet."), _state(models / "stage2.pt", "densenet."))
    assert not _same(_state(models / "stage1.pt", "unet."), _state(models / "stage2.pt", "unet."))
    run_bundle(bundle, ["train.json"], stage=3, max_epochs=2, **common)
    for part in ("densenet.", "unet."):  # stage 3: both encoders frozen, only the classifier trained
        assert _same(_state(models / "stage2.pt", part), _state(models / "model.pt", part)), part
    assert not _same(_state(models / "stage2.pt", "classifier."), _state(models / "model.pt", "classifier."))

    run_bundle(bundle, ["train.json", "evaluate.json"], **common)
    report = json.loads((bundle / "eval" / "metrics.json").read_text())
    assert {"accuracy", "auc_macro", "per_class", "gaze", "study"} <= set(report)
    assert [row["class"] for row in report["per_class"]] == list(EGD_CXR_CLASSES)
    assert report["study"] == {"auc_macro": 0.925, "accuracy": 0.8, "kl": 0.706, "cc": 0.576, "sim": 0.552}
    for metric in ("kl", "cc", "sim", "nss"):
        assert report["gaze"][metric]["n"] == 3 and math.isfinite(report["gaze"][metric]["mean"]), metric
    assert report["gaze"]["kl"]["mean"] > 0 and -1 <= report["gaze"]["cc"]["mean"] <= 1

    run_bundle(bundle, ["inference.json"], **common)
    rows = list(csv.reader((bundle / "eval" / "predictions.csv").read_text().splitlines()))
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json"))
    parser.update(common)
    test_cases = parser.get_parsed_content("datalist")["test"]
    assert sorted(row[0] for row in rows) == sorted(entry["image"] for entry in test_cases)
    np.testing.assert_allclose([sum(float(v) for v in row[1:]) for row in rows], 1.0, atol=1e-5)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(models / "model.pt", weights_only=True))
    network.eval()
    for entry in test_cases:
        name = Path(entry["image"]).name.rsplit(".", 1)[0]
        written = nib.load(bundle / "eval" / "gaze_maps" / f"{name}_gaze.nii.gz")
        original = LoadImage(reader="PydicomReader", image_only=True)(entry["image"])
        # on the input's own grid (x = columns, y = rows) with its affine: it overlays the radiograph
        assert written.shape == tuple(original.shape) == (EGD_COLUMNS, EGD_ROWS)
        np.testing.assert_allclose(written.affine[:2, :2], np.asarray(original.affine)[:2, :2], atol=1e-6)
        png = Image.open(bundle / "eval" / "gaze_maps" / f"{name}_gaze.png")
        assert png.size == (EGD_COLUMNS, EGD_ROWS)
        # the written map is the network's predicted map put back by hand: resampled from the 64 x 80 grid to the
        # padded size (38 x 48: one zero row above, two below), the padding cut off
        case = parser.get_parsed_content("preprocessing")(entry)
        with torch.no_grad():
            predicted = gaze_map(network.diagnose_and_gaze(case["image"][None].as_tensor())[1])
        back = F.interpolate(predicted, size=(EGD_COLUMNS, 48), mode="bilinear", align_corners=False)[0, 0, :, 1:-2]
        np.testing.assert_allclose(np.asarray(written.dataobj), back.numpy(), atol=1e-4)

    explain_bundle(
        bundle,
        xai_methods=["gradcam", "layercam"],
        xai_metric_args={"road_combined": {"percentiles": [50], "score": "probability"}},
        xai_output_dir=str(tmp_path / "xai"),
        xai_tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        # the training's loader settings are not inference.json's ids: an explanation run refuses ids it has not
        **{key: value for key, value in common.items() if key not in ("bundle_root", "batch_size", "num_workers")},
    )
    table = list(csv.DictReader((tmp_path / "xai" / "gaze_agreement.csv").open()))
    assert [row["map"] for row in table] == ["gradcam", "layercam", "predicted_gaze"]
    for row in table:
        assert row["n"] == "3"
        for metric in ("kl", "cc", "sim", "nss"):
            assert math.isfinite(float(row[metric])), (row["map"], metric)
    # the predicted gaze map scores as in the evaluation (same network, same cases and grid)
    predicted = table[-1]
    for metric in ("kl", "cc", "sim", "nss"):
        assert float(predicted[metric]) == pytest.approx(report["gaze"][metric]["mean"], rel=1e-4, abs=1e-5), metric
    assert "predicted_gaze" in (tmp_path / "xai" / "gaze_agreement.md").read_text()
    cases = list(csv.DictReader((tmp_path / "xai" / "gaze_agreement_cases.csv").open()))
    assert len(cases) == 3 * 3
    assert "road_combined" in (tmp_path / "xai" / "summary.csv").read_text()
    # the bundle's own metrics reach MLflow and per_metric/, although its handler is listed after the overlays'
    (run,) = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").get_experiment_by_name("monai_xai").experiment_id]
    )
    for row in table:
        for metric in ("kl", "cc", "sim", "nss"):
            name = f"gaze_{metric}_{row['map']}"
            assert run.data.metrics[name] == pytest.approx(float(row[metric]), rel=1e-6), name
            raw = list(csv.reader((tmp_path / "xai" / "per_metric" / f"{name}_raw.csv").open()))
            assert len(raw) == 1 + 3, name  # header and one row per case
    assert "gaze_kl_predicted_gaze" in (tmp_path / "xai" / "per_metric" / "metrics.csv").read_text()
