"""The server's records: roster, sessions, submissions with their queue state, rate limits and
extensions, in one SQLite file (WAL, every commit synced).

A submission row is written only after its notebook is on disk and synced, and it keeps its
report in the same row: a submission has at most one report, replaced only by a regrade. A row
is `queued`, `running` or `done`; a server that stops mid-run finds `running` rows at its next
start and queues them again.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from grader.classrun.gradebook import transaction
from grader.errors import GraderError
from grader.report import Report

SCHEMA_VERSION = 1
# Sessions last a working week; a student signs in again with the same token after that.
SESSION_SECONDS = 7 * 24 * 3600

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS users (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('student', 'instructor')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        key_hash   TEXT PRIMARY KEY,
        user       TEXT NOT NULL REFERENCES users (id),
        csrf       TEXT NOT NULL,
        expires    REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS submissions (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        student      TEXT NOT NULL REFERENCES users (id),
        assignment   TEXT NOT NULL,
        filename     TEXT NOT NULL,
        folder       TEXT NOT NULL UNIQUE,
        content_hash TEXT NOT NULL,
        submitted_at TEXT NOT NULL,
        deadline     TEXT,
        late         INTEGER NOT NULL,
        multiplier   REAL NOT NULL,
        tokens_left  REAL NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
        regrade      INTEGER NOT NULL DEFAULT 0,
        queued_seq   INTEGER NOT NULL,
        status       TEXT,
        score        REAL,
        max_score    REAL,
        report_json  TEXT,
        started_at   TEXT,
        finished_at  TEXT)""",
    "CREATE INDEX IF NOT EXISTS queue ON submissions (state, regrade, queued_seq)",
    "CREATE INDEX IF NOT EXISTS by_student ON submissions (assignment, student, id)",
    "CREATE INDEX IF NOT EXISTS waiting_by_student ON submissions (student, state)",
    """CREATE TABLE IF NOT EXISTS buckets (
        assignment TEXT NOT NULL,
        student    TEXT NOT NULL,
        tokens     REAL NOT NULL,
        at         REAL NOT NULL,
        PRIMARY KEY (assignment, student))""",
    """CREATE TABLE IF NOT EXISTS extensions (
        assignment TEXT NOT NULL,
        student    TEXT NOT NULL,
        deadline   TEXT NOT NULL,
        PRIMARY KEY (assignment, student))""",
]

# The order of the queue: new submissions before regrades; then each student's turn, how many of
# their own submissions are being graded or wait ahead (so one student's burst of slow notebooks
# takes turns with everyone else's instead of holding every kernel); then arrival.
_QUEUE = ("WITH q AS (SELECT id, regrade, queued_seq, row_number() OVER (PARTITION BY student "
          "ORDER BY regrade, queued_seq) - 1 + (SELECT count(*) FROM submissions r WHERE "
          "r.student = s.student AND r.state = 'running') AS turn FROM submissions s WHERE "
          "state = 'queued') SELECT id FROM q ORDER BY regrade, turn, queued_seq")

# What a roster id may be: it names files in the downloads (a Gradescope zip, say).
USER_ID = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,63}")

Role = Literal["student", "instructor"]


class StoreError(GraderError):
    """The server's database cannot be opened, or a roster change is refused."""


def now_iso() -> str:
    """A timestamp for the records: ISO 8601, UTC, to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256. Tokens carry 192 random bits, so a fast hash
    cannot be searched backwards."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A sign-in token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class User:
    """Someone on the roster."""

    id: str
    name: str
    role: Role


@dataclass(frozen=True)
class Session:
    """A signed-in browser: whose it is and the token its forms must carry."""

    user: User
    csrf: str


@dataclass(frozen=True)
class Submission:
    """One uploaded notebook and where it stands."""

    id: int
    student: str
    assignment: str
    filename: str
    folder: str
    content_hash: str
    submitted_at: str
    deadline: str | None
    late: bool
    multiplier: float
    tokens_left: float
    state: str
    regrade: bool
    status: str | None
    score: float | None
    max_score: float | None
    report_json: str | None
    started_at: str | None
    finished_at: str | None

    @property
    def counted(self) -> float | None:
        """The score after the late multiplier; none before a graded report."""
        return None if self.score is None or self.status != "graded" else (
            self.score * self.multiplier)

    def report(self) -> Report | None:
        """The stored report, validated again on the way out."""
        return None if self.report_json is None else _parsed(self.report_json)


@functools.lru_cache(maxsize=1024)
def _parsed(report_json: str) -> Report:
    # Reports are immutable, and validating hundreds of them is most of a dashboard's time:
    # a class's counting reports stay parsed (a thousand of them, some tens of MB at most).
    return Report.model_validate_json(report_json)


_COLUMNS = ("id, student, assignment, filename, folder, content_hash, submitted_at, deadline, "
            "late, multiplier, tokens_left, state, regrade, status, score, max_score, "
            "report_json, started_at, finished_at")


def _submission(row: tuple) -> Submission:
    values = list(row)
    values[8], values[12] = bool(values[8]), bool(values[12])
    return Submission(*values)


@dataclass(frozen=True)
class Refused:
    """A submission the rate limit refused: when the next one will be taken."""

    retry_after_s: float


class Store:
    """The server's SQLite file: open once per process; every method commits what it changes."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"{path} holds server schema {version}; this grader writes "
                                 f"{SCHEMA_VERSION}")
            # WAL: readers (a dashboard) never wait for the queue; FULL: a committed row
            # survives a power cut.
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the server database {path}: {exc}") from None

    def close(self) -> None:
        """Close the file; everything is committed already."""
        self._db.close()

    def _transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    # --- roster and sessions -----------------------------------------------------------------

    def add_user(self, user_id: str, name: str, role: Role, replace: bool = False) -> str:
        """Put someone on the roster; returns their new token, which is stored only hashed."""
        token = new_token()
        with self._transaction():
            known = self._db.execute("SELECT role FROM users WHERE id = ?", (user_id,)).fetchone()
            if known and not replace:
                raise StoreError(f"{user_id!r} is on the roster already; --new-token gives "
                                 "them a new token (the old one stops working)")
            if known:
                self._db.execute("UPDATE users SET name = ?, role = ?, token_hash = ? "
                                 "WHERE id = ?", (name, role, token_hash(token), user_id))
                self._db.execute("DELETE FROM sessions WHERE user = ?", (user_id,))
            else:
                self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                                 (user_id, name, role, token_hash(token), now_iso()))
        return token

    def users(self, role: Role | None = None) -> list[User]:
        """Everyone on the roster (or of one role), by id."""
        rows = self._db.execute("SELECT id, name, role FROM users ORDER BY id").fetchall()
        return [User(*r) for r in rows if role is None or r[2] == role]

    def user(self, user_id: str) -> User | None:
        """One person on the roster, if there."""
        row = self._db.execute("SELECT id, name, role FROM users WHERE id = ?",
                               (user_id,)).fetchone()
        return User(*row) if row else None

    def sign_in(self, token: str) -> tuple[str, Session] | None:
        """A new session for the holder of `token`: its key (for the cookie) and the session."""
        row = self._db.execute("SELECT id, name, role FROM users WHERE token_hash = ?",
                               (token_hash(token),)).fetchone()
        if row is None:
            return None
        key, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._transaction():
            self._db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                             (token_hash(key), row[0], csrf, time.time() + SESSION_SECONDS))
        return key, Session(User(*row), csrf)

    def session(self, key: str) -> Session | None:
        """The live session a cookie names, if any."""
        row = self._db.execute(
            "SELECT u.id, u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user "
            "WHERE s.key_hash = ? AND s.expires >= ?", (token_hash(key), time.time())).fetchone()
        return Session(User(*row[:3]), row[3]) if row else None

    def sign_out(self, key: str) -> None:
        """End a session."""
        with self._transaction():
            self._db.execute("DELETE FROM sessions WHERE key_hash = ?", (token_hash(key),))

    # --- submissions ---------------------------------------------------------------------------

    def take_token(self, assignment: str, student: str, capacity: int, refill_s: float
                   ) -> float | Refused:
        """Spend one submission from the student's bucket: the tokens left, or when the next
        one comes. Called in the transaction of `add_submission`."""
        now = time.time()
        row = self._db.execute("SELECT tokens, at FROM buckets WHERE assignment = ? AND "
                               "student = ?", (assignment, student)).fetchone()
        tokens = float(capacity) if row is None else min(capacity, row[0] + (now - row[1])
                                                         / refill_s)
        if tokens < 1:
            return Refused((1 - tokens) * refill_s)
        self._db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?)",
                         (assignment, student, tokens - 1, now))
        return tokens - 1

    def refund_token(self, assignment: str, student: str, capacity: int) -> None:
        """Give back the submission a notebook that could not be graded spent."""
        with self._transaction():
            self._db.execute("UPDATE buckets SET tokens = min(?, tokens + 1) WHERE "
                             "assignment = ? AND student = ?", (capacity, assignment, student))

    def add_submission(self, *, student: str, assignment: str, filename: str, folder: str,
                       content_hash: str, deadline: datetime | None, late: bool,
                       multiplier: float, capacity: int, refill_s: float) -> int | Refused:
        """Queue a notebook already on disk, spending a token of the student's bucket; its id,
        or Refused when the bucket is empty (nothing is recorded then)."""
        with self._transaction():
            left = self.take_token(assignment, student, capacity, refill_s)
            if isinstance(left, Refused):
                return left
            cursor = self._db.execute(
                "INSERT INTO submissions (student, assignment, filename, folder, content_hash, "
                "submitted_at, deadline, late, multiplier, tokens_left, state, queued_seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', "
                "(SELECT coalesce(max(queued_seq), 0) + 1 FROM submissions))",
                (student, assignment, filename, folder, content_hash, now_iso(),
                 deadline.isoformat() if deadline else None, int(late), multiplier, left))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def submission(self, submission_id: int) -> Submission | None:
        """One submission, whoever's it is: callers check who may see it."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM submissions WHERE id = ?",
                               (submission_id,)).fetchone()
        return _submission(row) if row else None

    def history(self, assignment: str, student: str) -> list[Submission]:
        """A student's submissions to an assignment, newest first."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM submissions WHERE assignment = ? AND "
                                "student = ? ORDER BY id DESC", (assignment, student))
        return [_submission(r) for r in rows]

    def all_submissions(self, assignment: str, reports: bool = True) -> list[Submission]:
        """Every submission to an assignment, oldest first; without their reports (None) when
        `reports` is false, which keeps a large class's dashboard fast."""
        columns = _COLUMNS if reports else _COLUMNS.replace("report_json", "NULL")
        rows = self._db.execute(f"SELECT {columns} FROM submissions WHERE assignment = ? "
                                "ORDER BY id", (assignment,))
        return [_submission(r) for r in rows]

    def counting(self, assignment: str) -> dict[str, Submission]:
        """Each student's submission whose score counts: their latest graded one."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM submissions WHERE id IN (SELECT max(id) FROM submissions "
            "WHERE assignment = ? AND status = 'graded' GROUP BY student)", (assignment,))
        return {s.student: s for s in map(_submission, rows)}

    def queue_positions(self) -> dict[int, int]:
        """Every waiting submission's place in the queue, 1 for the next to be graded."""
        return {row[0]: place for place, row in enumerate(self._db.execute(_QUEUE), start=1)}

    def queue_position(self, submission_id: int) -> int | None:
        """1 for the next submission to be graded; none unless it waits."""
        return self.queue_positions().get(submission_id)

    def waiting(self) -> int:
        """Submissions queued or being graded."""
        return self._db.execute("SELECT count(*) FROM submissions WHERE state != 'done'"
                                ).fetchone()[0]

    def claim(self) -> Submission | None:
        """The next submission to grade, marked running: students' new ones before regrades,
        each student's in turn with everyone else's."""
        with self._transaction():
            row = self._db.execute(f"{_QUEUE} LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE submissions SET state = 'running', started_at = ? "
                             "WHERE id = ?", (now_iso(), row[0]))
        return self.submission(row[0])

    def finish(self, submission_id: int, report: Report) -> bool:
        """Store the report of a running submission; False when it was not running (its
        report is stored already)."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE submissions SET state = 'done', regrade = 0, status = ?, score = ?, "
                "max_score = ?, report_json = ?, finished_at = ? WHERE id = ? AND "
                "state = 'running'", (report.status, report.score, report.max_score,
                                      report.model_dump_json(), now_iso(), submission_id))
        return cursor.rowcount == 1

    def requeue(self, submission_id: int) -> None:
        """Put a running submission back in its place in the queue, to be graded again."""
        with self._transaction():
            self._db.execute("UPDATE submissions SET state = 'queued' WHERE id = ? AND "
                             "state = 'running'", (submission_id,))

    def requeue_running(self) -> int:
        """At start: what a stopped server was grading waits again; returns how many."""
        with self._transaction():
            return self._db.execute("UPDATE submissions SET state = 'queued' WHERE "
                                    "state = 'running'").rowcount

    def regrade(self, submission_ids: list[int]) -> int:
        """Queue graded submissions again, behind every student's new one; how many."""
        queued = 0
        with self._transaction():
            for submission_id in submission_ids:
                queued += self._db.execute(
                    "UPDATE submissions SET state = 'queued', regrade = 1, queued_seq = "
                    "(SELECT max(queued_seq) + 1 FROM submissions) WHERE id = ? AND "
                    "state = 'done'", (submission_id,)).rowcount
        return queued

    def folders(self) -> set[str]:
        """Every submission's upload folder."""
        return {r[0] for r in self._db.execute("SELECT folder FROM submissions")}

    # --- deadlines -----------------------------------------------------------------------------

    def extend(self, assignment: str, student: str, deadline: datetime) -> None:
        """Give one student a deadline of their own for an assignment."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO extensions VALUES (?, ?, ?)",
                             (assignment, student, deadline.isoformat()))

    def extensions(self, assignment: str) -> dict[str, datetime]:
        """The students with a deadline of their own, and theirs."""
        rows = self._db.execute("SELECT student, deadline FROM extensions WHERE assignment = ?",
                                (assignment,))
        return {s: datetime.fromisoformat(d) for s, d in rows}
