"""Two ranks (torchrun, gloo on CPU) report the same aggregate XAI metrics and tables as one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.distributed_explain import N_CASES, explain
from tests.helpers.engines import REPO

pytestmark = pytest.mark.slow


def test_two_ranks_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "helpers" / "distributed_explain.py"), str(tmp_path / "ranks"),
    ]  # fmt: skip
    (tmp_path / "ranks").mkdir()
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    split = json.loads((tmp_path / "ranks" / "metrics.json").read_text())
    single = explain(tmp_path / "single")

    for name, value in single["metrics"].items():
        if name.startswith("xai_seconds_"):
            continue  # wall time differs between runs
        assert split["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
        # every case is counted once: rank 0 holds cases 0, 2, 4 and rank 1 cases 1, 3, 5
        assert sorted(split["details"][name]) == pytest.approx(sorted(single["details"][name]), rel=1e-5, abs=1e-6)
    assert len(split["details"]["heat_diff_gradcam"]) == N_CASES

    with open(tmp_path / "ranks" / "cases.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(row["case"] for row in rows if row["method"] == "gradcam") == [f"c{i}" for i in range(N_CASES)]
    by_case = {row["case"]: float(row["heat_diff"]) for row in rows if row["method"] == "hirescam"}
    with open(tmp_path / "single" / "cases.csv") as stream:
        expected = {
            row["case"]: float(row["heat_diff"]) for row in csv.DictReader(stream) if row["method"] == "hirescam"
        }
    assert by_case == pytest.approx(expected, rel=1e-5, abs=1e-6)
