"""The metrics' reliability check in a study: a metric built to ignore the map is flagged (marked in the report's
tables, left out of the rankings that survive and of the reliable metrics' Kendall's W), a faithful localisation
metric on a trained network passes, and the rows a resumed study stores are those of one uninterrupted run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

from monai_xai.enums import MetricInput
from monai_xai.metrics.catalogue import METRICS, MetricSpec
from monai_xai.metrics.per_sample import PerSampleMetric
from monai_xai.study import run_study
from monai_xai.study.store import ROWS_FILE
from tests.helpers.studies import DEMO_STUDY, small_study, stored

LAYER = "class_layers.relu"


class RegionFractionMetric(PerSampleMetric):
    """A deliberately broken localisation metric: the share of the image the lesion covers, whatever the map."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return y.flatten(1).float().mean(dim=1)[:, None]


BROKEN = MetricSpec("region_fraction", RegionFractionMetric, MetricInput.REGION, True, summary="ignores the map")


@pytest.fixture(scope="module")
def broken_metric_study(tmp_path_factory: pytest.TempPathFactory):
    classifier = json.loads(DEMO_STUDY.read_text())["bundles"][0]
    classifier.update(path=str((DEMO_STUDY.parent / classifier["path"]).resolve()), layers=[LAYER])
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METRICS, "region_fraction", BROKEN)
        spec = small_study(
            tmp_path_factory.mktemp("broken_metric_study"),
            data={"phantom": {"n_cases": 6, "seed": 11, "positive_fraction": 1.0, "split": [0.0, 0.0, 1.0]}},
            bundles=[classifier],
            methods=["gradcam", "hirescam"],
            metrics=["heat_diff", "region_fraction"],
            metric_args={},
            sanity=False,
            reliability={"cases": 6, "noise": 0.01},
        )
        folder = run_study(spec, progress=False)
    return spec, folder


def test_a_metric_that_ignores_the_map_is_flagged_and_a_faithful_one_passes(broken_metric_study):
    spec, folder = broken_metric_study
    reliability = pd.read_csv(folder / "reliability.csv").set_index("metric")
    assert reliability.loc["region_fraction", "n_pairs"] == 12  # 6 lesion cases x 2 methods
    assert reliability.loc["region_fraction", "control_change"] == 0
    assert reliability.loc["region_fraction", "randomised_change"] == 0
    assert reliability.loc["region_fraction", "verdict"] == "not reactive to random map, random model"
    assert reliability.loc["heat_diff", "verdict"] == "reliable"
    heat_diff = reliability.loc["heat_diff"]
    assert heat_diff["noise_change"] < min(heat_diff["control_change"], heat_diff["randomised_change"])
    page = (folder / "report.md").read_text()
    assert "- region_fraction ⚠ (higher is better)" in page and "- heat_diff (higher is better)" in page
    assert "| method | heat_diff | region_fraction ⚠ |" in page
    assert (
        f"- densenet-classifier / {LAYER}: heat_diff; not: region_fraction (not reactive to random map, random" in page
    )
    concordance = pd.read_csv(folder / "concordance.csv").set_index("metrics")
    assert concordance.loc["all", "n_metrics"] == 2 and concordance.loc["reliable", "n_metrics"] == 1
    summary = pd.read_csv(folder / "summary.csv")
    flags = summary.drop_duplicates("metric").set_index("metric")["metric_reliable"]
    assert bool(flags["heat_diff"]) and not bool(flags["region_fraction"]) and pd.isna(flags["seconds"])


def test_the_noise_and_the_control_rows_are_the_same_after_a_resume(broken_metric_study):
    """Some reliability rows deleted (one method's, and two cases' of the other) and the study run again: every
    stored value as in the uninterrupted run (the noise is drawn per case, batches are fixed by case order)."""
    spec, _ = broken_metric_study
    first = stored(spec, "reliability")
    connection = sqlite3.connect(Path(spec.output_dir) / ROWS_FILE)
    with connection:
        connection.execute(
            "DELETE FROM reliability WHERE method = 'hirescam' OR case_id IN "
            "(SELECT DISTINCT case_id FROM reliability ORDER BY case_id LIMIT 2)"
        )
    connection.close()
    assert len(stored(spec, "reliability")) < len(first) // 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METRICS, "region_fraction", BROKEN)
        run_study(spec, progress=False, report=False)
    pd.testing.assert_frame_equal(first, stored(spec, "reliability"), rtol=1e-6, atol=1e-9)
