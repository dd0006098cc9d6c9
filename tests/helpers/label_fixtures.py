"""Fixtures for the MONAI Label tests (tests/label, tests/reliability): the test bundles, a studies folder and a real
server (see ``tests/helpers/label.py``); registered for the whole suite by ``pytest_plugins`` in tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import pytest

from monai_xai.data import generate_phantom, write_phantom_dataset
from tests.helpers.label import (
    CH2,
    CLASSIFICATION,
    PHANTOM_AFFINE,
    PHANTOM_SHAPE,
    SAMPLE_APP,
    SEGMENTATION,
    SERVER_START_TIMEOUT_S,
    server_command,
    write_intensity_segmentation_bundle,
    write_random_weights_bundle,
)
from tests.helpers.servers import free_port, running_server


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the two test bundles (see the module docstring)."""
    destination = tmp_path_factory.mktemp("bundles")
    write_intensity_segmentation_bundle(destination)
    write_random_weights_bundle(CLASSIFICATION, destination)
    return destination


@pytest.fixture(scope="session")
def studies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Studies: ``case_000`` (a phantom written by ``write_phantom_dataset``, the bundles' own grid) and
    ``phantom_lesion`` (bright lesion, no distractors, on the unusual grid ``PHANTOM_AFFINE``); its mask is
    ``masks/phantom_lesion.nii.gz`` next to the studies folder."""
    root = tmp_path_factory.mktemp("label_data")
    studies = root / "studies"
    studies.mkdir()
    write_phantom_dataset(root / "dataset", n_cases=1, seed=3, positive_fraction=1.0)
    shutil.copy(root / "dataset" / "images" / "case_000.nii.gz", studies / "case_000.nii.gz")
    case = generate_phantom(
        11,
        shape=PHANTOM_SHAPE,
        spacing=(1.2, 0.9, 2.0),
        num_lesions=1,
        lesion_radius_mm=(5.0, 6.0),
        lesion_contrast=(0.45, 0.5),
        distractor_probability=0.0,
    )
    nib.save(nib.Nifti1Image(case.image, PHANTOM_AFFINE), studies / "phantom_lesion.nii.gz")
    (root / "masks").mkdir()
    nib.save(nib.Nifti1Image(case.mask, PHANTOM_AFFINE), root / "masks" / "phantom_lesion.nii.gz")
    if CH2.exists():
        shutil.copy(CH2, studies / "ch2.nii.gz")
    return studies


@pytest.fixture(scope="module")
def unet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp copy of the segmentation bundle with its own UNet and random weights."""
    return write_random_weights_bundle(SEGMENTATION, tmp_path_factory.mktemp("unet"))


@pytest.fixture(scope="module")
def label_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp copy of the sample app (MONAI Label writes into its app folder; uploads go to its ``tmp/``)."""
    app = tmp_path_factory.mktemp("app") / "sample_app"
    shutil.copytree(SAMPLE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
    return app


@pytest.fixture(scope="module")
def server(label_app_dir: Path, bundles_dir: Path, studies_dir: Path) -> Iterator[str]:
    """A real ``monailabel start_server`` on 127.0.0.1 serving ``label_app_dir``; yields its base URL."""
    app = label_app_dir
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = app.parent / "server.log"
    command = [
        *server_command(),
        "start_server",
        *("--app", str(app), "--studies", str(studies_dir)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--uvicorn_app", "monai_xai.label.server:app"),
        *("--conf", "bundles", str(bundles_dir)),
        *("--conf", "explain_methods", "gradcam,hirescam,eigencam"),
        *("--conf", "max_upload_mb", "8"),
        *("--conf", "zoo_source", "github", "--conf", "sam2", "false"),
    ]
    env = {
        **os.environ,
        "MONAILABEL_PYEXE": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    with running_server(command, f"{url}/info/", log_path, SERVER_START_TIMEOUT_S, env=env, cwd=app.parent):
        yield url
