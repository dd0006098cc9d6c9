"""How many CPU threads torch's intra-op pool uses: decided once, at an entry point, never when a module is imported.

The policy (:func:`decide_num_threads`), first match wins:

1. an explicit count (an entry point's ``--threads``-style argument);
2. the ``MONAI_XAI_NUM_THREADS`` environment variable;
3. ``OMP_NUM_THREADS`` (what torch itself reads at start; ``torchrun`` sets it to 1 for several workers per node);
4. otherwise the CPUs that are usable *and* free: the CPUs of this process's affinity mask and cgroup quota, less
   the ones other processes keep busy over a short sample of ``/proc/stat`` at start.

Every count is capped at the usable CPUs (affinity and cgroup quota): more threads than cores is never faster.

Why free CPUs and not all cores: torch's CPU kernels run on a GNU OpenMP pool whose threads spin-wait (by default for
up to about 300,000 pause instructions, milliseconds) between parallel regions, and every operation waits for its
slowest thread. When other processes keep the cores busy, a spinning thread holds a core that the thread with work
needs, so each operation waits for a scheduler slice: on 2 cores with two busy processes next to it, a 3D UNet's CAMs
took 3x and ROAD's imputation 6x longer with 2 threads than with 1. With one thread per free core nothing waits.

Work split into independent pieces that never wait for one another (the imputation's groups of samples, each solved
on one torch thread) runs on :func:`worker_threads` threads instead: the usable CPUs, busy ones included, since such a
worker still gets its share of a busy CPU and waits for no one.

The decision is taken once (``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``, which would make waiting threads sleep, are
only read when torch is loaded, so an entry point cannot change them; set ``OMP_WAIT_POLICY=PASSIVE`` before starting
Python to trade some speed on an idle machine for robustness when load comes and goes during a long run).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "NUM_THREADS_ENV",
    "ThreadDecision",
    "apply_thread_policy",
    "busy_cpus",
    "cgroup_cpu_limit",
    "decide_num_threads",
    "usable_cpus",
    "worker_threads",
]

logger = logging.getLogger(__name__)

NUM_THREADS_ENV = "MONAI_XAI_NUM_THREADS"
# How long the start-up sample of other processes' CPU use lasts: 25 scheduler ticks per CPU at USER_HZ = 100.
_LOAD_SAMPLE_SECONDS = 0.25
# A CPU counts as free when at least this share of it is idle: a thread next to a process using a quarter of its core
# already waits for slices.
_FREE_SHARE = 0.75
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_FREE_CPUS = "free CPUs"
# the decision of the last apply_thread_policy (an entry point's), which worker_threads follows
_applied: ThreadDecision | None = None


@dataclass(frozen=True)
class ThreadDecision:
    """A thread count and why.

    Attributes:
        num_threads: intra-op threads for torch, >= 1.
        usable_cpus: CPUs this process may run on (affinity mask and cgroup quota).
        source: what decided it: ``"argument"``, ``"MONAI_XAI_NUM_THREADS"``, ``"OMP_NUM_THREADS"`` or
            ``"free CPUs"``.
        busy_cpus: CPUs other processes kept busy during the start-up sample (``"free CPUs"`` only, else None).
    """

    num_threads: int
    usable_cpus: int
    source: str
    busy_cpus: float | None = None

    def __str__(self) -> str:
        busy = f", {self.busy_cpus:.1f} busy with other processes" if self.busy_cpus is not None else ""
        return f"{self.num_threads} torch thread(s): {self.source} ({self.usable_cpus} usable CPU(s){busy})"


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs this process's cgroup may use (quota / period), the tightest of its cgroup and their ancestors.

    Reads cgroup v2 ``cpu.max`` and cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. Inside a container the
    cgroup path of ``/proc/self/cgroup`` may not exist under the mount, whose root then is the container's cgroup.

    Args:
        root: where the cgroup file systems are mounted.
        proc_cgroup: the process's cgroup membership file.

    Returns:
        the limit in CPUs (e.g. 1.5), or None when there is none or it cannot be read.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2, unified
            folders = _cgroup_folders(root, path) or [root]
            limits += [limit for folder in folders if (limit := _v2_limit(folder)) is not None]
        elif "cpu" in controllers.split(","):
            mount = next((root / name for name in (controllers, "cpu,cpuacct", "cpu") if (root / name).is_dir()), None)
            if mount is not None:
                folders = _cgroup_folders(mount, path) or [mount]
                limits += [limit for folder in folders if (limit := _v1_limit(folder)) is not None]
    return min(limits, default=None)


def _cgroup_folders(mount: Path, path: str) -> list[Path]:
    """The folder of cgroup ``path`` under ``mount`` and its ancestors up to the mount; empty if it is not there."""
    leaf = mount / path.strip("/")
    if not leaf.is_dir():
        return []
    return [leaf, *[parent for parent in leaf.parents if parent.is_relative_to(mount)]]


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask (``taskset``, container cpusets), capped by the cgroup quota
    (rounded down, at least 1)."""
    cpus = len(_affinity())
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def _cpu_times(stat: Path, cpus: set[int]) -> tuple[int, int]:
    """(idle, total) clock ticks of ``cpus`` summed from a ``/proc/stat`` snapshot."""
    idle = total = 0
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle += ticks[3] + ticks[4]
        total += sum(ticks)
    return idle, total


def busy_cpus(seconds: float = _LOAD_SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """How many of this process's CPUs other processes keep busy, from two ``/proc/stat`` snapshots ``seconds``
    apart while this thread sleeps (a virtual machine's stolen time counts as busy).

    Returns:
        busy CPUs in [0, number of CPUs in the affinity mask], or None without ``/proc/stat`` (not Linux).
    """
    cpus = _affinity()
    try:
        idle_before, total_before = _cpu_times(stat, cpus)
        time.sleep(seconds)
        idle_after, total_after = _cpu_times(stat, cpus)
    except (OSError, ValueError):
        return None
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    return len(cpus) * (1 - (idle_after - idle_before) / elapsed)


def _count_from(name: str, value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"{name}={value!r} is not a thread count; set it to a positive integer such as 1, or unset it."
        )
    return count


def decide_num_threads(num_threads: int | None = None, environ: Mapping[str, str] | None = None) -> ThreadDecision:
    """The policy of the module docstring: an explicit count, ``MONAI_XAI_NUM_THREADS``, ``OMP_NUM_THREADS``, or the
    free usable CPUs; always at most the usable CPUs.

    Args:
        num_threads: explicit count; wins over the environment.
        environ: environment to read (default ``os.environ``).

    Raises:
        ValueError: a count that is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    usable = usable_cpus()
    if num_threads is not None:
        count, source = _count_from("num_threads", str(num_threads)), "argument"
    elif environ.get(NUM_THREADS_ENV):
        count, source = _count_from(NUM_THREADS_ENV, environ[NUM_THREADS_ENV]), NUM_THREADS_ENV
    elif environ.get("OMP_NUM_THREADS"):
        # OpenMP allows a list for nested levels; the first entry is the outer pool's size
        count, source = _count_from("OMP_NUM_THREADS", environ["OMP_NUM_THREADS"].split(",")[0]), "OMP_NUM_THREADS"
    else:
        busy = busy_cpus()
        if busy is None:
            return ThreadDecision(usable, usable, _FREE_CPUS)
        # a partly idle CPU counts when at least _FREE_SHARE of it is idle
        free = math.floor(usable - busy + 1 - _FREE_SHARE)
        return ThreadDecision(max(1, min(usable, free)), usable, _FREE_CPUS, busy)
    return ThreadDecision(min(count, usable), usable, source)


def apply_thread_policy(num_threads: int | None = None) -> ThreadDecision:
    """Set torch's intra-op threads by :func:`decide_num_threads`; for entry points (command line, ``__main__``,
    server start), once, before any work.

    Args:
        num_threads: explicit count (e.g. a command's ``--threads``); None follows the environment and the machine.

    Returns:
        the decision, for a log line.
    """
    global _applied
    decision = decide_num_threads(num_threads)
    torch.set_num_threads(decision.num_threads)
    _applied = decision
    logger.info("monai-xai: %s", decision)
    return decision


def worker_threads() -> int:
    """Threads for independent pieces of work that never wait for one another, each running torch on one thread (the
    imputation's groups of samples).

    Busy CPUs are left out of torch's count because every multi-threaded operation waits at a barrier for its slowest
    thread. Independent workers have no barrier, and one on a busy CPU still gets its share of that CPU. So after
    :func:`apply_thread_policy` chose the free CPUs this is every usable CPU; after an explicit count (argument or
    environment) it is that count; in a program that never applied the policy it is torch's thread count.
    """
    if _applied is None:
        return torch.get_num_threads()
    return _applied.usable_cpus if _applied.source == _FREE_CPUS else _applied.num_threads
