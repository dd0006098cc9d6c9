"""XAIReportWriter on real evaluators: a page per case whose volumes, outlines, metrics and texts are the engine's and
the SaliencyWriter's; the index; the explain overlay writing them by default; the pages logged to a real MLflow
server and rendered by its UI in headless Chromium."""

from __future__ import annotations

import csv
import urllib.request

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.inferers import SimpleInferer

from monai_xai.handlers import XAIMetricHandler, XAIMLflowHandler, XAIReportWriter, explanation_writers
from monai_xai.handlers.records import run_records
from monai_xai.handlers.report_writer import PARTS_FOLDER, predicted_region
from monai_xai.inferers import XAIInferer
from monai_xai.visualize import read_case_report
from monai_xai.visualize.report import _outline
from tests.helpers.browser import Browser, hot_pixels, skip_without_chromium
from tests.helpers.bundles import make_segmentation_bundle
from tests.helpers.engines import CONFIGS, affine_for, case_dataset, collect_outputs, make_evaluator, run_bundle
from tests.helpers.nets import TinyResNet, tiny_unet3d

METHODS = ("gradcam", "hirescam")


def _rows(path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_pages_hold_the_engines_maps_outlines_metrics_and_texts(tmp_path):
    network = tiny_unet3d().eval()
    images = torch.randn(2, 1, 16, 16, 16)
    labels = torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)
    labels[:, :, 4:12, 5:11, 3:9] = 1
    inferer = XAIInferer(SimpleInferer(), "model.1.submodule", list(METHODS), class_idx=1, pixel_set="image")
    handlers = [
        inferer,
        *explanation_writers(tmp_path, METHODS, region_key="label"),
        XAIMetricHandler(["ehr_auc", "heat_diff"], METHODS, region_key="label"),
        XAIReportWriter(METHODS, region_key="label"),
    ]
    outputs = collect_outputs(make_evaluator(network, case_dataset(images, label=labels), inferer, handlers))
    rows, texts = _rows(tmp_path / "cases.csv"), _rows(tmp_path / "descriptions.csv")
    assert not (tmp_path / PARTS_FOLDER).exists()
    for case, output in enumerate(outputs):
        report = read_case_report(tmp_path / f"c{case}" / f"c{case}_report.html")
        assert report["title"] == f"c{case}" and report["index_href"] == "../index.html"
        for method in METHODS:
            saliency = output[f"saliency_{method}"][0].numpy()
            np.testing.assert_allclose(report["maps"][method].get_fdata(), saliency, atol=0.5 / 255 + 1e-6)
            np.testing.assert_allclose(report["maps"][method].affine, affine_for(case, (0.5,) * 3).numpy())
            row = next(r for r in rows if r["case"] == f"c{case}" and r["method"] == method)
            assert report["metrics"][method]["ehr_auc"] == pytest.approx(float(row["ehr_auc"]))
            assert report["metrics"][method]["heat_diff"] == pytest.approx(float(row["heat_diff"]))
            text = next(r["text"] for r in texts if r["case"] == f"c{case}" and r["method"] == method)
            assert report["descriptions"][method] == text and text
        truth = np.asarray(report["masks"]["ground truth"].dataobj)
        np.testing.assert_array_equal(truth, _outline(labels[case, 0].numpy() == 1))
        predicted = predicted_region(output["pred"], [1], (16, 16, 16))[0].numpy()
        np.testing.assert_array_equal(np.asarray(report["masks"]["prediction"].dataobj), _outline(predicted))
        assert report["confidence"] is None  # a segmenter states no class probability
    index = (tmp_path / "index.html").read_text()
    assert '<a href="c0/c0_report.html">c0</a>' in index and '<a href="c1/c1_report.html">c1</a>' in index
    assert '<table id="summary">' in index and "<th>ehr_auc</th>" in index


def test_a_classifier_page_has_its_confidence_and_no_predicted_outline(tmp_path):
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    masks = torch.zeros(3, 1, 16, 16)
    masks[:, :, 4:10, 3:9] = 1
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    handlers = [inferer, *explanation_writers(tmp_path, "gradcam"), XAIReportWriter("gradcam", region_key="mask")]
    make_evaluator(network, case_dataset(torch.randn(3, 1, 16, 16), mask=masks), inferer, handlers).run()
    descriptions = {row["case"]: row for row in _rows(tmp_path / "descriptions.csv")}
    for case in ("c0", "c1", "c2"):
        report = read_case_report(tmp_path / case / f"{case}_report.html")
        row = descriptions[case]
        assert report["confidence"] == f"{row['predicted']}, {float(row['confidence']):.2%} (uncalibrated)"
        assert report["spatial_dims"] == 2 and list(report["masks"]) == ["ground truth"]
        assert report["image"].shape == (16, 16, 1)
    assert "(uncalibrated)</td>" in (tmp_path / "index.html").read_text()


class _BreakPart:
    """At COMPLETED, before the report writer reads them, truncates the page payload of the second case."""

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self.truncate)

    @staticmethod
    def truncate(engine) -> None:
        part = sorted((run_records(engine, "test").output_dir / PARTS_FOLDER).glob("*.json"))[1]
        part.write_text(part.read_text()[:100])


def test_a_broken_page_payload_costs_only_its_case(tmp_path):
    """One case's payload cut short (a full disk, a killed rank): the other pages are written, the index lists the
    case without a link and with the reason, and the run finishes with a warning naming it."""
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    handlers = [inferer, *explanation_writers(tmp_path, "gradcam"), _BreakPart(), XAIReportWriter("gradcam")]
    with pytest.warns(UserWarning, match=r"no report page for case 'c1' \(JSONDecodeError"):
        make_evaluator(network, case_dataset(torch.randn(3, 1, 16, 16)), inferer, handlers).run()
    assert (tmp_path / "c0" / "c0_report.html").is_file() and (tmp_path / "c2" / "c2_report.html").is_file()
    assert not (tmp_path / "c1" / "c1_report.html").exists()
    index = (tmp_path / "index.html").read_text()
    assert '<a href="c2/c2_report.html">c2</a>' in index and "<tr><td>c1</td>" in index
    assert "not written (JSONDecodeError" in index and not (tmp_path / PARTS_FOLDER).exists()


def test_without_the_recorder_the_error_says_what_to_attach(tmp_path):
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam"])
    evaluator = make_evaluator(
        network, case_dataset(torch.randn(1, 1, 16, 16)), inferer, [inferer, XAIReportWriter("gradcam")]
    )
    with pytest.raises(RuntimeError, match="attach a monai_xai.handlers.XAIRecorder before it"):
        evaluator.run()


def test_predicted_region_reads_label_maps_probabilities_and_scores():
    scores = torch.zeros(3, 4, 4)
    scores[2, :2] = 5  # class 2 wins in the first two rows
    assert predicted_region(scores, [2], (4, 4))[0, :2].all() and not predicted_region(scores, [2], (4, 4))[0, 2:].any()
    labels = torch.tensor([[[0, 1], [2, 1]]])
    assert predicted_region(labels, [1], (2, 2)).tolist() == [[[False, True], [False, True]]]
    assert predicted_region(labels, [], (2, 2)).tolist() == [[[False, True], [True, True]]]
    assert predicted_region(labels, [2, 1], (2, 2)).tolist() == [[[False, True], [True, True]]]  # classes joined
    assert predicted_region(labels, [2], (2, 2)).tolist() == [[[False, False], [True, False]]]
    probability = torch.tensor([[[0.2, 0.7], [0.51, 0.1]]])
    assert predicted_region(probability, [1], (2, 2)).tolist() == [[[False, True], [True, False]]]
    assert predicted_region(torch.tensor([0.1, 0.9]), [1], (2, 2)) is None  # a classifier's output


@pytest.mark.slow
def test_the_explain_overlay_writes_the_reports_and_logs_them(tmp_path):
    bundle = make_segmentation_bundle(tmp_path / "bundle")
    overlays = [CONFIGS / name for name in ("explain.json", "xai_metrics.json", "mlflow.json")]
    finished = run_bundle(
        [bundle / "configs" / "inference.json", *overlays],
        "--xai_methods", "['gradcam','hirescam']",
        "--xai_target_layer", "model.1.submodule",
        "--xai_class", "1",
        "--xai_mask_key", "label",
        "--xai_region_key", "label",
        "--xai_metrics", "['ehr_auc']",
        "--xai_run_name", "report_run",
        cwd=bundle,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    out = bundle / "eval" / "xai"
    for case in ("img0", "img1"):
        report = read_case_report(out / case / f"{case}_report.html")
        assert list(report["maps"]) == list(METHODS) and set(report["masks"]) == {"ground truth", "prediction"}
        assert np.asarray(report["masks"]["ground truth"].dataobj).any()
        assert report["metrics"]["gradcam"]["ehr_auc"] is not None
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("monai_xai").experiment_id])
    assert "xai/index.html" in {item.path for item in client.list_artifacts(run.info.run_id, "xai")}
    assert "xai/img0/img0_report.html" in {item.path for item in client.list_artifacts(run.info.run_id, "xai/img0")}


@skip_without_chromium()
@pytest.mark.slow
def test_the_mlflow_ui_renders_a_logged_report(mlflow_server, tmp_path):
    """The page logged by XAIMLflowHandler, fetched back from the server byte for byte, and shown by MLflow's own UI
    (its artifact view puts it in a sandboxed iframe): it loads without errors and shows heat."""
    out = tmp_path / "xai"
    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    grid = torch.stack(torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij"))
    images = torch.exp(-((grid - 16) ** 2).sum(0) / 120)[None, None] + 0.1 * torch.rand(1, 1, 32, 32)
    masks = (((grid - 12) ** 2).sum(0) < 30)[None, None].float()
    inferer = XAIInferer(SimpleInferer(), "layer4", list(METHODS))
    tracker = XAIMLflowHandler(out, tracking_uri=mlflow_server, experiment_name="xai_report", server_timeout=60.0)
    handlers = [
        inferer,
        *explanation_writers(out, METHODS),
        XAIReportWriter(METHODS, region_key="mask", region_value=None),  # the mask's foreground
        tracker,
    ]
    make_evaluator(network, case_dataset(images, mask=masks), inferer, handlers).run()
    client = MlflowClient(tracking_uri=mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("xai_report").experiment_id])
    run_id, experiment = run.info.run_id, run.info.experiment_id
    assert "xai/index.html" in {item.path for item in client.list_artifacts(run_id, "xai")}
    url = f"{mlflow_server}/get-artifact?path=xai/c0/c0_report.html&run_uuid={run_id}"
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.read() == (out / "c0" / "c0_report.html").read_bytes()
    with Browser(tmp_path / "profile", width=1400, height=1000, timeout_s=90) as browser:
        browser.open(f"{mlflow_server}/#/experiments/{experiment}/runs/{run_id}/artifacts/xai/c0/c0_report.html")
        finished = (
            "document.body && ['ready', 'error'].includes(document.body.dataset.status) && document.body.dataset.status"  # noqa: E501
        )
        status, place = browser.wait_in_frames(finished, timeout_s=120)
        assert status == "ready" and "frame" in place  # in MLflow's sandboxed iframe, its own process
        frame = place["frame"]
        assert browser.errors(frame=frame) == []
        # the sandbox is real: no storage in the artifact's frame
        storage = "(() => { try { localStorage.length; return 'open'; } catch (e) { return e.name; } })()"
        assert browser.evaluate(storage, frame=frame) == "SecurityError"
        browser.pump(1.0)
        assert hot_pixels(browser.screenshot(tmp_path / "mlflow_ui.png")).sum() > 1000
