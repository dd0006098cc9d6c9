"""The KiTS23 segmentation bundle on a tiny copy of KiTS23 in the published layout: model-zoo files and metadata, then
a short training, evaluation (Dice per class), inference back on the CT's grid, explanations with each kind of pixel
set and the study file, all through ``monai.bundle.run`` / :func:`~monai_xai.bundle.explain_bundle` as a user runs
them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_xai.bundle import explain_bundle, load_trained_bundle
from monai_xai.cams import ClassSet
from monai_xai.data import foreground_hu_range
from monai_xai.explanation import SlidingWindow, explain
from monai_xai.networks import segmentation_cam_layer
from monai_xai.sanity.cases import load_case
from monai_xai.study import load_study, run_study, study_cases, study_from_dict, study_tables
from monai_xai.study.cases import case_stems
from tests.helpers.fixture_kits23 import KITS_SHAPE, write_kits23
from tests.helpers.studies import REPO
from tests.helpers.study_bundles import bundle_configs, check_model_zoo_layout, run_bundle

BUNDLE = REPO / "bundles" / "kits23_segmentation"
STUDY = REPO / "configs" / "studies" / "kits23_seg_cams.json"
CLASSES = {"kidney": 1, "tumour": 2, "cyst": 3}
# a small UNet on 32 x 32 x 16 patches at 1.6 x 1.6 x 3 mm (the fixture's 48 x 48 x 16 CT at 0.8 x 0.8 x 3 mm becomes
# 24 x 24 x 16): what the tests train; the defaults are checked for shapes only
TINY: dict[str, Any] = {
    "network_options": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "patch_size": [32, 32, 16],
    "spacing": [1.6, 1.6, 3.0],
    "num_workers": 0,
    "sw_batch_size": 2,
}
# one ROAD percentile: enough to check the wiring
ROAD_ARGS = {"road_combined": {"percentiles": [50]}, "pointing_game": {"tolerance": 2}}


def test_model_zoo_layout_metadata_and_default_network() -> None:
    check_model_zoo_layout(BUNDLE)
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, "inference.json", "explain.json"))
    network = parser.get_parsed_content("network_def")
    assert parser.get_parsed_content("xai_target_layer") == segmentation_cam_layer(network) == "model.1.submodule"
    assert set(json.loads((BUNDLE / "configs" / "metadata.json").read_text())["cam_target_layers"]) >= {
        "model.1.submodule"
    }
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    inference = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    shared = ("network_def", "network_name", "network_options", "spacing", "hu_min", "hu_max", "patch_size")
    for key in (*shared, "dataset_dir", "datalist", "ckpt_dir", "class_names"):
        assert train[key] == inference[key], key
    # inference preprocessing = training's deterministic transforms, the label optional
    assert [t["_target_"] for t in inference["preprocessing"]["transforms"]] == [
        t["_target_"] for t in train["train"]["deterministic_transforms"]
    ]


def test_study_file_compares_gradcam_and_hirescam_per_class_and_pixel_set() -> None:
    content = json.loads(STUDY.read_text())
    assert content["methods"] == ["gradcam", "hirescam"]
    assert {"ehr_auc", "heat_diff", "pointing_game", "road_combined"} <= set(content["metrics"])
    kinds = {(entry["class"], json.dumps(entry["pixel_set"])) for entry in content["bundles"]}
    for index in CLASSES.values():
        assert {(index, '"pred"'), (index, '"image"'), (index, '"empty"')} <= kinds
    assert any(entry["pixel_set"] == "peak" for entry in content["bundles"])  # one voxel, each image's own
    for entry in content["bundles"]:
        assert (STUDY.parent / entry["path"]).resolve() == BUNDLE
        assert entry["layers"] == ["model.1.submodule"] and entry["region_value"] == "class"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bundle copy trained for two epochs on the fixture (weights land in the copy), with its run settings."""
    root = tmp_path_factory.mktemp("kits23_bundle")
    data = write_kits23(root / "kits23")
    bundle = shutil.copytree(BUNDLE, root / "bundle")
    common = {"bundle_root": str(bundle), "dataset_dir": str(data), "cache_dir": str(root / "cache"), **TINY}
    run_bundle(bundle, ["train.json"], max_epochs=2, val_interval=1, **common)
    return {"root": root, "data": data, "bundle": bundle, "common": common}


@pytest.mark.slow
def test_training_checkpoints_and_evaluation_reports_dice_per_class(
    trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = trained["bundle"]
    assert (bundle / "models" / "unet" / "model.pt").is_file()
    # the HU window from the training labels, what the README says to set hu_min / hu_max to
    run_bundle(bundle, ["train.json"], run_id="hu_statistics", **trained["common"])
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "train.json"))
    parser.update(trained["common"])
    low, high = foreground_hu_range(parser.get_parsed_content("train_datalist"))
    assert f"inside the training labels): ({low}, {high})" in capsys.readouterr().out
    run_bundle(bundle, ["train.json", "evaluate.json"], **trained["common"])
    rows = csv.reader((bundle / "eval" / "unet" / "metrics.csv").read_text().splitlines())
    metrics = {name: float(value) for name, value in rows}
    expected = {f"val_dice_{name}" for name in CLASSES} | {"val_dice_kidney_and_masses", "val_dice_masses"}
    assert set(metrics) == expected | {"val_mean_dice"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert (bundle / "eval" / "unet" / "val_dice_tumour_raw.csv").is_file()


@pytest.mark.slow
def test_inference_writes_predictions_on_the_original_ct_grid(trained: dict[str, Any]) -> None:
    bundle = trained["bundle"]
    run_bundle(bundle, ["inference.json"], **trained["common"])
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json"))
    parser.update(trained["common"])
    test_cases = parser.get_parsed_content("datalist")["test"]
    assert test_cases
    for case in test_cases:
        source = nib.load(case["image"])
        folder = Path(case["image"]).parent.name
        written = nib.load(bundle / "eval" / "unet" / folder / "imaging_seg.nii.gz")
        assert written.shape == source.shape == KITS_SHAPE
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}
    assert sorted(path.parent.name for path in (bundle / "eval" / "unet").glob("*/imaging_seg.nii.gz")) == sorted(
        Path(case["image"]).parent.name for case in test_cases
    )


def _explain(trained: dict[str, Any], out: Path, overlays: tuple[str, ...], **override: Any) -> None:
    explain_bundle(
        trained["bundle"],
        overlays=overlays,
        xai_output_dir=str(out),
        xai_metric_args=ROAD_ARGS,
        # cache_dir is the training's: an explanation run refuses ids its configs do not define
        **{key: value for key, value in trained["common"].items() if key not in ("bundle_root", "cache_dir")},
        **override,
    )


@pytest.mark.slow
def test_explanation_writes_maps_on_both_grids_and_scores_them(trained: dict[str, Any]) -> None:
    out = trained["root"] / "xai"
    _explain(trained, out, ("explain", "xai_metrics", "mlflow"), xai_tracking_uri=f"sqlite:///{out.parent}/ml.db")
    summary = (out / "summary.csv").read_text()
    for metric in ("ehr_auc", "heat_diff", "pointing_game", "relevance_mass", "road_combined"):
        assert metric in summary, metric
    rows = list(csv.DictReader((out / "cases.csv").read_text().splitlines()))
    assert sorted(row["method"] for row in rows) == ["gradcam", "hirescam"] and {row["class"] for row in rows} == {"2"}
    for method in ("gradcam", "hirescam"):
        (heatmap,) = out.glob(f"*/*_{method}.nii.gz")  # inverted onto the CT's own grid (xai_maps_grid "original")
        # named after the case folder (xai_case_name "folder"), not the shared file name imaging.nii.gz
        assert heatmap.name == f"{heatmap.parent.name}_{method}.nii.gz" and heatmap.parent.name.startswith("case_")
        source = nib.load(trained["data"] / heatmap.parent.name / "imaging.nii.gz")
        maps = nib.load(heatmap)
        assert maps.shape == source.shape == KITS_SHAPE
        np.testing.assert_allclose(maps.affine, source.affine, atol=1e-4)
        values = np.asarray(maps.dataobj)
        assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-6 and values.max() > 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pixel_set", "override"),
    [
        ("label", {"xai_pixel_set_key": "label"}),
        ("image", {"xai_pixel_set": "image", "xai_class": 1}),
        ("voxel", {"xai_pixel_set": [12, 12, 8]}),  # the middle of the 24 x 24 x 16 preprocessed volume
        ("classes", {"xai_class": "1+2+3", "xai_pixel_set_key": "label"}),  # a multi-class pixel set
    ],
    ids=["ground_truth_tumour", "image_kidney", "voxel_tumour", "kidney_tumour_cyst"],
)
def test_explanation_of_other_pixel_sets(trained: dict[str, Any], pixel_set: str, override: dict[str, Any]) -> None:
    out = trained["root"] / f"xai_{pixel_set}"
    _explain(trained, out, ("explain", "xai_metrics"), **override)
    rows = list(csv.DictReader((out / "cases.csv").read_text().splitlines()))
    assert sorted(row["method"] for row in rows) == ["gradcam", "hirescam"]
    assert {row["class"] for row in rows} == {str(override.get("xai_class", 2))}
    assert all(row["ehr_auc"] not in ("", "nan") for row in rows)


@pytest.mark.slow
def test_an_empty_pixel_set_gives_all_zero_maps_and_a_note(trained: dict[str, Any]) -> None:
    out = trained["root"] / "xai_empty"
    with pytest.warns(UserWarning, match="pixel set is empty"):
        _explain(trained, out, ("explain", "xai_metrics"), xai_pixel_set="empty")
    for heatmap in out.glob("*/*.nii.gz"):
        assert not np.asarray(nib.load(heatmap).dataobj).any(), heatmap
    rows = list(csv.DictReader((out / "cases.csv").read_text().splitlines()))
    assert len(rows) == 2 and all(row["ehr_auc"] == "nan" and row["road_combined"] == "nan" for row in rows)


@pytest.mark.slow
def test_study_file_loads_and_runs_on_the_trained_bundle(trained: dict[str, Any]) -> None:
    root, bundle = trained["root"], trained["bundle"]
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json"))
    parser.update(trained["common"])
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps(parser.get_parsed_content("datalist")))
    content = json.loads(STUDY.read_text())
    overrides = {key: TINY[key] for key in ("network_options", "patch_size", "spacing")}
    entries = [{**entry, "path": str(bundle), "overrides": overrides} for entry in content["bundles"]]
    study = load_study(
        STUDY,
        output_dir=str(root / "study"),
        data={**content["data"], "datalist": str(datalist)},
        bundles=entries,
        metric_args={**content["metric_args"], **ROAD_ARGS},
        sanity={"cases": 0},
        mlflow=False,
    )
    assert [b.name for b in study.bundles] == [entry["name"] for entry in content["bundles"]]
    assert study.methods == ("gradcam", "hirescam")
    run_study(study, progress=False)
    summary = study_tables(study)["summary"]
    assert set(summary["metric"]) == {*content["metrics"], "seconds"}
    assert set(summary["bundle"]) == {entry["name"] for entry in entries}


@pytest.mark.slow
def test_the_study_explains_a_ct_larger_than_the_window_with_the_bundles_window(trained: dict[str, Any]) -> None:
    """The study predicts and explains each CT as the bundle's own SlidingWindowInferer does, here with a 16 x 16 x 8
    window on the 24 x 24 x 16 preprocessed CT; a segmenter with no class explains every foreground class together,
    as the overlay does, the same as "1+2+3"."""
    root, bundle = trained["root"], trained["bundle"]
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, "inference.json"))
    parser.update(trained["common"])
    datalist = root / "window_datalist.json"
    datalist.write_text(json.dumps(parser.get_parsed_content("datalist")))
    overrides = {**{key: TINY[key] for key in ("network_options", "spacing")}, "patch_size": [16, 16, 8]}
    entries = [
        {"name": name, "path": str(bundle), "overrides": overrides, "layers": ["model.1.submodule"], "class": class_idx,
         "pixel_set": "pred", "region_key": "label", "region_value": "class"}
        for name, class_idx in (("tumour", 2), ("all", "1+2+3"), ("no-class", None))
    ]  # fmt: skip
    study = study_from_dict(
        {
            "name": "kits-window",
            "output_dir": str(root / "window_study"),
            "data": {"datalist": str(datalist), "data_list_key": "test", "region_key": "label"},
            "bundles": entries,
            "methods": ["hirescam"],
            "metrics": ["ehr_auc", "heat_diff"],
            "sanity": {"cases": 0},
            "mlflow": False,
            "batch_size": 1,
            "maps": True,
        },
        root,
    )
    assert study.bundles[1].class_idx == ClassSet((1, 2, 3)) and study.bundles[2].class_idx is None
    assert study.bundles[0].window == SlidingWindow((16, 16, 8), 4, 0.5, "gaussian")
    run_study(study, progress=False)
    tables = study_tables(study)
    explained = {row.bundle: row.explained_class for row in tables["cases"].itertuples()}
    assert explained == {"tumour": 2, "all": "1+2+3", "no-class": "1+2+3"}
    summary = tables["summary"].set_index(["bundle", "metric"])
    for metric in ("ehr_auc", "heat_diff"):
        assert summary.loc[("no-class", metric), "mean"] == pytest.approx(summary.loc[("all", metric), "mean"])
    # oracle: the explanation step on the preprocessed CT with and without the bundle's window
    trained_bundle = load_trained_bundle(bundle, overrides=overrides)
    case = json.loads(datalist.read_text())["test"][0]
    image, _ = load_case({"image": case["image"]}, trained_bundle.preprocessing, "label")
    assert all(extent > size for extent, size in zip(image.shape[1:], (16, 16, 8)))  # larger than the window
    request = {"methods": ["hirescam"], "target_layers": "model.1.submodule", "class_idx": 2}
    windowed = explain(trained_bundle.network, image[None], window=trained_bundle.window, **request).maps["hirescam"]
    whole = explain(trained_bundle.network, image[None], **request).maps["hirescam"]
    stem = case_stems(study_cases(study.data, Path(study.output_dir)))[case["image"]]
    written = nib.load(root / "window_study" / "maps" / "tumour" / "model.1.submodule" / "hirescam" / f"{stem}.nii.gz")
    written = torch.as_tensor(np.asarray(written.dataobj))
    torch.testing.assert_close(written, windowed[0, 0], atol=1e-5, rtol=0)
    assert (written - whole[0, 0]).abs().max() > 1e-2  # the window matters here, so the test can tell
