"""The evaluator run the metric-handler and writer tests share (built once per test session)."""

import pytest

from tests.helpers.runs import explain_classification_cases


@pytest.fixture(scope="package")
def classification_run(tmp_path_factory):
    return explain_classification_cases(tmp_path_factory.mktemp("cls_run"))
