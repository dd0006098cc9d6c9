"""The shipped study files of the published protocols: every method, metric, argument and layer they name exists.

Their bundles (the study data sets' bundles) are trained by users on the public data, so here each file is checked
with its bundles' backbones built by name (layers resolved in the real architectures) and, for everything else, run
through the study checker on the phantom classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_xai.cams import resolve_layers
from monai_xai.networks import BACKBONES, classification_backbone
from monai_xai.study import study_from_dict
from tests.helpers.studies import DEMO_STUDY, REPO

PROTOCOLS = sorted(path for path in DEMO_STUDY.parent.glob("*.json") if path != DEMO_STUDY)
PHANTOM_CLASSIFIER = REPO / "bundles" / "lesion_classification_3d"
CLASSES = {"brain_tumor_mri": 4, "ham10000": 7, "chest_xray_pneumonia": 2, "siim_acr_pneumothorax": 2, "isic2019": 9}
# protocols of the 2D classifier bundles (backbone by name); the KiTS23 segmentation study is checked with its bundle
# in tests/bundles/test_kits23_bundle.py
CLASSIFIER_PROTOCOLS = [
    path for path in PROTOCOLS if Path(json.loads(path.read_text())["data"]["datalist"]).stem in CLASSES
]


def test_every_published_protocol_has_a_study_file() -> None:
    names = {path.stem for path in PROTOCOLS}
    assert {
        "chaddad_brain_tumor_mri",
        "chaddad_skin_cancer",
        "chaddad_chest_xray",
        "qiu_pneumothorax_architectures",
        "jagani_isic2019_layers",
    } <= names


@pytest.mark.parametrize("path", CLASSIFIER_PROTOCOLS, ids=lambda path: path.stem)
def test_protocol_layers_exist_in_the_named_backbones(path: Path) -> None:
    content = json.loads(path.read_text())
    dataset = Path(content["data"]["datalist"]).stem
    for entry in content["bundles"]:
        backbone = entry["overrides"]["backbone"]
        assert backbone in BACKBONES
        assert entry["weights"] == f"models/{backbone}/model.pt"  # where the bundles' train.json saves each backbone
        with torch.device("meta"):
            network = classification_backbone(backbone, num_classes=CLASSES[dataset])
        for layer in entry["layers"]:
            resolve_layers(network, layer)


@pytest.mark.parametrize("path", CLASSIFIER_PROTOCOLS, ids=lambda path: path.stem)
def test_protocol_settings_pass_the_study_checks(path: Path, tmp_path: Path) -> None:
    content = json.loads(path.read_text())
    content["bundles"] = [
        {
            **{key: value for key, value in entry.items() if key not in ("path", "weights", "overrides")},
            "path": str(PHANTOM_CLASSIFIER),
            # the protocol's layers are a ResNet50's: the phantom classifier stands in with its own last spatial layer
            "layers": ["class_layers.relu"],
        }
        for entry in content["bundles"]
    ]
    content["data"] = {key: value for key, value in content["data"].items() if key != "datalist"}
    content["data"]["phantom"] = {"n_cases": 4}
    spec = study_from_dict(content, path.parent, source=str(path))
    assert spec.methods and spec.metrics and len(spec.bundles) == len(content["bundles"])
