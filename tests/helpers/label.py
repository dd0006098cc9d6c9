"""MONAI Label test helpers: tmp copies of the demo bundles with known weights, and how to start a real server.

Bundles (tmp copies of ``bundles/``, the repository's bundles are never written):

- ``lesion_segmentation_3d``: its ``network_def`` is replaced by a 1x1x1 convolution set by hand, logits
  ``(0, GAIN * (intensity - THRESHOLD))``: voxels brighter than ``THRESHOLD`` are "lesion" and the class-1 CAM of the
  ``conv`` layer grows with intensity, so its hottest voxels are the brightest ones. Test phantoms make lesions the
  brightest structure (high contrast, no distractors), so the hottest region must lie on the lesion.
- ``lesion_classification_3d``: the bundle's own DenseNet with random weights (checks geometry and values only).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

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


def write_intensity_segmentation_bundle(destination: Path) -> None:
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


def write_random_weights_bundle(name: str, destination: Path) -> Path:
    """A copy of the demo bundle ``name`` with its own network and random (seeded) weights."""
    bundle = _copy_bundle(name, destination)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def server_command() -> list[str]:
    """The ``monailabel`` launcher of this environment (a bash script running ``$MONAILABEL_PYEXE -m ...``)."""
    launcher = Path(sys.executable).parent / "monailabel"
    return [str(launcher)] if launcher.exists() else [sys.executable, "-m", "monailabel.main"]
