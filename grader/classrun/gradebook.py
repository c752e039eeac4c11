"""The gradebook: an SQLite file with the latest report of every student, one row each.

A row is committed in its own transaction as soon as a submission is judged, so a run that is
killed keeps every report it finished and nothing half-written. A row also records what it was
computed from (the notebook's content hash, the grader version, the spec hash, the seed, and the
settings: limits, sandbox, mode and library versions): a later run reuses it only while all of
them still match.

The file also holds the class's secret, made once with the gradebook: every student's seed is
derived from it (grader.judge.cases.keyed_seed), so the graded cases cannot be computed without this
file. It is the instructor's record: never hand it out. A re-run with the same gradebook draws
the same cases; a new gradebook draws new ones (and grades everything again).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from grader.errors import GraderError
from grader.report import Report

# Bumped when the table's layout changes; a file of an older layout is brought up to date
# (_MIGRATIONS), one of a newer or unknown layout is refused rather than misread.
SCHEMA_VERSION = 2

# The secret's size: 256 bits from the operating system's random source.
SECRET_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    assignment     TEXT    NOT NULL,
    student        TEXT    NOT NULL,
    content_hash   TEXT    NOT NULL,
    grader_version TEXT    NOT NULL,
    spec_hash      TEXT    NOT NULL,
    seed           INTEGER NOT NULL,
    settings       TEXT    NOT NULL,
    score          REAL    NOT NULL,
    max_score      REAL    NOT NULL,
    status         TEXT    NOT NULL,
    started_at     TEXT    NOT NULL,
    finished_at    TEXT    NOT NULL,
    report_json    TEXT    NOT NULL,
    PRIMARY KEY (assignment, student)
)
"""

# One row. A table of its own, so that a gradebook written before it existed simply gains it.
_SECRET_SCHEMA = """
CREATE TABLE IF NOT EXISTS secret (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    value BLOB    NOT NULL
)
"""
# Schema version -> the statements that bring a file of that version to the next one.
_MIGRATIONS = {
    # Rows graded before the settings were recorded match no settings: graded again.
    1: ["ALTER TABLE reports ADD COLUMN settings TEXT NOT NULL DEFAULT ''"],
}


class GradebookError(GraderError):
    """The gradebook file cannot be opened or was written by an incompatible grader."""


@dataclass(frozen=True)
class GradingKey:
    """What a report was computed from; a report is reused only while every part matches."""

    content_hash: str
    grader_version: str
    spec_hash: str
    seed: int
    # What else can change a verdict (limits, sandbox, mode, library versions), as canonical
    # JSON: readable in the gradebook, and compared as text.
    settings: str


@dataclass(frozen=True)
class Entry:
    """One stored row: the key it was graded under, when, and the report."""

    key: GradingKey
    started_at: str
    finished_at: str
    report_json: str

    def report(self) -> Report:
        """The stored report, validated again on the way out."""
        return Report.model_validate_json(self.report_json)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises (a connection opened with
    isolation_level=None, whose transactions are its own)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def utc_now() -> str:
    """A timestamp for the gradebook: ISO 8601, UTC, to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Gradebook:
    """Latest report per (assignment, student), with the key it was graded under."""

    def __init__(self, path: Path) -> None:
        try:
            # isolation_level=None: transactions are opened explicitly, one per recorded report.
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise GradebookError(f"cannot open gradebook {path}: {exc}") from None
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = self._db.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'reports'").fetchone()[0]
            if tables and version not in (*_MIGRATIONS, SCHEMA_VERSION):
                self._db.close()
                raise GradebookError(
                    f"{path} holds gradebook schema {version}; this grader writes {SCHEMA_VERSION}")
            # WAL: a commit is one append and one fsync, and readers (an instructor's query)
            # never block the run. FULL: a committed report survives a power cut too.
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA busy_timeout = 10000")
            with self._transaction():
                while tables and version != SCHEMA_VERSION:
                    for statement in _MIGRATIONS[version]:
                        self._db.execute(statement)
                    version += 1
                self._db.execute(_SCHEMA)
                self._db.execute(_SECRET_SCHEMA)
                # OR IGNORE: made once, and two runs opening a new gradebook at once agree on it.
                self._db.execute("INSERT OR IGNORE INTO secret (id, value) VALUES (0, ?)",
                                 (secrets.token_bytes(SECRET_BYTES),))
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            (self._secret,) = self._db.execute("SELECT value FROM secret").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise GradebookError(f"cannot open gradebook {path}: {exc}") from None
        if not isinstance(self._secret, bytes) or len(self._secret) < SECRET_BYTES:
            # A secret shorter than made here was not made here: guessable cases, refused.
            self._db.close()
            raise GradebookError(f"{path} holds a damaged secret; grade into a new gradebook")

    @property
    def secret(self) -> bytes:
        """The secret the graded cases of this gradebook's students are drawn from."""
        return self._secret

    def close(self) -> None:
        """Close the file; every recorded report is already committed."""
        self._db.close()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def entries(self, assignment: str) -> dict[str, Entry]:
        """Every stored row of one assignment, by student."""
        rows = self._db.execute(
            "SELECT student, content_hash, grader_version, spec_hash, seed, settings, "
            "started_at, finished_at, report_json FROM reports WHERE assignment = ?",
            (assignment,))
        return {student: Entry(GradingKey(content, version, spec_hash, seed, settings), started,
                               finished, report_json)
                for (student, content, version, spec_hash, seed, settings, started, finished,
                     report_json) in rows}

    def record(self, student: str, key: GradingKey, report: Report, started_at: str) -> Entry:
        """Store a student's report, replacing an older one, in a transaction of its own."""
        entry = Entry(key, started_at, utc_now(), report.model_dump_json())
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO reports (assignment, student, content_hash, "
                "grader_version, spec_hash, seed, settings, score, max_score, status, "
                "started_at, finished_at, report_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (report.assignment, student, key.content_hash, key.grader_version,
                 key.spec_hash, key.seed, key.settings, report.score, report.max_score,
                 report.status, entry.started_at, entry.finished_at, entry.report_json))
        return entry

    def forget(self, assignment: str, student: str) -> None:
        """Drop a student's row, so that the next run grades the submission again."""
        with self._transaction():
            self._db.execute("DELETE FROM reports WHERE assignment = ? AND student = ?",
                             (assignment, student))

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self._db)
