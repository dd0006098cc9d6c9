"""A user's own bundle as it comes (#33): its network in its own ``scripts/`` package, an image-only datalist, output
channels named in its metadata, no ``logging.conf``, explained from another folder with every default overlay.

What must hold: the run succeeds; the region metrics are skipped and say so (console and summary.md), nothing else
fails; the chosen layer and the classes, by their metadata names, are shown on the console and in the results
folder; the descriptions name the class; the bundle's network also loads for the front doors that explain case by
case (study, sanity checks, MONAI Deploy), from any folder."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from monai_xai.bundle import load_trained_bundle, metadata_class_names
from monai_xai.sanity import bundle_sanity_checks
from tests.helpers.bundles import make_user_bundle
from tests.helpers.engines import REPO

pytestmark = pytest.mark.slow


def _explain(bundle, cwd, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "monai_xai.cli", "explain", str(bundle), *flags]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    bundle = make_user_bundle(tmp_path_factory.mktemp("user") / "bundle")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    tracking = f"sqlite:///{elsewhere / 'mlruns.db'}"
    run = _explain(bundle, elsewhere, "--xai_tracking_uri", tracking, "--xai_methods", "['gradcam','hirescam']")
    assert run.returncode == 0, run.stderr[-4000:]
    return bundle, run


def test_every_default_overlay_runs_image_only_and_says_what_it_skipped(explained):
    bundle, run = explained
    assert "region metrics ['ehr_auc', 'heat_diff', 'pointing_game'] were skipped" in run.stderr
    for name in ("Thalamus", "Caudate"):  # a segmenter without a class: one run per foreground class, by name
        folder = bundle / "eval" / "xai" / name
        summary = (folder / "summary.md").read_text()
        assert "**ehr_auc skipped**: 2 of 2 case(s) have no ground-truth region under 'label'" in summary
        with open(folder / "summary.csv") as stream:
            rows = {(row["metric"], row["method"]): row for row in csv.DictReader(stream)}
        assert rows[("ehr_auc", "gradcam")]["n"] == "0" and rows[("ehr_auc", "gradcam")]["n_skipped"] == "2"
        assert float(rows[("seconds", "hirescam")]["mean"]) > 0  # what needs no ground truth was computed
        assert (folder / "subject0" / "subject0_gradcam.nii.gz").is_file()


def test_the_chosen_layer_and_named_classes_are_shown_on_the_console_and_in_the_results(explained):
    bundle, run = explained
    layer = "`unet.model.1.submodule` (chosen: segmenter: the last decoder stage"
    assert f"layer: {layer}" in run.stdout
    assert "class(es): 1 (Thalamus)" in run.stdout and "class(es): 2 (Caudate)" in run.stdout
    summary = (bundle / "eval" / "xai" / "Thalamus" / "summary.md").read_text()
    assert f"Explained layer: {layer}" in summary
    assert "Explained class(es): 1 (Thalamus)." in summary
    with open(bundle / "eval" / "xai" / "Thalamus" / "descriptions.csv") as stream:
        texts = [row["text"] for row in csv.DictReader(stream)]
    assert texts and all(text.startswith("The map explains Thalamus.") for text in texts)


def test_no_metric_at_all_is_accepted(explained, tmp_path):
    bundle, _ = explained
    run = _explain(
        bundle, tmp_path, "--xai_metrics", "[]", "--xai_class", "1", "--xai_output_dir", str(tmp_path / "out"),
        "--xai_tracking_uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "skipped**" not in summary and "## ehr_auc" not in summary and "Explained class(es): 1 (Thalamus)" in summary


def test_case_by_case_front_doors_import_the_bundle_s_own_network(explained, tmp_path, monkeypatch):
    bundle, _ = explained
    monkeypatch.chdir(tmp_path)
    trained = load_trained_bundle(bundle)
    assert type(trained.network).__module__ == "scripts.net"
    assert metadata_class_names(bundle) == ["background", "Thalamus", "Caudate"]
    assert str(bundle) not in sys.path  # only while the bundle is read
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": json.loads((bundle / "data" / "datalist.json").read_text())}))
    summary = bundle_sanity_checks(
        bundle, datalist=str(datalist), data_list_key="test", methods=["gradcam"], class_idx=1, n_draws=2
    )
    assert summary is not None
    with torch.no_grad():
        assert trained.network(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
