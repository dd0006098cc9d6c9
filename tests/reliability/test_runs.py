"""Bundle runs keep what they computed: a bad case is skipped and named, results are never mixed between runs, the
results folder is checked before any work, and a map file is either complete or absent."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_xai.handlers.results_dir import RESULTS_MARKER, prepare_results_dir
from monai_xai.handlers.saliency_writer import write_map
from tests.helpers.bundles import make_classification_bundle
from tests.helpers.engines import CONFIGS, REPO, run_bundle

pytestmark = pytest.mark.slow

OVERLAYS = [CONFIGS / "explain.json", CONFIGS / "xai_metrics.json"]
FLAGS = (
    "--xai_methods", "['gradcam']", "--xai_target_layer", "features.denseblock2", "--xai_class", "1",
    "--xai_metrics", "['ehr_auc']", "--xai_region_key", "mask", "--xai_region_value", "None",
)  # fmt: skip


def explain(bundle: Path, *flags: str) -> subprocess.CompletedProcess:
    return run_bundle([bundle / "configs" / "inference.json", *OVERLAYS], *FLAGS, *flags, cwd=bundle)


def damage(bundle: Path, how: dict[int, str]) -> dict[int, str]:
    """Break cases of the bundle's datalist in place; returns the file each broken case names."""
    datalist_path = bundle / "data" / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    named = {}
    for index, kind in how.items():
        case = datalist[index]
        if kind == "truncated":
            image = Path(case["image"])
            image.write_bytes(image.read_bytes()[:300])
            named[index] = case["image"]
        elif kind == "missing mask":
            case["mask"] = str(bundle / "data" / "no_such_mask.nii.gz")
            named[index] = case["mask"]
        elif kind == "directory":
            case["image"] = str(bundle / "data")
            named[index] = case["image"]
    datalist_path.write_text(json.dumps(datalist))
    return named


def rows(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_bad_cases_are_skipped_named_and_listed(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=6)  # batches of 2: bad and good cases mixed
    named = damage(bundle, {1: "truncated", 2: "missing mask", 4: "directory"})
    finished = explain(bundle)
    assert finished.returncode == 0, finished.stderr[-3000:]
    for file in named.values():
        assert file in finished.stderr  # the warning names the file
    out = bundle / "eval" / "xai"
    explained = {row["case"] for row in rows(out / "cases.csv")}
    assert explained == {"img0", "img3", "img5"}
    failed = rows(out / "failed_cases.csv")
    assert {row["case"] for row in failed} == {"img1.nii.gz", "img2.nii.gz", "data"}
    assert all(row["reason"] for row in failed)
    summary = (out / "summary.md").read_text()
    assert "3 case(s) could not be read and were skipped" in summary and "- img1.nii.gz: " in summary
    assert {row["n"] for row in rows(out / "summary.csv") if row["metric"] == "ehr_auc"} == {"3"}

    # strict: the same run ends with an error, after writing its tables
    strict = explain(bundle, "--xai_strict", "true", "--xai_overwrite", "true")
    assert strict.returncode != 0 and "strict=True (xai_strict) was asked" in strict.stderr
    assert len(rows(out / "failed_cases.csv")) == 3 and len(rows(out / "cases.csv")) == 3


def test_a_run_where_every_case_fails_exits_with_an_error(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=2)
    damage(bundle, {0: "truncated", 1: "directory"})
    finished = explain(bundle)
    assert finished.returncode != 0
    assert "2 case(s) could not be read" in finished.stderr and "no case could be explained" in finished.stderr
    assert len(rows(bundle / "eval" / "xai" / "failed_cases.csv")) == 2


def test_runs_never_mix_and_the_folder_is_checked_first(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=2)
    out = bundle / "eval" / "xai"
    assert explain(bundle).returncode == 0
    (out / "img0" / "stale_from_the_first_run.txt").write_text("x")
    second = explain(bundle)
    assert second.returncode != 0 and "holds the results of an earlier run" in second.stderr
    assert "explaining" not in second.stderr  # refused before the first case
    replaced = explain(bundle, "--xai_overwrite", "true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert not (out / "img0" / "stale_from_the_first_run.txt").exists() and (out / "img0").is_dir()
    empty = explain(bundle, "--xai_output_dir", "''")
    assert empty.returncode != 0 and "output_dir is empty" in empty.stderr


def test_results_folder_rules(tmp_path):
    assert prepare_results_dir(tmp_path / "new") == (tmp_path / "new").resolve()
    assert (tmp_path / "new" / RESULTS_MARKER).is_file()
    (tmp_path / "new" / "case").mkdir()
    (tmp_path / "new" / "mlflow").mkdir()  # the tracking store outlives runs
    with pytest.raises(ValueError, match="holds the results of an earlier run"):
        prepare_results_dir(tmp_path / "new")
    prepare_results_dir(tmp_path / "new", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [RESULTS_MARKER, "mlflow"]
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not monai-xai results"):
        prepare_results_dir(tmp_path / "home", overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").exists()
    with pytest.raises(ValueError, match="is a file"):
        prepare_results_dir(tmp_path / "home" / "thesis.tex")
    for empty in ("", "  ", None):
        with pytest.raises(ValueError, match="the results folder is empty"):
            prepare_results_dir(empty)


def _map(size: int) -> MetaTensor:
    return MetaTensor(torch.rand(1, size, size, size), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))


def test_a_failed_write_is_an_error_and_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "case_gradcam.nii.gz"
    write_map(_map(8), path)
    saved = nib.load(path)
    assert saved.shape == (8, 8, 8) and np.allclose(saved.affine[0, 0], 2.0)

    def disk_full(image, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x1f\x8b partial")  # what a full disk leaves behind
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        write_map(_map(8), tmp_path / "other_gradcam.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_gradcam.nii.gz"]


def test_a_killed_writer_leaves_no_truncated_map(tmp_path):
    """SIGKILL while a large map is being compressed: its name never holds a partial file."""
    script = (
        "import sys, torch; from monai.data import MetaTensor; "
        "from monai_xai.handlers.saliency_writer import write_map; from pathlib import Path; "
        "print('writing', flush=True); write_map(MetaTensor(torch.rand(1, 320, 320, 320)), Path(sys.argv[1]))"
    )
    target = tmp_path / "big_gradcam.nii.gz"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, env=env, text=True)
    assert process.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big_gradcam.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".big_gradcam.partial-*")), "the write never started"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not target.exists()
