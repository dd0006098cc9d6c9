"""The brain tumour MRI bundle on a tiny copy of the Kaggle data set (checks in :mod:`tests.helpers.study_bundles`)."""

from __future__ import annotations

from pathlib import Path

from monai_xai.data import BRAIN_TUMOR_CLASSES
from tests.helpers.public_datasets import write_brain_tumor_mri
from tests.helpers.study_bundles import (
    StudyBundle,
    check_layout_metadata_and_default_network,
    check_train_evaluate_infer_explain_and_study,
)

BRAIN = StudyBundle(
    "brain_tumor_mri_classification", BRAIN_TUMOR_CLASSES, write_brain_tumor_mri, "chaddad_brain_tumor_mri.json"
)


def test_model_zoo_layout_metadata_and_default_network() -> None:
    check_layout_metadata_and_default_network(BRAIN)


def test_train_evaluate_infer_explain_and_study(tmp_path: Path) -> None:
    check_train_evaluate_infer_explain_and_study(BRAIN, tmp_path)
