"""Real servers for the tests (an MLflow tracking server, a MONAI Label server) on 127.0.0.1: a free port, started as
a subprocess, waited for, stopped."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["free_port", "running_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_server(
    command: Sequence[str], ready_url: str, log_path: Path, timeout_s: float = 120.0, **popen_kwargs: Any
) -> Iterator[subprocess.Popen]:
    """Start ``command`` (output to ``log_path``), wait until ``ready_url`` answers 200, stop it on exit.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s``; the message ends with its log.
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, **popen_kwargs)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(ready_url):
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {process.returncode}" if process.poll() is not None else f"{timeout_s:g} s"
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
                raise RuntimeError(f"{Path(command[0]).name} did not answer {ready_url} ({state}); log:\n{tail}")
            time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
