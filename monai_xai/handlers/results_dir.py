"""The folder a run writes its results into: checked before any work, never mixed with another run's results."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

__all__ = ["RESULTS_MARKER", "KEPT_ENTRIES", "prepare_results_dir"]

# written into every results folder; a folder without it that holds files is not ours to delete
RESULTS_MARKER = ".monai-xai-results"
# entries that outlive a run: the embedded MLflow store holds every run's record
KEPT_ENTRIES = ("mlflow",)


def prepare_results_dir(output_dir: str | Path | None, overwrite: bool = False) -> Path:
    """Make ``output_dir`` ready for a new run's results, or say why it cannot be used, before any work is done.

    The folder is created if missing and must be writable. A folder holding an earlier run's results (it has the
    :data:`RESULTS_MARKER`) is refused unless ``overwrite``, which deletes those results first (the ``mlflow/`` store,
    which records every run, stays). A non-empty folder without the marker is refused whatever ``overwrite`` says.

    Args:
        output_dir: the results folder (``xai_output_dir``).
        overwrite: replace an earlier run's results (``xai_overwrite``).

    Returns:
        the folder, resolved.

    Raises:
        ValueError: an empty path, a path that is a file, or a folder holding other files or results.
        PermissionError: a folder that cannot be written.
    """
    if output_dir is None or not str(output_dir).strip():
        raise ValueError("the results folder is empty; set it, e.g. --xai_output_dir eval/xai.")
    folder = Path(output_dir).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the results folder {folder} is a file; choose a folder, e.g. --xai_output_dir {folder}_xai.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write the results folder {folder}: {error.strerror or error}.") from error
    entries = [entry for entry in folder.iterdir() if entry.name not in (RESULTS_MARKER, *KEPT_ENTRIES)]
    marker = folder / RESULTS_MARKER
    if entries and not marker.is_file():
        raise ValueError(
            f"the results folder {folder} already holds files that are not monai-xai results "
            f"({sorted(entry.name for entry in entries)[:5]}); choose an empty or new folder."
        )
    if entries and not overwrite:
        raise ValueError(
            f"the results folder {folder} holds the results of an earlier run ({marker.read_text().strip()}); "
            "choose another folder, or replace them with --xai_overwrite true (overwrite=True)."
        )
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    marker.write_text(f"run started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return folder
