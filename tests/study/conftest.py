"""The small demo study run once, uninterrupted, in one process: what the other ways of running it must reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_xai.study import StudySpec, run_study
from tests.helpers.studies import small_study


@pytest.fixture(scope="session")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudySpec, Path]:
    """(the study, its report folder)."""
    spec = small_study(tmp_path_factory.mktemp("study"))
    return spec, run_study(spec, progress=False)
