"""Tiny bundles in MONAI model-zoo layout (random weights, synthetic NIfTI volumes) for the config-overlay tests.

``make_segmentation_bundle``: 3D UNet, 16^3 volumes, ``SlidingWindowInferer``, a bright cube labelled 1.
``make_classification_bundle``: 2D DenseNet classifier, 32^2 images, ``SimpleInferer``, a lesion ``mask`` key.
``make_spleen_style_bundle``: ``spleen_ct_segmentation``'s inference.json on a synthetic CT stored LPS with 0.8 x 0.8 x
2.5 mm voxels: RAS reorientation, resampling to 1.5 x 1.5 x 2 mm, HU window, predictions inverted to the CT's grid.
``make_user_bundle``: a user's own bundle as it comes: its network in its own ``scripts/`` package, an image-only
datalist, output channels named in its metadata, no ``logging.conf``.
All follow the inference.json layout of e.g. ``spleen_ct_segmentation``: ``network_def``, ``network``,
``preprocessing``, ``dataset``, ``dataloader``, ``inferer``, ``postprocessing``, ``handlers`` (with a
``CheckpointLoader``), ``evaluator`` (``SupervisedEvaluator``), ``initialize``, ``run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

__all__ = [
    "make_segmentation_bundle",
    "make_classification_bundle",
    "make_spleen_style_bundle",
    "make_user_bundle",
    "write_volume",
]


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Write a NIfTI image with a diagonal affine of the given spacing and a non-zero origin."""
    affine = np.diag([*spacing, *([1.0] * (3 - len(spacing))), 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _common(
    bundle: Path,
    network_def: dict,
    inferer: dict,
    keys: list[str],
    postprocessing: list[dict],
    intensity: dict | None = None,
    spatial: list[dict] = (),
) -> dict:
    intensity = intensity or {"_target_": "ScaleIntensityd", "keys": "image"}
    return {
        "imports": ["$import glob", "$import json"],
        "bundle_root": str(bundle),
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "datalist": "$json.load(open(@dataset_dir + '/datalist.json'))",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": keys, "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": keys},
                *spatial,
                intensity,
                {"_target_": "EnsureTyped", "keys": keys},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 2, "num_workers": 0},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _write_bundle(bundle: Path, config: dict, network: torch.nn.Module, task: str, outputs: dict | None = None) -> Path:
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "models").mkdir(exist_ok=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    metadata = {"version": "0.1.0", "task": task, "network_data_format": {"inputs": {}, "outputs": outputs or {}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


def make_segmentation_bundle(bundle: Path, n_cases: int = 2, size: int = 16) -> Path:
    """3D segmentation bundle; each case has a bright cube (label 1) at a different place, spacing (1.5, 1.5, 2)."""
    from monai.networks.nets import UNet

    network_def = {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8, 16],
        "strides": [2, 2],
    }
    data_dir = bundle / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    datalist = []
    for case in range(n_cases):
        image = rng.normal(0.0, 0.1, (size,) * 3).astype(np.float32)
        label = np.zeros((size,) * 3, dtype=np.uint8)
        start = 2 + 3 * case
        label[start : start + 6, 4:10, 5:11] = 1
        image[label > 0] += 1.0
        write_volume(data_dir / f"img{case}.nii.gz", image, (1.5, 1.5, 2.0))
        write_volume(data_dir / f"lbl{case}.nii.gz", label, (1.5, 1.5, 2.0))
        datalist.append({"image": str(data_dir / f"img{case}.nii.gz"), "label": str(data_dir / f"lbl{case}.nii.gz")})
    (data_dir / "datalist.json").write_text(json.dumps(datalist))
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [size] * 3, "sw_batch_size": 1, "overlap": 0.25}
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    config = _common(bundle, network_def, inferer, ["image", "label"], postprocessing)
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in network_def.items() if k != "_target_"})
    return _write_bundle(bundle, config, network, "synthetic 3D segmentation")


def make_classification_bundle(bundle: Path, n_cases: int = 4, size: int = 32) -> Path:
    """2D classification bundle (3 classes); each image has a bright square, given as the ``mask`` key."""
    from monai.networks.nets import DenseNet

    network_def = {
        "_target_": "DenseNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 3,
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [2, 2],
        "bn_size": 2,
    }
    data_dir = bundle / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    datalist = []
    for case in range(n_cases):
        image = rng.normal(0.0, 0.1, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), dtype=np.uint8)
        start = 4 + 5 * case
        mask[start : start + 8, 6:14] = 1
        image[mask > 0] += 1.0
        write_volume(data_dir / f"img{case}.nii.gz", image, (0.8, 0.8))
        write_volume(data_dir / f"mask{case}.nii.gz", mask, (0.8, 0.8))
        datalist.append(
            {
                "image": str(data_dir / f"img{case}.nii.gz"),
                "mask": str(data_dir / f"mask{case}.nii.gz"),
                "label": case % 3,
            }
        )
    (data_dir / "datalist.json").write_text(json.dumps(datalist))
    postprocessing = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    config = _common(bundle, network_def, {"_target_": "SimpleInferer"}, ["image", "mask"], postprocessing)
    torch.manual_seed(0)
    network = DenseNet(**{k: v for k, v in network_def.items() if k != "_target_"})
    return _write_bundle(bundle, config, network, "synthetic 2D classification")


def make_spleen_style_bundle(
    bundle: Path, n_cases: int = 1, classes: tuple[str, ...] = ("background", "spleen")
) -> Path:
    """The preprocessing and postprocessing of model-zoo ``spleen_ct_segmentation``'s inference.json (random UNet
    weights): a 40 x 36 x 12 CT at 0.8 x 0.8 x 2.5 mm stored with an LPS affine (x and y flipped, off-centre origin),
    a bright "spleen" in it; the bundle saves its argmax prediction on the CT's grid (``eval/<case>/<case>_seg``).
    Its metadata names the output channels ``classes`` as the model zoo's do (``channel_def``)."""
    from monai.networks.nets import UNet

    network_def = {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": len(classes),
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
    }
    data_dir = bundle / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [60.0, 40.0, -80.0]
    datalist = []
    for case in range(n_cases):
        image = rng.normal(40.0, 20.0, (40, 36, 12)).astype(np.float32)
        image[8 + 3 * case : 22 + 3 * case, 10:24, 3:9] += 100.0
        nib.save(nib.Nifti1Image(image, affine), str(data_dir / f"ct{case}.nii.gz"))
        datalist.append({"image": str(data_dir / f"ct{case}.nii.gz")})
    (data_dir / "datalist.json").write_text(json.dumps(datalist))
    spatial = [
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
    ]
    intensity = {
        "_target_": "ScaleIntensityRanged",
        "keys": "image",
        "a_min": -57,
        "a_max": 164,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.25}
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "resample": False,
        },
    ]
    config = _common(bundle, network_def, inferer, ["image"], postprocessing, intensity, spatial)
    torch.manual_seed(0)
    network = UNet(**{k: v for k, v in network_def.items() if k != "_target_"})
    outputs = {
        "pred": {
            "type": "image",
            "format": "segmentation",
            "num_channels": len(classes),
            "spatial_shape": [16, 16, 16],
            "channel_def": {str(index): name for index, name in enumerate(classes)},
        }
    }
    return _write_bundle(bundle, config, network, "synthetic spleen-style CT segmentation", outputs)


USER_NETWORK = """
import torch
from monai.networks.nets import UNet


class TinyParcellator(torch.nn.Module):
    \"\"\"The bundle's own network (a MONAI UNet inside), importable only with the bundle root on sys.path.\"\"\"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.unet = UNet(3, 1, num_classes, (4, 8, 16), (2, 2), num_res_units=1)

    def forward(self, x):
        return self.unet(x)
"""


def make_user_bundle(
    bundle: Path, n_cases: int = 2, classes: tuple[str, ...] = ("background", "Thalamus", "Caudate")
) -> Path:
    """A user's bundle as it comes: ``scripts/net.py`` defines the network (``scripts.net.TinyParcellator``), the
    datalist has images only (inference without ground truth), the metadata names the output channels
    (``channel_def``), there is no ``configs/logging.conf``; 16^3 volumes with two bright blobs, ``SimpleInferer``."""
    (bundle / "scripts").mkdir(parents=True, exist_ok=True)
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "net.py").write_text(USER_NETWORK)
    data_dir = bundle / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    datalist = []
    for case in range(n_cases):
        image = rng.normal(0.0, 0.1, (16, 16, 16)).astype(np.float32)
        image[3 + case : 8 + case, 4:9, 5:10] += 1.0
        image[10:14, 9:13, 8 - case : 12 - case] += 0.6
        write_volume(data_dir / f"subject{case}.nii.gz", image, (1.0, 1.0, 1.0))
        datalist.append({"image": str(data_dir / f"subject{case}.nii.gz")})
    (data_dir / "datalist.json").write_text(json.dumps(datalist))
    network_def = {"_target_": "scripts.net.TinyParcellator", "num_classes": len(classes)}
    postprocessing = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    config = _common(bundle, network_def, {"_target_": "SimpleInferer"}, ["image"], postprocessing)
    torch.manual_seed(0)
    network = torch.nn.Module()
    from monai.networks.nets import UNet

    network.unet = UNet(3, 1, len(classes), (4, 8, 16), (2, 2), num_res_units=1)
    outputs = {
        "pred": {
            "type": "image",
            "format": "segmentation",
            "num_channels": len(classes),
            "spatial_shape": [16, 16, 16],
            "channel_def": {str(index): name for index, name in enumerate(classes)},
        }
    }
    return _write_bundle(bundle, config, network, "a user's parcellation bundle", outputs)
