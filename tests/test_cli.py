"""The ``monai-xai`` command line, the bundle-explain runner and the demo's summary table."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from monai_xai.bundle import explain_bundle, explain_config_files, overlay_dir
from monai_xai.demo import format_table, summary_rows, verdict, with_road_combined
from monai_xai.enums import SanityCheck
from monai_xai.handlers import RunRecords
from monai_xai.metrics import MethodSummary
from monai_xai.sanity import CheckVerdict, MethodSanity, bundle_sanity_checks
from tests.helpers.bundles import make_classification_bundle

REPO = Path(__file__).resolve().parent.parent


def test_config_files_are_layered_bundle_first_then_overlays_then_bundle_explain(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    files = explain_config_files(bundle)
    # the overlays ship in the package; the repository's configs/ links to the same files
    overlays = REPO / "monai_xai" / "configs"
    assert files == [
        str(bundle / "configs" / "inference.json"),
        str(overlays / "explain.json"),
        str(overlays / "xai_metrics.json"),
        str(overlays / "mlflow.json"),
    ]
    (bundle / "configs" / "explain.json").write_text("{}")
    assert explain_config_files(bundle, overlays=("explain",))[-1] == str(bundle / "configs" / "explain.json")
    assert overlay_dir() == overlays
    for name in ("explain", "xai_metrics", "mlflow"):
        assert (REPO / "configs" / f"{name}.json").resolve() == overlays / f"{name}.json"
    # no overlays: what the bundle itself configures
    assert explain_config_files(bundle, overlays=()) == [
        str(bundle / "configs" / name) for name in ("inference.json", "explain.json")
    ]


def test_config_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model-zoo layout"):
        explain_config_files(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text("{}")
    with pytest.raises(ValueError, match="must include 'explain'"):
        explain_config_files(tmp_path, overlays=("xai_metrics",))


def test_summary_table_from_a_runs_records(tmp_path):
    def rows(*values):
        return [MethodSummary(method, mean, 0.1, mean, mean, 2, 0) for method, mean in values]

    records = RunRecords(tmp_path, ("gradcam", "hirescam", "layercam", "eigencam"))
    records.metrics = ["seconds", "ehr_auc"]
    records.summary = {
        "seconds": rows(("gradcam", 0.25)),
        "ehr_auc": rows(("gradcam", 0.5), ("hirescam", 0.75), ("layercam", -0.004123), ("eigencam", math.nan)),
    }
    metrics, table = summary_rows(records)
    assert metrics == ["ehr_auc", "seconds"]
    assert table["gradcam"] == {"ehr_auc": 0.5, "seconds": 0.25} and table["hirescam"] == {"ehr_auc": 0.75}
    assert format_table(metrics, table).splitlines() == [
        "| method | ehr_auc | s/case |",
        "|---|---|---|",
        "| gradcam | 0.500 | 0.250 |",
        "| hirescam | 0.750 |  |",
        "| layercam | -4.12e-03 |  |",
        "| eigencam | nan |  |",
    ]


def test_road_combined_column_from_morf_and_lerf_means():
    table = {"gradcam": {"road_morf": -0.6, "road_lerf": 0.2, "seconds": 0.1}, "eigencam": {"road_morf": -0.2}}
    metrics = with_road_combined(["road_morf", "road_lerf", "seconds"], table)
    assert metrics == ["road_morf", "road_lerf", "road_combined", "seconds"]
    assert table["gradcam"]["road_combined"] == pytest.approx(0.4)  # (0.2 - (-0.6)) / 2
    assert "road_combined" not in table["eigencam"]
    assert with_road_combined(["ehr_auc"], {}) == ["ehr_auc"]


def _sanity(method: str, ehr_auc: float, spearman: float) -> MethodSanity:
    return MethodSanity(method, ehr_auc, 0.01, 0.01, 0.005, spearman, 0, True)


def test_demo_verdict_is_computed_from_the_table_and_the_sanity_checks():
    table = {"gradcam": {"pointing_game": 1.0}, "hirescam": {"pointing_game": 0.5}, "eigencam": {"pointing_game": 1.0}}
    rows = [_sanity("gradcam", 0.5, 0.1), _sanity("hirescam", 0.5, 0.2), _sanity("eigencam", 0.04, 0.9)]
    assert verdict(table, rows) == (
        "Localise the lesion (pointing game >= 0.9, EHR-AUC >= 5x random maps): 1 of 3 (gradcam); not: hirescam "
        "(pointing game 0.50, EHR-AUC 50x), eigencam (pointing game 1.00, EHR-AUC 4x). Pass the randomisation check "
        "(top-down): 2 of 3 (gradcam, hirescam); not: eigencam (top-down 0.90)."
    )
    assert verdict({"gradcam": {"pointing_game": 1.0}}, rows[:1]) == (
        "Localise the lesion (pointing game >= 0.9, EHR-AUC >= 5x random maps): all 1. Pass the randomisation check "
        "(top-down): all 1."
    )


def _checked(method: str, **statistics: float) -> MethodSanity:
    """A row with further checks: eMPRT passes above 0, the others at most 0.5."""
    checks = {}
    for name, value in statistics.items():
        check = SanityCheck(name)
        passed = value > 0 if check == SanityCheck.EMPRT else value <= 0.5
        checks[check] = CheckVerdict(check, value, value, value, 0, passed)
    return MethodSanity(method, 0.5, 0.1, 0.01, 0.01, 0.1, 0, True, checks=checks)


def test_demo_verdict_names_the_checks_each_method_fails_and_the_checks_a_control_passes():
    table = {"gradcam": {"pointing_game": 1.0}, "eigencam": {"pointing_game": 1.0}}
    rows = [
        _checked("gradcam", top_down=0.15, bottom_up=0.0, emprt=1.1, random_logit=0.34),
        _checked("eigencam", top_down=0.91, bottom_up=0.75, emprt=0.73, random_logit=1.0),
        _checked("control_sobel", top_down=1.0, bottom_up=0.2, emprt=0.0, random_logit=1.0),
        _checked("control_random", top_down=1.0, bottom_up=1.0, emprt=-0.1, random_logit=1.0),
    ]
    assert verdict(table, rows).endswith(
        "Pass the randomisation checks (top-down, eMPRT and random logit; 2 controls fail each): 1 of 2 (gradcam); "
        "not: eigencam (top-down 0.91, random logit 1.00). bottom-up left out: control_sobel passes it."
    )
    # none passes: each failure is still named
    assert verdict({"eigencam": {"pointing_game": 0.5}}, rows[1:]) == (
        "Localise the lesion (pointing game >= 0.9, EHR-AUC >= 5x random maps): none of 1; all fail: eigencam "
        "(pointing game 0.50, EHR-AUC 50x). Pass the randomisation checks (top-down, eMPRT and random logit; 2 "
        "controls fail each): none of 1; all fail: eigencam (top-down 0.91, random logit 1.00). bottom-up left out: "
        "control_sobel passes it."
    )


def test_cli_phantom_writes_a_datalist(tmp_path):
    script = Path(sys.executable).parent / "monai-xai"
    finished = subprocess.run(
        [str(script), "phantom", str(tmp_path / "data"), "--n_cases", "4", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    datalist = json.loads((tmp_path / "data" / "datalist.json").read_text())
    cases = datalist["training"] + datalist["validation"] + datalist["test"]
    assert len(cases) == 4 and all((tmp_path / "data" / case["image"]).is_file() for case in cases)


@pytest.mark.slow
def test_explain_bundle_runs_the_overlays_in_process(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle")
    (run,) = explain_bundle(
        bundle,
        overlays=("explain", "xai_metrics"),
        xai_methods=["gradcam", "hirescam"],
        xai_target_layer="features.denseblock2",
        xai_metrics=["ehr_auc", "heat_diff"],
        xai_region_key="mask",
        xai_region_value=None,
        xai_output_dir=str(tmp_path / "xai"),
    )
    assert run.folder == tmp_path / "xai" and run.records.complete
    metrics, table = summary_rows(run.records)
    assert {"ehr_auc", "heat_diff", "seconds"} <= set(metrics)
    assert set(table) == {"gradcam", "hirescam"}
    assert all(0.0 <= table[method]["ehr_auc"] <= 1.0 for method in table)


def test_cli_sanity_checks_any_bundle_on_its_own_datalist(tmp_path):
    """`monai-xai sanity` on a bundle that is not a demo bundle (2D DenseNet, no explain.json), with its own data."""
    bundle = make_classification_bundle(tmp_path / "bundle")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"validation": json.loads((bundle / "data" / "datalist.json").read_text())}))
    figure = tmp_path / "sanity.png"
    options = {"methods": ["gradcam", "eigencam"], "target_layer": "features.denseblock2", "class_idx": 1}
    script = Path(sys.executable).parent / "monai-xai"
    finished = subprocess.run(
        [str(script), "sanity", str(bundle), "--datalist", str(datalist), "--data_list_key", "validation"]
        + [f"--{name}={json.dumps(value)}" for name, value in options.items()]
        + ["--figure", str(figure), "--progress", "False"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ") for line in finished.stdout.splitlines() if line.startswith("| ")
    }
    expected = bundle_sanity_checks(bundle, datalist=datalist, data_list_key="validation", progress=False, **options)
    for row in expected:
        assert rows[row.method][1] == f"{row.ehr_auc:.4f}" and rows[row.method][4].startswith(f"{row.spearman:.3f}")
    assert f"the 'validation' cases of {datalist}" in finished.stdout
    assert figure.stat().st_size > 0


def test_demo_says_what_each_bundle_explains():
    """The demo reads each bundle's own explain.json through ExplainSettings and says what it explains."""
    from monai_xai.bundle import ExplainSettings
    from monai_xai.demo import _what, bundles_dir

    def what(name: str) -> str:
        return _what(ExplainSettings.from_bundle(bundles_dir() / name, overlays=(), xai_methods=["gradcam"]))

    assert what("lesion_classification_3d") == "1 method at class_layers.relu, class 1 (logit)"
    assert (
        what("lesion_segmentation_3d")
        == "1 method at model.1.submodule, class 1 over the pixel set image (probability)"
    )
