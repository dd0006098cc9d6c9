"""A study killed part way resumes without recomputing a stored row, and two torchrun ranks store what one process
stores: both end with the uninterrupted run's values."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from monai_xai.metrics import SECONDS
from monai_xai.study import load_study, run_study
from tests.helpers.studies import REPO, assert_same_values, stored, write_small_study_file


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _stored_scores(path: Path) -> int:
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    finally:
        connection.close()


def test_killed_study_resumes_without_recomputing_and_matches_an_uninterrupted_run(finished, tmp_path: Path) -> None:
    reference, _ = finished
    study_file = write_small_study_file(tmp_path / "study.json", tmp_path / "out")
    rows = tmp_path / "out" / "rows.sqlite"
    command = [sys.executable, "-m", "monai_xai.study", str(study_file), "--progress", "False"]
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _stored_scores(rows) < 40 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"the study ended before it was killed:\n{stderr[-3000:]}"
    spec = load_study(study_file)
    before = stored(spec, "scores")
    layers = sum(len(b.layers) for b in spec.bundles)
    total = 6 * layers * len(spec.methods) * (len(spec.metrics) + 1)
    assert 40 <= len(before) < total
    assert not (tmp_path / "out" / "report").exists()

    run_study(spec, progress=False)

    after = stored(spec, "scores")
    kept = before.merge(after, on=["bundle", "layer", "method", "case_id", "metric"], suffixes=("_before", "_after"))
    assert len(kept) == len(before)
    # a recomputed row would have a new time; every stored one, times included, is exactly as it was
    pd.testing.assert_series_equal(kept["value_before"], kept["value_after"], check_names=False)
    assert (kept["metric"] == SECONDS).any()
    assert_same_values(spec, reference)


def test_two_torchrun_ranks_store_what_one_process_stores(finished, tmp_path: Path) -> None:
    reference, _ = finished
    study_file = write_small_study_file(tmp_path / "study.json", tmp_path / "out")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "monai_xai.study", str(study_file), "--progress", "False"]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report:" in result.stdout  # rank 0 wrote the report
    spec = load_study(study_file)
    assert_same_values(spec, reference)
    for name in ("summary.csv", "paired_tests.csv", "anova_layers.csv", "ranking.csv", "report.md"):
        assert (tmp_path / "out" / "report" / name).is_file()
