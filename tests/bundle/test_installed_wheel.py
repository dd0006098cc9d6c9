"""monai-xai as a user installs it: a wheel in a fresh virtual environment, far from the repository.

The wheel is built from this checkout and installed (without dependencies) into a new venv whose only other packages
are this environment's site-packages, added by a ``.pth`` line (so torch, MONAI and MLflow need no download, and the
checkout's editable install is not active there). Then ``monai-xai explain`` runs a demo bundle copied to a temporary
folder, from that folder: every overlay it layers must come from the installed package.
"""

from __future__ import annotations

import csv
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers.engines import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the monai-xai wheel installed; returns its ``bin`` folder."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = root.glob("monai_xai-*.whl")
    environment = root / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    bin_dir = environment / "bin"
    (target,) = (environment / "lib").glob("python*/site-packages")
    (target / "monai_xai_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return bin_dir


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_the_installed_package_is_used_and_ships_its_overlays(installed, tmp_path):
    probe = (
        "import monai_xai, monai_xai.bundle as b; print(monai_xai.__file__); print(b.overlay_dir()); "
        "print(sorted(p.name for p in b.overlay_dir().glob('*.json')))"
    )
    finished = subprocess.run(
        [str(installed / "python"), "-c", probe], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    module, overlays, names = finished.stdout.splitlines()
    assert Path(module).is_relative_to(installed.parent) and not Path(module).is_relative_to(REPO)
    assert Path(overlays).is_relative_to(installed.parent)
    assert names == str(["bundle_metadata_schema.json", "explain.json", "mlflow.json", "xai_metrics.json"])


def test_monai_xai_explain_runs_a_bundle_copied_elsewhere(installed, tmp_path):
    bundle = tmp_path / "my_bundles" / "lesion_classification_3d"
    shutil.copytree(REPO / "bundles" / "lesion_classification_3d", bundle, ignore=shutil.ignore_patterns("eval"))
    out = tmp_path / "xai"
    finished = subprocess.run(
        [
            str(installed / "monai-xai"), "explain", str(bundle),
            "--dataset_dir", str(tmp_path / "data"),
            "--phantom", "{'n_cases': 2, 'seed': 11, 'positive_fraction': 1.0, 'split': [0.0, 0.0, 1.0]}",
            "--xai_methods", "['gradcam','hirescam']",
            "--xai_metrics", "['ehr_auc','heat_diff']",
            "--xai_output_dir", str(out),
            "--output_dir", str(tmp_path / "predictions"),
        ],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    with open(out / "summary.csv") as stream:
        rows = {(row["metric"], row["method"]): row for row in csv.DictReader(stream)}
    for method in ("gradcam", "hirescam"):
        assert 0.0 <= float(rows[("ehr_auc", method)]["mean"]) <= 1.0 and rows[("ehr_auc", method)]["n"] == "2"
    assert len(list(out.glob("case_*/case_*_gradcam.nii.gz"))) == 2
    assert (out / "mlflow" / "mlruns.db").is_file()
    # the run layered the installed overlays (MONAI logs the config files it parses), not the checkout's
    (site_packages,) = (installed.parent / "lib").glob("python*/site-packages")
    assert str(site_packages / "monai_xai" / "configs" / "explain.json") in finished.stderr
    assert str(REPO / "monai_xai" / "configs") not in finished.stderr
