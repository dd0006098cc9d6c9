"""The chest X-ray pneumonia bundle on a tiny Kermany copy (checks in :mod:`tests.helpers.study_bundles`)."""

from __future__ import annotations

from pathlib import Path

from monai_xai.data import CHEST_XRAY_CLASSES
from tests.helpers.fixture_chest_xray import write_chest_xray
from tests.helpers.study_bundles import (
    StudyBundle,
    check_layout_metadata_and_default_network,
    check_train_evaluate_infer_explain_and_study,
)

CHEST = StudyBundle(
    "chest_xray_pneumonia_classification", CHEST_XRAY_CLASSES, write_chest_xray, "chaddad_chest_xray.json"
)


def test_model_zoo_layout_metadata_and_default_network() -> None:
    check_layout_metadata_and_default_network(CHEST)


def test_train_evaluate_infer_explain_and_study(tmp_path: Path) -> None:
    check_train_evaluate_infer_explain_and_study(CHEST, tmp_path)
