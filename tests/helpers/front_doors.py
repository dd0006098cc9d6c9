"""Two bundles in model-zoo layout that every front door can serve, for the test that they all explain alike.

- ``classifier``: the demo classifier's network (3D DenseNet with LP pooling) and its trained weights, explaining each
  case's predicted class with ``gradcam`` and ``hirescam``.
- ``segmenter``: a three-class 3D UNet (seeded random weights) behind a ``SlidingWindowInferer`` whose window is
  smaller than the volumes, explaining classes 1 and 2 together (``"1+2"``) over every voxel with the class
  probabilities (their expected volume: no arg max, so no map depends on which way a tied voxel falls).

Both read the same held-out phantoms (``data/datalist.json``, ``test`` list, the lesion mask under ``mask``) with a
preprocessing that keeps each file's grid (load, channel first, intensity clip), so maps on the original grid, on the
network's grid and on MONAI Label's loaded grid are voxel for voxel the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_xai.data import write_phantom_dataset

__all__ = ["BUNDLES", "DATA", "METHODS", "METRICS", "WINDOW", "write_front_door_bundles"]

REPO = Path(__file__).resolve().parents[2]
METHODS = ("gradcam", "hirescam")
# deterministic metrics (ROAD's imputation noise would differ between doors that seed it differently)
METRICS = ("ehr_auc", "heat_diff", "pointing_game", "deletion")
METRIC_ARGS = {"deletion": {"steps": 4}, "pointing_game": {"tolerance": 2}}
WINDOW = {"roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25, "mode": "gaussian"}
DATA = "data"
BUNDLES = ("classifier", "segmenter")
_UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2]}


def _inference(network_def: dict, inferer: dict, extra: dict) -> dict:
    keys = ["image", "mask"]
    return {
        "imports": ["$import json", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/../data'",
        "device": "$torch.device('cpu')",
        **extra,
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "datalist": (
            "$[{k: os.path.join(@dataset_dir, v) for k, v in case.items() if k in ('image', 'mask')} "
            "for case in json.load(open(os.path.join(@dataset_dir, 'datalist.json')))['test']]"
        ),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": keys, "allow_missing_keys": True},
                {"_target_": "EnsureChannelFirstd", "keys": keys, "allow_missing_keys": True},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": 0.0,
                    "a_max": 1.0,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": keys, "allow_missing_keys": True},
            ],
        },  # fmt: skip
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 2, "num_workers": 0},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": []},
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            },
        ],  # fmt: skip
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _metadata(name: str, channels: list[str], segmentation: bool) -> dict:
    output = {
        "type": "image" if segmentation else "probabilities",
        "format": "segmentation" if segmentation else "classes",
        "num_channels": len(channels),
        "spatial_shape": [48, 48, 48] if segmentation else [],
        "dtype": "float32",
        "channel_def": {str(index): channel for index, channel in enumerate(channels)},
    }
    return {
        "name": name,
        "version": "0.1.0",
        "task": "front-door test",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": 1,
                    "spatial_shape": [48] * 3,
                    "dtype": "float32",
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {"pred": output},
        },  # fmt: skip
    }


def _explain(layer: str, class_idx: int | str | None, names: list[str], pixel_set: str, score: str) -> dict:
    return {
        "xai_methods": list(METHODS),
        "xai_target_layer": layer,
        "xai_class": class_idx,
        "xai_class_names": names,
        "xai_pixel_set": pixel_set,
        "xai_score": score,
        "xai_metrics": list(METRICS),
        "xai_metric_args": METRIC_ARGS,
        "xai_region_key": "mask",
        "xai_region_value": None,
    }


def _write(bundle: Path, inference: dict, metadata: dict, explain: dict, state: dict) -> Path:
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    for name, content in (("inference", inference), ("metadata", metadata), ("explain", explain)):
        (bundle / "configs" / f"{name}.json").write_text(json.dumps(content, indent=2))
    torch.save(state, bundle / "models" / "model.pt")
    return bundle


def write_front_door_bundles(root: Path) -> dict[str, Path]:
    """Write ``root/data`` (two positive phantoms, seed 7) and the two bundles; returns ``{name: bundle folder}``."""
    write_phantom_dataset(root / DATA, 2, seed=7, positive_fraction=1.0, split=(0.0, 0.0, 1.0))
    demo = REPO / "bundles" / "lesion_classification_3d"
    demo_inference = json.loads((demo / "configs" / "inference.json").read_text())
    simple = {"_target_": "SimpleInferer"}
    classifier = _write(
        root / "classifier",
        _inference(demo_inference["network_def"], simple, {"densenet": demo_inference["densenet"]}),
        _metadata("front-door classifier", ["no lesion", "lesion"], segmentation=False),
        _explain("class_layers.relu", None, ["no lesion", "lesion"], "pred", "logit"),
        torch.load(demo / "models" / "model.pt", weights_only=True),
    )
    torch.manual_seed(0)
    segmenter = _write(
        root / "segmenter",
        _inference({"_target_": "UNet", **_UNET}, {"_target_": "SlidingWindowInferer", **WINDOW}, {}),
        _metadata("front-door segmenter", ["background", "lesion", "other"], segmentation=True),
        _explain("model.1.submodule", "1+2", ["background", "lesion", "other"], "image", "probability"),
        UNet(**_UNET).state_dict(),
    )
    return {"classifier": classifier, "segmenter": segmenter}
