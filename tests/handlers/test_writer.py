"""SaliencyWriter on a real evaluator: NIfTI maps with the input's affine, overlays, per-case and summary tables."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer

from monai_xai.handlers import SaliencyWriter
from monai_xai.handlers.saliency_writer import split_metric_name
from monai_xai.inferers import XAIInferer
from tests.helpers.engines import affine_for, case_dataset, make_evaluator
from tests.helpers.nets import tiny_unet3d
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


def test_split_metric_name_prefers_the_longest_method():
    assert split_metric_name("ehr_auc_gradcam", ["gradcam"]) == ("ehr_auc", "gradcam")
    assert split_metric_name("deletion_eigengradcam", ["gradcam", "eigengradcam"]) == ("deletion", "eigengradcam")
    assert split_metric_name("gradcam", ["gradcam"]) is None
    assert split_metric_name("loss", ["gradcam"]) is None
