"""Crafted image names through a whole bundle run (explain + metrics + report + MLflow): every output stays inside
the results folder, no case takes a file the run writes for itself, no two cases share a folder, every page links
only to files that exist, and MLflow holds every case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from monai_xai.naming import CASE_NAME_MAX
from tests.helpers.bundles import make_classification_bundle
from tests.helpers.engines import CONFIGS, run_bundle

pytestmark = pytest.mark.slow

# each a file name in the datalist (its stem is the case's name): a dot-only stem (the parent folder), the report's
# scratch folder, the tracking store, the run's own tables and index, LaTeX that breaks a plot title, a 240-character
# name, a script link, and two names that become one stem
HOSTILE = [
    "...nii.gz",
    ".report-parts.nii.gz",
    "mlflow.nii.gz",
    "cases.csv.nii.gz",
    "index.html.nii.gz",
    "$\\frac{a}{b}$.nii.gz",
    "x" * 240 + ".nii.gz",
    "javascript:alert(1)<!--.nii.gz",
    "a b.nii.gz",
    "a_b.nii.gz",
]


def test_crafted_case_names_stay_inside_and_apart(tmp_path):
    bundle = make_classification_bundle(tmp_path / "bundle", n_cases=len(HOSTILE), size=56)
    datalist_path = bundle / "data" / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    cases_dir = bundle / "data" / "hostile"
    cases_dir.mkdir()
    for case, name in zip(datalist, HOSTILE):
        target = cases_dir / name
        Path(case["image"]).rename(target)
        case["image"] = str(target)
    datalist_path.write_text(json.dumps(datalist))
    before = sorted(p.name for p in bundle.iterdir())

    out = bundle / "eval" / "xai"
    finished = run_bundle(
        [bundle / "configs" / "inference.json", CONFIGS / "explain.json", CONFIGS / "xai_metrics.json",
         CONFIGS / "mlflow.json"],
        "--xai_methods", "['gradcam']", "--xai_target_layer", "features.denseblock2", "--xai_class", "1",
        "--xai_metrics", "['ehr_auc']", "--xai_region_key", "mask", "--xai_region_value", "None",
        # MONAI reads "...nii.gz" with ITK (pathlib sees only ".gz"), whose 2D affine is 3x3, not nibabel's 4x4, and
        # cannot batch the two: one case per batch keeps this test about the names
        "--dataloader#batch_size", "1",
        cwd=bundle,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]

    # nothing outside the results folder: the bundle's top level and the data folder are as they were
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*before, "eval"])
    assert [p.name for p in (bundle / "eval").iterdir()] == ["xai"]
    assert sorted(p.name for p in cases_dir.iterdir()) == sorted(HOSTILE)
    # the run's own files are its own
    with open(out / "cases.csv") as stream:
        rows = list(csv.DictReader(stream))
    names = [row["case"] for row in rows]
    assert len(rows) == len(HOSTILE) and len(set(names)) == len(HOSTILE)
    assert (out / "index.html").read_text().startswith("<!doctype html>")
    assert not (out / ".report-parts").exists()  # the scratch folder went away; no case lost its files with it
    for name in names:
        assert name == Path(name).name and not name.startswith(".") and len(name) <= CASE_NAME_MAX
        folder = out / name
        assert folder.is_dir() and folder.resolve().parent == out.resolve()
        assert (folder / f"{name}_gradcam.nii.gz").is_file() and (folder / f"{name}_report.html").is_file()
    assert {"mlflow_case", "cases.csv_case", "index.html_case", "frac_a_b", "a_b", "a_b_1"} <= set(names)
    # every link of the index leads to a page on disk, inside the folder
    index = (out / "index.html").read_text()
    for row in rows:
        href = f"{row['case']}/{row['case']}_report.html"
        assert f'href="{href}"' in index and (out / href).is_file()
    assert "javascript:" not in index and "<!--" not in index

    # MLflow has every case's folder, the one named "mlflow" included
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("monai_xai").experiment_id])
    logged = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "xai")}
    assert set(names) <= logged, sorted(set(names) - logged)
    assert {"cases.csv", "index.html"} <= logged
