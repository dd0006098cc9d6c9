"""The SIIM-ACR pneumothorax bundle on a tiny copy of the Kaggle data set (real DICOMs, train-rle.csv): the shared
checks of :mod:`tests.helpers.study_bundles`, then the localisation metrics of the explanation run on the masks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser

from monai_xai.data import PNEUMOTHORAX_CLASSES
from tests.helpers.fixture_siim import SIIM_COLUMNS, write_siim_pneumothorax
from tests.helpers.study_bundles import (
    BUNDLES_DIR,
    TINY,
    StudyBundle,
    check_layout_metadata_and_default_network,
    check_train_evaluate_infer_explain_and_study,
)

pytestmark = [  # MONAI noise: SIIM-like files have no patient orientation; no nvImageCodec on a CPU machine
    pytest.mark.filterwarnings("ignore:PydicomReader. ImageOrientationPatient"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader"),
]

# 16 images, balanced: a 50/25/25 split leaves 4 test images (2 with pneumothorax) instead of 2 with the default
FRACTIONS = {"training": 0.5, "validation": 0.25, "test": 0.25}
PNEUMOTHORAX = StudyBundle(
    "pneumothorax_classification",
    PNEUMOTHORAX_CLASSES,
    write_siim_pneumothorax,
    "qiu_pneumothorax_architectures.json",
    overrides={"fractions": FRACTIONS},
    explain_metrics=("heat_diff", "ehr_auc"),
)


def test_model_zoo_layout_metadata_and_default_network() -> None:
    check_layout_metadata_and_default_network(PNEUMOTHORAX)
    configs = BUNDLES_DIR / PNEUMOTHORAX.name / "configs"
    train = json.loads((configs / "train.json").read_text())
    inference = json.loads((configs / "inference.json").read_text())
    for key in ("mask_dir", "fractions", "seed", "balanced", "clahe_clip_limit", "clahe_tile_grid_size"):
        assert train[key] == inference[key], key
    assert train["train"]["deterministic_transforms"] == inference["preprocessing"]["transforms"]
    assert train["optimizer"]["_target_"] == "torch.optim.Adam" and train["optimizer"]["lr"] == 1e-4
    assert train["max_epochs"] == 50 and train["balanced"] is True
    explain = json.loads((configs / "explain.json").read_text())
    assert (explain["xai_class"], explain["xai_region_key"], explain["xai_region_value"]) == (1, "mask", None)
    assert {"gradcam", "hirescam"} <= set(explain["xai_methods"])
    assert {"heat_diff", "ehr_auc"} <= set(explain["xai_metrics"])


def test_preprocessing_keeps_the_mask_on_the_bright_pixels(tmp_path: Path) -> None:
    """Image and mask stay on one grid through the bundle's preprocessing (MONOCHROME1 included)."""
    data = write_siim_pneumothorax(tmp_path / "data")
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / PNEUMOTHORAX.name / "configs" / "inference.json"))
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(data), "image_size": [SIIM_COLUMNS, 48]})
    datalist = parser.get_parsed_content("datalist")
    assert sum(len(entries) for entries in datalist.values()) == 16
    assert (tmp_path / "eval" / "masks").is_dir()  # the default mask_dir
    preprocessing = parser.get_parsed_content("preprocessing")
    positives = [entry for entries in datalist.values() for entry in entries if entry["label"] == 1]
    assert len(positives) == 8
    for entry in positives:
        case = preprocessing(entry)
        image, mask = np.asarray(case["image"]), np.asarray(case["mask"])
        assert image.shape == (3, SIIM_COLUMNS, 48) and mask.shape == (1, SIIM_COLUMNS, 48)
        inside, outside = image[0][mask[0] > 0], image[0][mask[0] == 0]
        # bright = region, MONOCHROME1 included: the brightest pixels, as many as the mask has, are the mask's
        # (CLAHE lifts the background texture and JPEG blurs the edges, so not all of them)
        assert inside.mean() - outside.mean() > 1.5, entry["image_id"]
        brightest = image[0] >= np.sort(image[0].ravel())[-inside.size]
        assert (brightest & (mask[0] > 0)).sum() > 0.9 * inside.size, entry["image_id"]
        np.testing.assert_allclose(image.mean(axis=(1, 2)), 0.0, atol=1e-4)


def test_train_evaluate_infer_explain_and_study(tmp_path: Path) -> None:
    check_train_evaluate_infer_explain_and_study(PNEUMOTHORAX, tmp_path)
    # the explanation run scored the pneumothorax class against the masks: a number for every positive test case
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / PNEUMOTHORAX.name / "configs" / "inference.json"))
    parser.update({"bundle_root": str(tmp_path / PNEUMOTHORAX.name), "dataset_dir": str(tmp_path / "data"), **TINY})
    parser.update(PNEUMOTHORAX.overrides)
    labels = {entry["image_id"]: entry["label"] for entry in parser.get_parsed_content("datalist")["test"]}
    assert sorted(labels.values()) == [0, 0, 1, 1]
    rows = list(csv.DictReader((tmp_path / "xai" / "cases.csv").open()))
    assert {row["case"] for row in rows} == set(labels)
    for row in rows:
        assert row["class"] == "1", row  # xai_class: the pneumothorax class, also for negatives
        if labels[row["case"]] == 1:
            for metric in PNEUMOTHORAX.explain_metrics:
                assert math.isfinite(float(row[metric])), (metric, row)
