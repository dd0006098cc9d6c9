"""Files written whole or not at all: every file a run produces goes through a temporary name in its own folder and is
renamed into place once complete, so a killed run or a full disk never leaves a truncated file under a final name
(a truncated HTML page or CSV table looks complete to a reader)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_csv", "atomic_write_text", "check_writable"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same folder, same extensions, hidden) to write to; on success it is
    renamed to ``path`` (``os.replace``: atomic on one file system), on error it is removed and ``path`` is left as it
    was. The folder is created when missing.

    Example::

        with atomic_path(folder / "plot.png") as partial:
            figure.savefig(partial)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(path.suffixes[-2:]) if path.name.endswith((".nii.gz", ".seg.nrrd")) else path.suffix
    partial = path.with_name(f".{path.name[: len(path.name) - len(suffixes)]}.partial-{os.getpid()}{suffixes}")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` whole or not at all (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def atomic_write_csv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]
) -> Path:
    """Write a CSV table whole or not at all: a header of ``columns``, then one line per row (a mapping gives the
    columns by name, missing ones empty; a sequence gives them in order); returns ``path``."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(column, "") for column in columns] if isinstance(row, Mapping) else row)
    return atomic_write_text(path, text.getvalue())


def check_writable(path: str | Path, argument: str) -> None:
    """Fail before any work when ``path`` cannot be written (its folder is created if missing): a long run must not
    end by losing its result to a read-only or mistyped output path.

    Raises:
        ValueError: naming ``--<argument>``, the path and the operating system's reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--{argument} {path} cannot be written ({error.strerror or error}); choose another path."
        ) from error
