"""Fixtures for the MONAI Label tests: tmp copies of the demo bundles with known weights, a studies folder, a server.

Bundles (tmp copies of ``bundles/``, the repository's bundles are never written):

- ``lesion_segmentation_3d``: its ``network_def`` is replaced by a 1x1x1 convolution set by hand, logits
  ``(0, GAIN * (intensity - THRESHOLD))``: voxels brighter than ``THRESHOLD`` are "lesion" and the class-1 CAM of the
  ``conv`` layer grows with intensity, so its hottest voxels are the brightest ones. Test phantoms make lesions the
  brightest structure (high contrast, no distractors), so the hottest region must lie on the lesion.
- ``lesion_classification_3d``: the bundle's own ResNet with random weights (checks geometry and values only).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monai.bundle import ConfigParser

from monai_xai.data import generate_phantom, write_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = REPO / "monai_xai" / "label" / "sample_app"
CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
SEGMENTATION, CLASSIFICATION = "lesion_segmentation_3d", "lesion_classification_3d"
GAIN, THRESHOLD = 20.0, 0.8
SERVER_START_TIMEOUT_S = 120

# Voxel-to-world affine of the test phantom: axes permuted and one flipped (not RAS, so the bundle's Orientationd
# reorders it), spacings unlike the bundle's (1, 1, 1.5), origin off-centre.
PHANTOM_SHAPE = (40, 56, 32)
PHANTOM_AFFINE = np.array(
    [
        [0.0, 0.9, 0.0, -25.0],
        [-1.2, 0.0, 0.0, 24.0],
        [0.0, 0.0, 2.0, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def intensity_segmenter_state() -> dict[str, torch.Tensor]:
    """State dict of ``monai.networks.blocks.Convolution(3, 1, 2, kernel_size=1, conv_only=True)`` set by hand."""
    weight = torch.tensor([0.0, GAIN]).reshape(2, 1, 1, 1, 1)
    bias = torch.tensor([0.0, -GAIN * THRESHOLD])
    return {"conv.weight": weight, "conv.bias": bias}


def _copy_bundle(name: str, destination: Path) -> Path:
    bundle = destination / name
    shutil.copytree(REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    (bundle / "models").mkdir()
    return bundle


def _write_intensity_segmentation_bundle(destination: Path) -> None:
    bundle = _copy_bundle(SEGMENTATION, destination)
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["network_def"] = {
        "_target_": "monai.networks.blocks.Convolution",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 1,
        "conv_only": True,
    }
    config_path.write_text(json.dumps(config, indent=4))
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["cam_target_layers"] = {"conv": "the only layer: logits (0, gain * (intensity - threshold))"}
    metadata_path.write_text(json.dumps(metadata, indent=4))
    # the demo's explain.json recommends layers of its UNet, which this network does not have
    (bundle / "configs" / "explain.json").unlink()
    torch.save(intensity_segmenter_state(), bundle / "models" / "model.pt")


def _write_random_classification_bundle(destination: Path) -> None:
    bundle = _copy_bundle(CLASSIFICATION, destination)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the two test bundles (see the module docstring)."""
    destination = tmp_path_factory.mktemp("bundles")
    _write_intensity_segmentation_bundle(destination)
    _write_random_classification_bundle(destination)
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_command() -> list[str]:
    """The ``monailabel`` launcher of this environment (a bash script running ``$MONAILABEL_PYEXE -m ...``)."""
    launcher = Path(sys.executable).parent / "monailabel"
    return [str(launcher)] if launcher.exists() else [sys.executable, "-m", "monailabel.main"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundles_dir: Path, studies_dir: Path) -> Iterator[str]:
    """A real ``monailabel start_server`` on 127.0.0.1 serving a tmp copy of the sample app; yields its base URL."""
    app = tmp_path_factory.mktemp("app") / "sample_app"
    shutil.copytree(SAMPLE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = app.parent / "server.log"
    command = [
        *_server_command(),
        "start_server",
        *("--app", str(app), "--studies", str(studies_dir)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--conf", "bundles", str(bundles_dir)),
        *("--conf", "explain_methods", "gradcam,hirescam,eigencam"),
        *("--conf", "zoo_source", "github", "--conf", "sam2", "false"),
    ]
    env = {
        **os.environ,
        "MONAILABEL_PYEXE": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=app.parent)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"monailabel start_server exited with {process.returncode}; log:\n{_tail(log_path)}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"monailabel start_server did not answer /info/ in {SERVER_START_TIMEOUT_S} s; log:\n"
                    f"{_tail(log_path)}"
                )
            time.sleep(1.0)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
