"""The thread policy (``monai_xai.threads``): what decides the count, that every entry point applies it before its
command runs, and that importing the library changes no thread setting. Structural checks, no timing."""

import inspect
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import fire
import pytest
import torch

from monai_xai import cli, threads

REPO = Path(__file__).resolve().parent.parent


def is_thread_setting(key: str) -> bool:
    """An environment variable that sets a thread count or how threads wait (OpenMP, MKL, OpenBLAS, ours); not, e.g.,
    KMP_DUPLICATE_LIB_OK, which scikit-learn sets when MONAI imports it."""
    waiting = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_DYNAMIC", "OMP_PROC_BIND", "OMP_PLACES")
    return "THREADS" in key or key in waiting


# Imports every module of the package in a fresh interpreter with torch's thread setters replaced by recorders, and
# prints what changed: the setters' calls, torch's thread count and the thread settings of the environment.
IMPORT_EVERYTHING = (
    inspect.getsource(is_thread_setting)
    + r"""
import importlib, json, os, pkgutil
import torch

calls = []
for name in ("set_num_threads", "set_num_interop_threads"):
    setattr(torch, name, lambda *args, name=name: calls.append([name, *args]))

def thread_environment():
    return {key: value for key, value in os.environ.items() if is_thread_setting(key)}

before = thread_environment(), torch.get_num_threads()
import monai_xai
names = [info.name for info in pkgutil.walk_packages(monai_xai.__path__, "monai_xai.", onerror=print)]
names.append("monai_xai.label.sample_app.main")  # the MONAI Label app folder is not a package
imported, missing = [], {}
for name in names:
    try:
        importlib.import_module(name)
        imported.append(name)
    except ModuleNotFoundError as error:  # an optional dependency that is not installed here; our own must import
        if error.name.split(".")[0] == "monai_xai":
            raise
        missing[name] = error.name
after = thread_environment(), torch.get_num_threads()
print(json.dumps({"imported": imported, "missing": missing, "calls": calls, "before": before, "after": after}))
"""
)


def test_importing_every_module_changes_no_thread_setting():
    env = {key: value for key, value in os.environ.items() if not is_thread_setting(key)}
    env.update(PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    finished = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, env=env, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "monai_xai.threads" in report["imported"] and len(report["imported"]) > 50, report["missing"]
    assert report["calls"] == []
    assert report["after"] == report["before"]


@pytest.fixture(autouse=True)
def _no_applied_policy(monkeypatch) -> None:
    """Each test starts as a program that never applied the policy, and leaves none behind for other tests."""
    monkeypatch.setattr(threads, "_applied", None)


@pytest.fixture
def set_threads(monkeypatch) -> list[int]:
    """torch.set_num_threads recorded instead of applied (the test process keeps its own count)."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(threads.NUM_THREADS_ENV, "1")
    return calls


@pytest.fixture
def fired(monkeypatch, set_threads) -> list[list[int]]:
    """fire.Fire replaced by a recorder of the thread counts set before the command would have run."""
    seen: list[list[int]] = []
    monkeypatch.setattr(fire, "Fire", lambda *args, **kwargs: seen.append(list(set_threads)))
    return seen


def test_cli_main_applies_the_policy_before_the_command(fired, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the override wins over it
    monkeypatch.setattr(sys, "argv", ["monai-xai", "describe", "map.nii.gz"])
    cli.main()
    assert fired == [[1]]


@pytest.mark.parametrize("package", ["monai_xai.study", "monai_xai.sanity"])
def test_module_entry_points_apply_the_policy_before_the_command(fired, package, monkeypatch):
    monkeypatch.setattr(sys, "argv", [package])
    runpy.run_module(package, run_name="__main__", alter_sys=False)
    assert fired == [[1]]


def test_label_app_applies_the_policy_at_start(set_threads, monkeypatch, tmp_path):
    pytest.importorskip("monailabel")
    from monailabel.interfaces.app import MONAILabelApp

    from monai_xai.label.sample_app.main import ExplainApp

    started: list[list[int]] = []
    monkeypatch.setattr(MONAILabelApp, "__init__", lambda self, **kwargs: started.append(list(set_threads)))
    ExplainApp(str(tmp_path), str(tmp_path), {"bundles": str(tmp_path)})
    assert started == [[1]]


def test_library_calls_leave_the_count_alone(set_threads):
    """The policy belongs to entry points: the library's own work never calls it."""
    from monai_xai.metrics import noisy_linear_impute

    images = torch.rand(2, 1, 8, 8)
    removed = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    removed[:, :, 2:5, 3:6] = True
    noisy_linear_impute(images, removed)
    assert set_threads == []


def _no_load(monkeypatch, usable: int, busy: float | None = 0.0) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: usable)
    monkeypatch.setattr(threads, "busy_cpus", lambda: busy)


@pytest.mark.parametrize(
    ("argument", "environ", "expected", "source"),
    [
        (1, {"MONAI_XAI_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}, 1, "argument"),
        (None, {"MONAI_XAI_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}, 3, "MONAI_XAI_NUM_THREADS"),
        (None, {"OMP_NUM_THREADS": "2"}, 2, "OMP_NUM_THREADS"),
        (None, {"OMP_NUM_THREADS": "2,1"}, 2, "OMP_NUM_THREADS"),  # nested levels: the outer one
        (None, {"MONAI_XAI_NUM_THREADS": ""}, 4, "free CPUs"),  # empty means unset
        (16, {}, 4, "argument"),  # never more than the usable CPUs
    ],
)
def test_decision_order(monkeypatch, argument, environ, expected, source):
    _no_load(monkeypatch, usable=4)
    decision = threads.decide_num_threads(argument, environ)
    assert (decision.num_threads, decision.source, decision.usable_cpus) == (expected, source, 4)


@pytest.mark.parametrize(
    ("busy", "expected"),
    [(0.0, 4), (0.2, 4), (0.3, 3), (1.0, 3), (3.8, 1), (4.0, 1), (None, 4)],
)
def test_free_cpus_leave_out_the_busy_ones(monkeypatch, busy, expected):
    """A CPU counts as free when at least 3/4 of it is idle; one thread at least."""
    _no_load(monkeypatch, usable=4, busy=busy)
    decision = threads.decide_num_threads(environ={})
    assert decision.num_threads == expected
    assert decision.busy_cpus == busy


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_counts_say_what_to_set(monkeypatch, value):
    _no_load(monkeypatch, usable=4)
    with pytest.raises(ValueError, match="MONAI_XAI_NUM_THREADS=.*positive integer"):
        threads.decide_num_threads(environ={"MONAI_XAI_NUM_THREADS": value})
    with pytest.raises(ValueError, match="num_threads=.*positive integer"):
        threads.decide_num_threads(0, environ={})


def test_apply_sets_torch_to_the_decision(set_threads, monkeypatch):
    _no_load(monkeypatch, usable=4)
    monkeypatch.setenv(threads.NUM_THREADS_ENV, "3")
    assert threads.apply_thread_policy().num_threads == 3
    assert threads.apply_thread_policy(2).num_threads == 2
    assert set_threads == [3, 2]


def test_workers_use_busy_cpus_too_but_follow_an_explicit_count(set_threads, monkeypatch):
    """Intra-op threads leave busy CPUs out (their operations wait at barriers); independent workers do not."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert threads.worker_threads() == 3  # no policy applied: torch's count
    monkeypatch.delenv(threads.NUM_THREADS_ENV)
    _no_load(monkeypatch, usable=2, busy=2.0)
    assert threads.apply_thread_policy().num_threads == 1
    assert threads.worker_threads() == 2
    monkeypatch.setenv(threads.NUM_THREADS_ENV, "1")
    threads.apply_thread_policy()
    assert threads.worker_threads() == 1
    assert set_threads == [1, 1]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_of_the_ancestors(tmp_path):
    root, membership = tmp_path / "cgroup", tmp_path / "self_cgroup"
    _write(membership, "0::/user.slice/job\n")
    _write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_limit(root, membership) == 1.5
    _write(root / "user.slice" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(root, membership) is None


def test_cgroup_v1_quota_and_container_root(tmp_path):
    root, membership = tmp_path / "cgroup", tmp_path / "self_cgroup"
    _write(membership, "5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    mount = root / "cpu,cpuacct"
    _write(mount / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(root, membership) == 2.0
    # inside the container the host's path is absent and the mount's root is the container's cgroup
    for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"):
        (mount / "docker" / "abc" / name).rename(mount / name)
    assert threads.cgroup_cpu_limit(root, membership) == 2.0
    _write(mount / "cpu.cfs_quota_us", "-1\n")  # no quota
    assert threads.cgroup_cpu_limit(root, membership) is None
    assert threads.cgroup_cpu_limit(root, tmp_path / "missing") is None


def test_usable_cpus_rounds_the_quota_down(monkeypatch):
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.usable_cpus() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cpus() == 4


def test_busy_cpus_from_two_proc_stat_snapshots(monkeypatch, tmp_path):
    """cpu0: 90 of 90 ticks busy; cpu1: 15 of 90 busy (iowait counts as idle, stolen time as busy); cpu2 is not
    in the affinity mask."""
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 0 100 0 0 0 0 0 0\ncpu1 10 0 0 100 0 0 0 0 0 0\n"
        "cpu2 0 0 0 0 0 0 0 0 0 0\nintr 1 2\n"
    )
    after = (
        "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 90 0 10 100 0 0 0 0 0 0\ncpu1 20 0 0 160 15 0 0 5 0 0\n"
        "cpu2 0 0 0 500 0 0 0 0 0 0\nintr 1 2\n"
    )
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1})
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: stat.write_text(after))
    assert threads.busy_cpus(stat=stat) == pytest.approx(2 * (1 - 75 / 180))
    assert threads.busy_cpus(stat=tmp_path / "missing") is None
