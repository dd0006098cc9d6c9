"""Every benchmark script still runs: each at its smallest settings, end to end, in a child process.

docs/benchmarks.md documents these commands; a script that no test runs breaks unseen (``benchmarks/study.py`` still
imported the metric table that the metric catalogue replaced). The numbers of these runs say nothing and are not
checked: tests never check time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.engines import REPO

pytestmark = pytest.mark.slow

BENCHMARKS = REPO / "benchmarks"

# the smallest run of each script (SwinUNETR is left out: even at --quick sizes it takes minutes on a CPU)
SMALLEST_RUNS = {
    "attributions": ["--quick", "--cases", "unet3d", "--methods", "saliency", "integrated_gradients", "kernel_shap"],
    "cams": ["--quick", "--cases", "unet3d", "vit_b16_2d"],
    "export": ["--repeats", "1", "--warmup", "0", "--methods", "hirescam"],
    "road": ["--quick"],
    "shared_machine": ["--quick", "--cases", "impute"],
    "study": ["--quick"],
    "trust": ["--quick", "--repeats", "1", "--samples", "2"],
}


def test_every_benchmark_script_has_a_smallest_run() -> None:
    assert sorted(path.stem for path in BENCHMARKS.glob("*.py")) == sorted(SMALLEST_RUNS)


@pytest.mark.parametrize("name", sorted(SMALLEST_RUNS))
def test_benchmark_runs_and_prints_its_table(name: str, tmp_path) -> None:
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *SMALLEST_RUNS[name]]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "|---|" in finished.stdout, finished.stdout[-2000:]  # its Markdown table of results
