"""XAI metric, timing and writer handlers on a real evaluator, checked against the plain metric functions."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.inferers import SimpleInferer

from monai_xai.handlers import SaliencyWriter, XAIMetricHandler, XAITimingHandler, region_mask
from monai_xai.handlers.saliency_writer import split_metric_name
from monai_xai.inferers import XAIInferer
from monai_xai.metrics import NoisyLinearImputer, deletion_insertion, ehr_auc, heat_diff
from monai_xai.metrics.road import road
from monai_xai.visualize import orthogonal_slices, peak_voxel, save_overlay_png
from tests.cams.nets import TinyResNet, tiny_unet3d
from tests.engines.conftest import affine_for, case_dataset, make_evaluator

METHODS = ("gradcam", "hirescam")


def collect(evaluator, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Run and stack the given output keys over all cases (batch-first, in case order)."""
    seen: dict[str, list] = {key: [] for key in keys}

    def keep(engine):
        for case in engine.state.output:
            for key in keys:
                value = case[key]
                seen[key].append(value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value))

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, keep)
    evaluator.run()
    return {key: torch.stack(values) for key, values in seen.items()}


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory):
    """3 cases (batches of 2 and 1), two methods, region + re-run metrics, timing and the writer."""
    torch.manual_seed(0)
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    images = torch.randn(3, 1, 16, 16)
    masks = torch.zeros(3, 1, 16, 16)
    masks[:, :, 4:10, 3:9] = 1
    inferer = XAIInferer(SimpleInferer(), "layer4", METHODS)
    metrics = XAIMetricHandler(
        ["ehr_auc", "heat_diff", "deletion", "road_morf"],
        METHODS,
        network=network,
        metric_args={
            "deletion": {"steps": 8},
            "road_morf": {"percentiles": [25, 75], "imputer": NoisyLinearImputer(0.0)},
        },
        region_key="mask",
    )
    out = tmp_path_factory.mktemp("cls_run")
    writer = SaliencyWriter(out, METHODS)
    evaluator = make_evaluator(
        network, case_dataset(images, mask=masks), inferer, [inferer, XAITimingHandler(METHODS), writer, metrics]
    )
    keys = ("xai_class", *(f"saliency_{m}" for m in METHODS), *(f"xai_seconds_{m}" for m in METHODS))
    outputs = collect(evaluator, keys)
    return {"evaluator": evaluator, "outputs": outputs, "images": images, "masks": masks, "net": network, "out": out}


def test_region_metrics_match_the_functions(classification_run):
    state, outputs, masks = (
        classification_run["evaluator"].state,
        classification_run["outputs"],
        classification_run["masks"],
    )
    for method in METHODS:
        maps = outputs[f"saliency_{method}"]
        expected_ehr = ehr_auc(maps, masks)
        torch.testing.assert_close(state.metric_details[f"ehr_auc_{method}"].reshape(-1), expected_ehr)
        assert state.metrics[f"ehr_auc_{method}"] == pytest.approx(float(expected_ehr.mean()), abs=1e-6)
        assert state.metrics[f"heat_diff_{method}"] == pytest.approx(float(heat_diff(maps, masks).mean()), abs=1e-6)


def test_rerun_metrics_use_the_explained_class(classification_run):
    run = classification_run
    state, outputs = run["evaluator"].state, run["outputs"]
    for method in METHODS:
        maps = outputs[f"saliency_{method}"]
        curve = deletion_insertion(run["net"], run["images"], maps, class_idx=outputs["xai_class"], steps=8)
        torch.testing.assert_close(state.metric_details[f"deletion_{method}"].reshape(-1), curve.auc)
        morf = road(
            run["net"], run["images"], maps, outputs["xai_class"], percentiles=[25, 75], imputer=NoisyLinearImputer(0.0)
        )
        # ROAD is reported by its mean over percentiles; the curve is kept for plots and MLflow
        assert state.metrics[f"road_morf_{method}"] == pytest.approx(float(morf.mean_score_change.mean()), abs=1e-5)
        curve_means = morf.score_change.mean(dim=0)
        kept = state.metric_curves[f"road_morf_{method}"]["morf"]
        assert kept.x == (25, 75) and kept.y == pytest.approx(curve_means.tolist(), abs=1e-5)


def test_timing_records_every_case(classification_run):
    state, outputs = classification_run["evaluator"].state, classification_run["outputs"]
    for method in METHODS:
        per_case = outputs[f"xai_seconds_{method}"].double()
        torch.testing.assert_close(state.metric_details[f"xai_seconds_{method}"].reshape(-1), per_case)
        assert state.metrics[f"xai_seconds_{method}"] == pytest.approx(float(per_case.mean()))
        assert bool((per_case > 0).all())


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


def test_writer_3d_segmentation_overlay(tmp_path):
    network = tiny_unet3d().eval()
    images = torch.randn(1, 1, 16, 16, 16)
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", ["gradcam"], class_idx=1)
    evaluator = make_evaluator(network, case_dataset(images), inferer, [inferer, SaliencyWriter(tmp_path, "gradcam")])
    evaluator.run()
    nifti = nib.load(str(tmp_path / "c0" / "c0_gradcam.nii.gz"))
    assert nifti.shape == (16, 16, 16)
    np.testing.assert_allclose(nifti.header.get_zooms(), (0.5, 0.5, 0.5))
    assert (tmp_path / "c0" / "c0_gradcam.png").stat().st_size > 0


def test_region_mask_variants():
    label = torch.tensor([0, 1, 2, 2]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    classes = torch.tensor([1, 2])
    foreground = torch.tensor([0.0, 1, 1, 1]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    torch.testing.assert_close(region_mask(label, classes, None), foreground)
    by_class = torch.stack([torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 1])]).reshape(2, 1, 2, 2)
    torch.testing.assert_close(region_mask(label, classes, "class"), by_class)
    torch.testing.assert_close(region_mask(label, classes, 2), by_class[1:].repeat(2, 1, 1, 1))
    one_hot = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(region_mask(one_hot, classes, "class"), by_class)
    torch.testing.assert_close(region_mask(one_hot, classes, None), foreground)
    with pytest.raises(ValueError, match="not a region"):
        region_mask(torch.tensor([1, 2]), classes, None)


def test_metric_handler_errors():
    with pytest.raises(ValueError, match="unknown or no XAI metrics"):
        XAIMetricHandler(["ehr"], ["gradcam"])
    with pytest.raises(ValueError, match='"network": "@network"'):
        XAIMetricHandler(["road_combined"], ["gradcam"])
    with pytest.raises(ValueError, match="not metrics"):
        XAIMetricHandler(["ehr_auc"], ["gradcam"], metric_args={"ehr": {}})


def test_peak_voxel_finds_an_off_centre_lesion():
    saliency = torch.zeros(1, 10, 12, 14)
    saliency[0, 7, 2, 11] = 1.0  # the peak, far from the middle (5, 6, 7)
    saliency[0, 7, 3, 11] = 0.9
    assert peak_voxel(saliency) == (7, 2, 11)
    saliency[0, 1, 1, 1] = float("nan")  # NaN is not a peak
    assert peak_voxel(saliency) == (7, 2, 11)
    assert peak_voxel(torch.full((1, 4, 6, 8), float("nan"))) == (2, 3, 4)


def test_split_metric_name_prefers_the_longest_method():
    assert split_metric_name("ehr_auc_gradcam", ["gradcam"]) == ("ehr_auc", "gradcam")
    assert split_metric_name("deletion_eigengradcam", ["gradcam", "eigengradcam"]) == ("deletion", "eigengradcam")
    assert split_metric_name("gradcam", ["gradcam"]) is None
    assert split_metric_name("loss", ["gradcam"]) is None


def test_orthogonal_slices_and_overlay(tmp_path):
    volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    slices = orthogonal_slices(volume)
    np.testing.assert_array_equal(slices[0], volume[0, 1].numpy())
    np.testing.assert_array_equal(slices[1], volume[0, :, 1].numpy())
    np.testing.assert_array_equal(slices[2], volume[0, :, :, 2].numpy())
    through = orthogonal_slices(volume, (0, 2, 1))
    np.testing.assert_array_equal(through[0], volume[0, 0].numpy())
    np.testing.assert_array_equal(through[1], volume[0, :, 2].numpy())
    np.testing.assert_array_equal(through[2], volume[0, :, :, 1].numpy())
    assert len(orthogonal_slices(torch.zeros(1, 5, 6))) == 1
    with pytest.raises(ValueError, match="centre must be 3 indices"):
        orthogonal_slices(volume, (2, 0, 0))
    with pytest.raises(ValueError, match="share the spatial shape"):
        save_overlay_png(torch.zeros(1, 8, 8), torch.zeros(1, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="centre must be"):
        save_overlay_png(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8), tmp_path / "x.png", centre="max")
    assert save_overlay_png(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8), tmp_path / "y.png").exists()
    assert not math.isnan(float(slices[0].mean()))
