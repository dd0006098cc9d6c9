"""The skin lesion bundle on tiny copies of HAM10000 and of ISIC 2019 with task-1 masks (checks in
:mod:`tests.helpers.study_bundles`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_xai.data import HAM10000_CLASSES, ISIC2019_CLASSES
from tests.helpers.fixture_skin_lesions import ISIC_MASK_FOLDER, write_ham10000, write_isic2019
from tests.helpers.study_bundles import (
    BUNDLES_DIR,
    StudyBundle,
    check_layout_metadata_and_default_network,
    check_train_evaluate_infer_explain_and_study,
)

BUNDLE = "skin_lesion_classification"

HAM10000 = StudyBundle(BUNDLE, HAM10000_CLASSES, write_ham10000, "chaddad_skin_cancer.json")
# the masks lie in the data folder that the check writes under tmp_path: mask_dir follows dataset_dir by reference;
# require_masks as the README's mask study passes it (the fixture has a mask for every image)
ISIC2019_MASKED = StudyBundle(
    BUNDLE,
    ISIC2019_CLASSES,
    write_isic2019,
    "jagani_isic2019_layers.json",
    overrides={
        "dataset_name": "isic2019",
        "mask_dir": f"$@dataset_dir + '/{ISIC_MASK_FOLDER}'",
        "require_masks": True,
    },
    explain_metrics=("iou", "pointing_game", "deletion"),
)


def _summary(summary_csv: Path) -> dict[str, dict[str, str]]:
    """``{metric: row}`` of the gradcampp rows of an explanation run's ``summary.csv`` (metric,method,mean,...,n)."""
    rows = csv.DictReader(summary_csv.read_text().splitlines())
    return {row["metric"]: row for row in rows if row["method"] == "gradcampp"}


def test_model_zoo_layout_metadata_and_default_network() -> None:
    check_layout_metadata_and_default_network(HAM10000)


def test_isic2019_network_has_nine_outputs() -> None:
    """The layout check builds the default (HAM10000) network; ``dataset_name`` isic2019 gives ISIC 2019's 9."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / BUNDLE / "configs" / "inference.json"))
    parser.update({"dataset_name": "isic2019"})
    assert parser.get_parsed_content("num_classes") == 9
    assert parser.get_parsed_content("network_def")(torch.zeros(1, 3, 64, 64)).shape == (1, 9)
    assert parser.get_parsed_content("class_names") == list(ISIC2019_CLASSES)


def test_explain_metrics_follow_mask_dir() -> None:
    """Localisation metrics against the lesion masks only when there are masks; ROAD and confidence always."""
    for mask_dir, region in ((None, []), ("/masks", ["iou", "pointing_game", "deletion"])):
        parser = ConfigParser()
        parser.read_config(
            [str(BUNDLES_DIR / BUNDLE / "configs" / name) for name in ("inference.json", "explain.json")]
        )
        parser.update({"mask_dir": mask_dir})
        assert (
            parser.get_parsed_content("xai_metrics")
            == ["road_morf", "road_lerf", "road_combined", "confidence_increase"] + region
        )
        assert parser.get_parsed_content("xai_methods") == ["gradcam", "gradcampp", "scorecam"]
        assert parser["xai_region_key"] == "mask" and parser["xai_region_value"] is None


def test_ham10000_train_evaluate_infer_explain_and_study(tmp_path: Path) -> None:
    check_train_evaluate_infer_explain_and_study(HAM10000, tmp_path)


def test_isic2019_with_masks_train_evaluate_infer_explain_and_study(tmp_path: Path) -> None:
    check_train_evaluate_infer_explain_and_study(ISIC2019_MASKED, tmp_path)
    # every test image has a mask: the localisation metrics are numbers for each of them, not NaN
    summary = _summary(tmp_path / "xai" / "summary.csv")
    for metric in ("iou", "pointing_game", "deletion"):
        mean, scored = float(summary[metric]["mean"]), int(summary[metric]["n"])
        assert math.isfinite(mean) and scored > 0, (metric, summary[metric])
    assert 0.0 <= float(summary["iou"]["mean"]) <= 1.0 and 0.0 <= float(summary["pointing_game"]["mean"]) <= 1.0
