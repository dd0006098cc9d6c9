"""Each method's randomisation-check verdicts, from `monai-xai sanity` to the descriptions and MLflow: the verdicts file
(monai_xai.sanity.sanity_verdicts, read back strictly by monai_xai.describe.read_sanity_verdicts), the trust note that
names the checks a map failed, and the sanity run in MLflow (monai_xai.sanity.track_sanity)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.inferers import SimpleInferer

from monai_xai.cli import sanity
from monai_xai.describe import describe, read_sanity_verdicts
from monai_xai.describe.sanity_verdicts import MAX_VERDICTS_BYTES
from monai_xai.enums import SanityCheck
from monai_xai.handlers import explanation_writers
from monai_xai.inferers import XAIInferer
from monai_xai.sanity import MethodSanity, bundle_sanity_checks, sanity_verdicts, track_sanity
from monai_xai.sanity.trust import CheckVerdict
from tests.helpers.engines import case_dataset, make_evaluator
from tests.helpers.nets import TinyResNet

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER = REPO / "bundles" / "lesion_classification_3d"


def _row(method: str, **passed: bool) -> MethodSanity:
    checks = {
        SanityCheck(check): CheckVerdict(SanityCheck(check), 0.2 if ok else 0.9, 0.1, 0.95, 0, ok)
        for check, ok in passed.items()
    }
    return MethodSanity(method, 0.4, 0.3, 0.01, 0.02, 0.1, 0, True, checks=checks)


def test_read_sanity_verdicts_forms(tmp_path):
    assert read_sanity_verdicts(None) == {}
    # the older {method: passed} form is the top-down check
    assert read_sanity_verdicts({"gradcam": True, "eigencam": False}) == {
        "gradcam": {"top_down": True},
        "eigencam": {"top_down": False},
    }
    given = {"gradcam": {"top_down": True, "emprt": False}, "eigencam": {"random_logit": False}}
    assert read_sanity_verdicts(given) == given
    path = tmp_path / "sanity.json"
    path.write_text(json.dumps(given))
    assert read_sanity_verdicts(path) == given == read_sanity_verdicts(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"gradcam": "false"}, "must be true or false, got 'false'"),  # a string is not a verdict
        ({"gradcam": {"top-down": True}}, "check of 'gradcam' must be one of"),
        ({"gradcam": {"top_down": 1}}, "'gradcam' 'top_down' must be true or false"),
        (["gradcam"], "must map method names to verdicts, got list"),
        (None, "must map method names to verdicts, got NoneType"),
    ],
)
def test_malformed_verdicts_are_refused(tmp_path, content, message):
    path = tmp_path / "sanity.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_sanity_verdicts(path)


def test_verdicts_files_that_are_not_one_are_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        read_sanity_verdicts(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="is not a file"):
        read_sanity_verdicts(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"gradcam": ')
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_sanity_verdicts(broken)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"gradcam": True, "padding": " " * MAX_VERDICTS_BYTES}))
    with pytest.raises(ValueError, match="not a verdicts file"):
        read_sanity_verdicts(huge)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_sanity_verdicts(binary)


def test_trust_note_names_the_checks_a_map_failed_and_passed():
    saliency = torch.zeros(32, 32)
    saliency[10:16, 10:16] = 1.0
    failed = describe(saliency, method="eigencam", sanity_passed={"top_down": False, "emprt": True, "smprt": False})
    assert failed.text.endswith(
        "Caution: the eigencam map failed the randomisation checks top-down and sMPRT for this model; it may not "
        "depend on what the model learned. It passed eMPRT."
    )
    assert failed.sanity_passed is False and failed.sanity_failed == ("top_down", "smprt")
    assert failed.as_dict()["sanity_failed"] == "top_down; smprt"
    passed = describe(saliency, method="gradcam", sanity_passed={"bottom_up": True, "random_logit": True})
    assert passed.text.endswith(
        "The gradcam map passed the randomisation checks for this model: bottom-up and random logit."
    )
    assert passed.sanity_passed is True and passed.sanity_failed == ()
    one = describe(saliency, method="layercam", sanity_passed={"data": False})
    assert "failed the randomisation check data randomisation for this model" in one.text
    assert "It passed" not in one.text
    # the random-logit check asks whether the map follows the class, not the weights
    logit = describe(saliency, method="layercam", sanity_passed={"top_down": True, "random_logit": False})
    assert logit.text.endswith(
        "Caution: the layercam map failed the randomisation check random logit for this model; it may not tell the "
        "explained class from the others. It passed top-down."
    )
    both = describe(saliency, method="eigencam", sanity_passed={"top_down": False, "random_logit": False})
    assert "for this model; it may not depend on what the model learned; it may not tell the explained" in both.text
    # nothing known: no note; an empty mapping (every check left out as not discriminating) neither
    for unknown in (None, {}):
        described = describe(saliency, method="gradcam", sanity_passed=unknown)
        assert "randomisation" not in described.text and described.sanity_passed is None


def test_sanity_verdicts_leave_out_the_controls_and_checks_a_control_passes():
    rows = [
        _row("gradcam", top_down=True, smprt=True, emprt=True),
        _row("eigencam", top_down=False, smprt=False, emprt=True),
        _row("control_sobel", top_down=False, smprt=True, emprt=False),  # sMPRT does not discriminate here
        _row("control_random", top_down=False, smprt=False, emprt=False),
    ]
    assert sanity_verdicts(rows) == {
        "gradcam": {"top_down": True, "emprt": True},
        "eigencam": {"top_down": False, "emprt": True},
    }
    # without further checks: the top-down Spearman of the plain test (0.1 passes, 0.7 fails)
    plain = [
        MethodSanity("gradcam", 0.4, 0.3, 0.01, 0.02, 0.1, 0, True),
        MethodSanity("eigencam", *[0.5] * 4, 0.7, 0, False),
    ]
    assert sanity_verdicts(plain) == {"gradcam": {"top_down": True}, "eigencam": {"top_down": False}}


def test_sanity_tracking_to_an_unreachable_server_warns_and_loses_nothing():
    rows = [_row("gradcam", top_down=True)]
    with pytest.warns(UserWarning, match="MLflow tracking at http://127.0.0.1:9 is off for the sanity checks of demo"):
        assert track_sanity(rows, "http://127.0.0.1:9", {"bundle": "demo"}, "demo") is None


@pytest.mark.skipif(not (CLASSIFIER / "models" / "model.pt").is_file(), reason="demo weights not trained")
def test_monai_xai_sanity_writes_verdicts_and_tracks_them_and_the_descriptions_read_them(tmp_path):
    """`monai-xai sanity --verdicts_file --tracking_uri` on the demo classifier: the file holds each method's verdicts
    of the same run as bundle_sanity_checks (EigenCAM fails top-down and random logit, GradCAM passes); MLflow holds
    the settings, statistics, verdicts and tables; a run given the file as xai_sanity names the failed checks."""
    verdicts_file, database = tmp_path / "out" / "sanity.json", tmp_path / "mlruns.db"
    options = {"n_cases": 2, "n_draws": 2, "methods": ["gradcam", "eigencam"], "progress": False}
    checks = ["top_down", "emprt", "random_logit"]
    printed = sanity(
        str(CLASSIFIER),
        verdicts_file=str(verdicts_file),
        tracking_uri=f"sqlite:///{database}",
        checks=checks,
        **options,
    )
    rows = bundle_sanity_checks(CLASSIFIER, checks=checks, **options)
    written = json.loads(verdicts_file.read_text())
    assert written == sanity_verdicts(rows) and set(written) == {"gradcam", "eigencam"}
    assert written["gradcam"] == {"top_down": True, "emprt": True, "random_logit": True}
    assert not written["eigencam"]["top_down"] and not written["eigencam"]["random_logit"]
    assert f"Each method's verdicts (for --xai_sanity): {verdicts_file}" in printed
    assert "experiment 'monai_xai_sanity', run 'lesion_classification_3d'" in printed

    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    (run,) = client.search_runs([client.get_experiment_by_name("monai_xai_sanity").experiment_id])
    assert run.data.params["n_cases"] == "2" and run.data.params["non_discriminating"] == "none"
    assert run.data.params["checks"] == str(checks)
    eigencam = {row.method: row for row in rows}["eigencam"]
    metrics = run.data.metrics
    assert metrics["sanity.top_down.eigencam"] == pytest.approx(eigencam.checks[SanityCheck.TOP_DOWN].statistic)
    assert metrics["sanity_passed.top_down.eigencam"] == 0.0 and metrics["sanity_passed.top_down.gradcam"] == 1.0
    assert metrics["sanity_spearman.eigencam"] == pytest.approx(eigencam.spearman)
    assert metrics["sanity_passed.emprt.control_random"] == 0.0  # the controls' rows are tracked too
    artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    assert json.loads((artifacts / "sanity_verdicts.json").read_text()) == written
    assert "| control_sobel (control: must fail) |" in (artifacts / "sanity.md").read_text()

    network = TinyResNet(spatial_dims=2, num_classes=3).eval()
    inferer = XAIInferer(SimpleInferer(), "layer4", ["gradcam", "eigencam"])
    results = tmp_path / "explained"
    writers = explanation_writers(results, ["gradcam", "eigencam"], sanity=str(verdicts_file))
    make_evaluator(network, case_dataset(torch.randn(1, 1, 16, 16)), inferer, [inferer, *writers]).run()
    with open(results / "descriptions.csv", newline="") as table:
        described = {row["method"]: row for row in csv.DictReader(table)}
    assert (
        "Caution: the eigencam map failed the randomisation checks top-down and random logit"
        in (described["eigencam"]["text"])
    )
    assert described["eigencam"]["sanity_passed"] == "False"
    assert described["eigencam"]["sanity_failed"] == "top_down; random_logit"
    assert described["gradcam"]["text"].endswith(
        "The gradcam map passed the randomisation checks for this model: top-down, eMPRT and random logit."
    )


def test_a_verdicts_file_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="--verdicts_file .* cannot be written"):
        sanity(str(CLASSIFIER), verdicts_file=str(blocker / "sanity.json"), n_cases=1)
