"""A small study on the demo bundles: the shipped demo study file with fewer cases, methods and metrics.

Every study test runs this one (about 20 s on a 2-core CPU), in process, as a subprocess killed part way, or under
``torchrun``, and compares the tables: the per-case values must not depend on how the work was split or interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monai_xai.metrics import SECONDS
from monai_xai.study import StudySpec, load_study, study_store
from monai_xai.study.store import RELIABILITY_COLUMNS

REPO = Path(__file__).resolve().parents[2]
DEMO_STUDY = REPO / "configs" / "studies" / "demo_phantoms.json"

# the demo study's bundles and layers, on 8 phantoms (2 validation cases tune the IoU threshold, 6 are scored)
SMALL_STUDY = {
    "data": {
        "phantom": {"n_cases": 8, "seed": 7, "positive_fraction": 0.5, "split": [0.0, 0.25, 0.75]},
        "data_list_key": "test",
        "validation_key": "validation",
    },
    "methods": ["gradcam", "hirescam", "layercam"],
    "metrics": ["heat_diff", "iou", "pointing_game", "road_combined", "confidence_increase", "deletion"],
    "metric_args": {"road_combined": {"percentiles": [50]}, "deletion": {"steps": 4}},
    "statistics": {"bootstrap_resamples": 200, "seed": 0},
    "sanity": {"cases": 2, "seed": 0},
    "reliability": {"cases": 3, "noise": 0.01, "seed": 0},
    "batch_size": 3,
}


def small_study(output_dir: Path, **override: Any) -> StudySpec:
    """The small study writing to ``output_dir``; ``override`` replaces more top-level keys."""
    return load_study(DEMO_STUDY, **{**SMALL_STUDY, "output_dir": str(output_dir), **override})


def write_small_study_file(path: Path, output_dir: Path) -> Path:
    """The small study as a file (bundle paths made absolute), for ``python -m monai_xai.study`` and torchrun."""
    content = json.loads(DEMO_STUDY.read_text())
    for bundle in content["bundles"]:
        bundle["path"] = str((DEMO_STUDY.parent / bundle["path"]).resolve())
    content.update(SMALL_STUDY, output_dir=str(output_dir))
    path.write_text(json.dumps(content, indent=2))
    return path


def stored(spec: StudySpec, table: str) -> pd.DataFrame:
    """A table of the study's row store, sorted by its key columns."""
    store = study_store(spec)
    try:
        frame = store.table(table)
    finally:
        store.close()
    keys = [
        column for column in frame.columns if column not in ("value", "spearman", "confidence", *RELIABILITY_COLUMNS)
    ]
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_values(first: StudySpec, second: StudySpec) -> None:
    """The two studies stored the same rows (every metric, the randomisation and reliability checks; times aside)."""
    for table in ("scores", "cases", "thresholds", "sanity", "reliability"):
        a, b = stored(first, table), stored(second, table)
        if table == "scores":
            a, b = (frame[frame["metric"] != SECONDS].reset_index(drop=True) for frame in (a, b))
        assert len(a) and a.shape == b.shape, (table, a.shape, b.shape)
        for column in a.columns:
            if a[column].dtype.kind == "f":
                np.testing.assert_allclose(a[column], b[column], rtol=1e-6, atol=1e-9, err_msg=f"{table}.{column}")
            else:
                assert a[column].tolist() == b[column].tolist(), f"{table}.{column}"
