"""The study's rows on disk: one SQLite file that every rank appends to as soon as a value exists.

Tables (all keyed, so a row is written once and a resumed study skips it)::

    scores(bundle, layer, method, case_id, metric, value)      one metric of one map; metric "seconds": its time
    cases(bundle, case_id, label, explained_class, predicted_class, confidence)
    thresholds(bundle, layer, method, value)                   tuned IoU thresholds
    sanity(bundle, layer, method, case_id, spearman)           model-randomisation correlation per case
    reliability(bundle, layer, method, case_id, metric, input_noise, model_noise, control, randomised)
                                                               the metric after each perturbation of the metrics'
                                                               reliability check (NaN: the prediction changed)
    failed(bundle, case_id, files, reason)                     cases that could not be loaded (left out)
    meta(key, value)                                           the study's fingerprint

NaN values (a metric undefined for the case) are stored as NULL and read back as NaN.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from monai_xai.study.fingerprint import study_fingerprint
from monai_xai.study.spec import StudySpec

__all__ = ["RELIABILITY_COLUMNS", "ROWS_FILE", "SCORE_COLUMNS", "StudyStore", "StudyStoreError", "study_store"]

SCORE_COLUMNS = ("bundle", "layer", "method", "case_id", "metric", "value")
# the reliability table's values: the metric after each perturbation (monai_xai.sanity.metric_reliability)
RELIABILITY_COLUMNS = ("input_noise", "model_noise", "control", "randomised")
# the store's file in a study's output folder
ROWS_FILE = "rows.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS scores (
    bundle TEXT, layer TEXT, method TEXT, case_id TEXT, metric TEXT, value REAL,
    PRIMARY KEY (bundle, layer, method, case_id, metric));
CREATE TABLE IF NOT EXISTS cases (
    bundle TEXT, case_id TEXT, label INTEGER, explained_class INTEGER, predicted_class INTEGER,
    confidence REAL, PRIMARY KEY (bundle, case_id));
CREATE TABLE IF NOT EXISTS thresholds (
    bundle TEXT, layer TEXT, method TEXT, value REAL, PRIMARY KEY (bundle, layer, method));
CREATE TABLE IF NOT EXISTS sanity (
    bundle TEXT, layer TEXT, method TEXT, case_id TEXT, spearman REAL, PRIMARY KEY (bundle, layer, method, case_id));
CREATE TABLE IF NOT EXISTS reliability (
    bundle TEXT, layer TEXT, method TEXT, case_id TEXT, metric TEXT,
    input_noise REAL, model_noise REAL, control REAL, randomised REAL,
    PRIMARY KEY (bundle, layer, method, case_id, metric));
CREATE TABLE IF NOT EXISTS failed (
    bundle TEXT, case_id TEXT, files TEXT, reason TEXT, PRIMARY KEY (bundle, case_id));
"""
_TABLES = ("scores", "cases", "thresholds", "sanity", "reliability", "failed")


@functools.cache
def _expected_columns() -> dict[str, list[str]]:
    """``{table: column names}`` of the schema this version writes (read from an in-memory copy of it)."""
    memory = sqlite3.connect(":memory:")
    try:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            memory.execute(statement)
        return {
            table: [row[1] for row in memory.execute(f"PRAGMA table_info({table})")] for table in ("meta", *_TABLES)
        }
    finally:
        memory.close()


class StudyStoreError(RuntimeError):
    """The row store's SQLite file could not be read or written (damaged, not a database, locked, read-only, disk
    full): the message names the file, SQLite's error and what to do."""


def _naming_the_file(method: Callable) -> Callable:
    """``method`` of a :class:`StudyStore` with SQLite's errors raised as :class:`StudyStoreError` naming the file."""

    @functools.wraps(method)
    def named(self: StudyStore, *args: object, **kwargs: object) -> object:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, pd.errors.DatabaseError) as error:
            raise StudyStoreError(
                f"the study's row store {self.path} failed ({type(error).__name__}: {error}). The rows computed so "
                "far are in that file: if it is damaged or not a database, move it away and run the study again (its "
                "rows are recomputed); if it is locked, stop the other process using it; if the disk is full or the "
                "folder read-only, make room or choose another output_dir."
            ) from error

    return named


def _stored(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class StudyStore:
    """The row store of one study in ``path`` (created on first use).

    Args:
        path: SQLite file, e.g. ``<output_dir>/rows.sqlite``.
        fingerprint: the study's :meth:`~monai_xai.study.StudySpec.fingerprint`; a store holding rows of another
            fingerprint is refused (its rows were computed under other settings).

    Raises:
        ValueError: the store belongs to a study with other settings.
    """

    @_naming_the_file
    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # several ranks write the same file: wait for each other's short transactions
        self._connection = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self._connection.execute("PRAGMA busy_timeout = 120000")
        with self._transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._connection.execute(statement)
            self._connection.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
            found = self._connection.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0]
        if found != fingerprint:
            raise ValueError(
                f"{self.path} holds the rows of this study run with other settings or files (data, bundles, "
                "metric_args, IoU threshold, sanity, batch_size or seed changed, or the content of a weights, "
                "temperature, datalist or image file); rerun with --overwrite to start again, or choose another "
                "output_dir."
            )
        for table, columns in _expected_columns().items():
            found = [row[1] for row in self._connection.execute(f"PRAGMA table_info({table})")]
            if found != columns:
                raise ValueError(
                    f"{self.path} was written by another version of monai-xai: its table {table!r} has the columns "
                    f"{found}, this version writes {columns}; rerun with --overwrite to start again, or choose "
                    "another output_dir."
                )

    def _transaction(self) -> sqlite3.Connection:
        return _Transaction(self._connection)

    def close(self) -> None:
        self._connection.close()

    @_naming_the_file
    def missing(
        self, bundle: str, layer: str, method: str, case_ids: Sequence[str], metrics: Sequence[str]
    ) -> dict[str, set[str]]:
        """``{metric: case ids without a stored row}`` for the given cases and metrics (metrics with none left out)."""
        marks = ",".join("?" * len(case_ids))
        rows = self._connection.execute(
            "SELECT case_id, metric FROM scores WHERE bundle = ? AND layer = ? AND method = ? "
            f"AND case_id IN ({marks})",
            (bundle, layer, method, *case_ids),
        ).fetchall()
        stored = set(rows)
        needed = {metric: {case for case in case_ids if (case, metric) not in stored} for metric in metrics}
        return {metric: cases for metric, cases in needed.items() if cases}

    @_naming_the_file
    def add_scores(self, rows: Iterable[tuple[str, str, str, str, str, float]]) -> None:
        """Store ``(bundle, layer, method, case_id, metric, value)`` rows in one transaction; existing rows stay."""
        with self._transaction():
            self._connection.executemany(
                "INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                [(*row[:5], _stored(row[5])) for row in rows],
            )

    @_naming_the_file
    def add_cases(self, rows: Iterable[tuple]) -> None:
        """Store ``(bundle, case_id, label, explained_class, predicted_class, confidence)`` rows."""
        with self._transaction():
            self._connection.executemany(
                "INSERT OR IGNORE INTO cases VALUES (?, ?, ?, ?, ?, ?)", [(*row[:5], _stored(row[5])) for row in rows]
            )

    @_naming_the_file
    def threshold(self, bundle: str, layer: str, method: str) -> float | None:
        row = self._connection.execute(
            "SELECT value FROM thresholds WHERE bundle = ? AND layer = ? AND method = ?", (bundle, layer, method)
        ).fetchone()
        return None if row is None else float(row[0])

    @_naming_the_file
    def set_threshold(self, bundle: str, layer: str, method: str, value: float) -> None:
        with self._transaction():
            self._connection.execute(
                "INSERT OR IGNORE INTO thresholds VALUES (?, ?, ?, ?)", (bundle, layer, method, float(value))
            )

    @_naming_the_file
    def sanity_missing(self, bundle: str, layer: str, method: str, case_ids: Sequence[str]) -> list[str]:
        """The case ids without a stored randomisation correlation."""
        stored = {
            row[0]
            for row in self._connection.execute(
                "SELECT case_id FROM sanity WHERE bundle = ? AND layer = ? AND method = ?", (bundle, layer, method)
            )
        }
        return [case for case in case_ids if case not in stored]

    @_naming_the_file
    def add_sanity(self, rows: Iterable[tuple[str, str, str, str, float]]) -> None:
        with self._transaction():
            self._connection.executemany(
                "INSERT OR IGNORE INTO sanity VALUES (?, ?, ?, ?, ?)", [(*row[:4], _stored(row[4])) for row in rows]
            )

    @_naming_the_file
    def reliability_missing(
        self, bundle: str, layer: str, method: str, case_ids: Sequence[str], metrics: Sequence[str]
    ) -> list[str]:
        """The case ids that lack a reliability row of some of ``metrics``."""
        stored = set(
            self._connection.execute(
                "SELECT case_id, metric FROM reliability WHERE bundle = ? AND layer = ? AND method = ?",
                (bundle, layer, method),
            ).fetchall()
        )
        return [case for case in case_ids if any((case, metric) not in stored for metric in metrics)]

    @_naming_the_file
    def add_reliability(self, rows: Iterable[tuple]) -> None:
        """Store ``(bundle, layer, method, case_id, metric, input_noise, model_noise, control, randomised)`` rows;
        existing rows stay."""
        with self._transaction():
            self._connection.executemany(
                "INSERT OR IGNORE INTO reliability VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row[:5], *(_stored(value) for value in row[5:9])) for row in rows],
            )

    @_naming_the_file
    def add_failed(self, bundle: str, case_id: str, files: str, reason: str) -> None:
        """Record a case that could not be loaded (the latest reason replaces an earlier one)."""
        with self._transaction():
            self._connection.execute(
                "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?)", (bundle, case_id, files, reason)
            )

    @_naming_the_file
    def table(self, name: str) -> pd.DataFrame:
        """A whole table as a DataFrame (NULL values as NaN)."""
        if name not in _TABLES:
            raise ValueError(f"no table {name!r}; the tables are {', '.join(_TABLES)}.")
        frame = pd.read_sql_query(f"SELECT * FROM {name}", self._connection)
        for column in ("value", "spearman", "confidence", *RELIABILITY_COLUMNS):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column]).astype(float)
        return frame


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): a writer takes the lock before reading."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.connection.execute("ROLLBACK" if kind else "COMMIT")


def study_store(spec: StudySpec) -> StudyStore:
    """The row store of ``spec`` in its output folder, for its settings and the content of its files
    (:func:`~monai_xai.study.fingerprint.study_fingerprint`)."""
    return StudyStore(Path(spec.output_dir) / ROWS_FILE, study_fingerprint(spec))
