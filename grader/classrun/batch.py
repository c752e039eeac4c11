"""Grade a class: a report for every submission, the new ones graded concurrently, all kept.

The submissions come from `grader.classrun.sources`. Reports go to the gradebook (one
transaction each, as soon as a submission is judged); OUT/<student>.json and OUT/grades.csv are
written from it at the end, atomically. Each student's cases are drawn from a seed keyed by the
gradebook's secret, so only the gradebook's holder can compute them. A submission whose notebook
and grading key (`grader.classrun.keys`: grader build, spec and reference, seed, settings) have
not changed since its stored report is not run again, so a killed run is finished by running the
same command. Whatever fails while one student's report is recorded or written is that
student's failure: reported, retried by the next run, and no obstacle to the others.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grader import __version__
from grader.classrun.gradebook import Gradebook, GradingKey, utc_now
from grader.classrun.keys import grader_build, grading_settings, spec_hash, student_seed
from grader.classrun.sources import SourceError, Submission, find_submissions, open_source
from grader.files import PARTIAL, write_atomic
from grader.grade import grade_notebook
from grader.judge.reference import reference_namespace
from grader.outputs.csv import grades_csv
from grader.outputs.gradescope import gradescope_results
from grader.outputs.html import feedback_html
from grader.outputs.plot import write_summary_png
from grader.outputs.progress import ClassConsole, Verbosity
from grader.report import Report, TestStatus
from grader.run.pool import KernelPool
from grader.run.sandbox import choose_sandbox, sweep_leftovers
from grader.run.session import KernelManagerFactory
from grader.settings import Limits
from grader.spec import AssignmentSpec
from grader.wire import safe_text


def _write_if_changed(path: Path, text: str) -> None:
    # A re-run rewrites nothing that is already right: cheaper than an fsync per student.
    if _read_text(path) != text:
        write_atomic(path, text)


def _remove_partial_files(out: Path) -> None:
    """Temporary files a killed run left behind; the finished files beside them are intact."""
    for leftover in out.rglob(f".*{PARTIAL}*"):
        leftover.unlink(missing_ok=True)


def write_student_outputs(out: Path, student: str, report: Report, spec: AssignmentSpec,
                          gradescope: bool = False) -> None:
    """A student's files in OUT: the JSON report, the HTML feedback page, and Gradescope's
    results when asked."""
    _write_if_changed(out / f"{student}.json", report.model_dump_json(indent=2))
    _write_if_changed(out / f"{student}.html", feedback_html(report, spec.title))
    if gradescope:
        # A folder of their own: `<id>.gradescope.json` beside the reports would be the report
        # of a student whose id is `<id>.gradescope`.
        (out / "gradescope").mkdir(exist_ok=True)
        _write_if_changed(out / "gradescope" / f"{student}.json",
                          json.dumps(gradescope_results(report), indent=2))


def write_class_outputs(out: Path, reports: dict[str, Report], spec: AssignmentSpec) -> None:
    """The class's files in OUT, from every student's report: grades.csv and summary.png."""
    _write_if_changed(out / "grades.csv", grades_csv(reports, spec))
    # The picture takes seconds to draw; a re-run that changed no report keeps it. The stamp
    # is written after the picture, so a run killed in between draws it again.
    stamp, fingerprint = out / ".summary.png.source", _class_fingerprint(reports, spec)
    if not (out / "summary.png").is_file() or _read_text(stamp) != fingerprint:
        write_summary_png(out / "summary.png", reports, spec)
        write_atomic(stamp, fingerprint)


def _class_fingerprint(reports: dict[str, Report], spec: AssignmentSpec) -> str:
    digest = hashlib.sha256(spec.digest.encode())
    for student, report in sorted(reports.items()):
        digest.update(f"{student}\0{report.model_dump_json()}\0".encode())
    return digest.hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def not_one_notebook(submission: Submission, spec: AssignmentSpec, seed: int) -> Report:
    """The report of a student id that maps to no notebook or to several."""
    names = ", ".join(f"{p.parent.name}/{p.name}" for p in submission.files)
    if names:
        reason = f"several notebooks map to student id {submission.student!r} ({names}); keep one"
    else:
        reason = f"the folder {submission.student}/ holds no notebook (.ipynb file)"
    return Report(assignment=spec.name, submission=names or f"{submission.student}/",
                  status="invalid", score=0, reason=reason, max_score=spec.max_score, seed=seed,
                  grader_version=__version__, duration_s=0)


def grader_failure(spec: AssignmentSpec, sandbox: str, submission: str, seed: int, reason: str,
                   duration_s: float = 0.0) -> Report:
    """The report of a submission the grader itself failed on (`reason`), not the student."""
    return Report(assignment=spec.name, submission=submission, status="invalid",
                  reason=f"the grader failed: {reason}", score=0, max_score=spec.max_score,
                  seed=seed, grader_version=__version__, duration_s=duration_s, sandbox=sandbox)


Done = Callable[[Submission, GradingKey, Report, str, bool], None]


class Executor(Protocol):
    """What grades a class run's submissions: kernels on this machine (ClassRun) or a cluster's
    workers (grader.classrun.cluster.ClusterRun)."""

    failures: list[str]
    warnings: list[str]

    @property
    def spec(self) -> AssignmentSpec:
        """The assignment graded."""
        ...

    @property
    def limits(self) -> Limits:
        """The limits every kernel of the run grades under."""
        ...

    @property
    def sandbox(self) -> str:
        """The sandbox every kernel of the run grades in: part of each report's key."""
        ...

    def failed(self, student: str, submission: str, seed: int, reason: str,
               duration_s: float = 0.0) -> Report:
        """The report of a student the grader failed; not kept, retried by the next run."""
        ...

    async def grade_all(self, todo: list[tuple[Submission, GradingKey]], done: Done) -> None:
        """Grade `todo`; `done(submission, key, report, started_at, keep)` as each finishes."""
        ...


@dataclass
class ClassRun:
    """How to grade: shared by every submission of one run."""

    spec: AssignmentSpec
    limits: Limits
    jobs: int
    km_factory: KernelManagerFactory
    sandbox: str
    # Whether each kernel gets a CPU share of its own (see grade_all).
    fair_shares: bool = True
    # Kernels started ahead of the submissions that will take them (see grader.run.pool).
    ahead: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def failed(self, student: str, submission: str, seed: int, reason: str,
               duration_s: float = 0.0) -> Report:
        """The report of a student the grader itself failed; it is not kept, and the next run
        tries again."""
        report = grader_failure(self.spec, self.sandbox, submission, seed, reason, duration_s)
        self.failures.append(f"{safe_text(student)}: {report.reason}")
        return report

    async def grade(self, submission: Submission, seed: int,
                    kernels: KernelPool | None = None) -> tuple[Report, bool]:
        """The submission's report, and whether it may be kept (False: the grader itself failed)."""
        if submission.notebook is None:
            return not_one_notebook(submission, self.spec, seed), True
        started = time.monotonic()
        try:
            report = await grade_notebook(submission.notebook, self.spec, seed, self.limits,
                                          km_factory=self.km_factory, sandbox=self.sandbox,
                                          kernels=kernels)
        except Exception as exc:  # a kernel that cannot start, a full disk: not the student's
            return self.failed(submission.student, submission.notebook.name, seed,
                               f"{type(exc).__name__}: {exc}",
                               time.monotonic() - started), False
        return report, True

    async def grade_all(self, todo: list[tuple[Submission, GradingKey]],
                        done: Callable[[Submission, GradingKey, Report, str, bool], None]
                        ) -> None:
        """Grade `todo`, `jobs` submissions at once, each in a kernel started ahead while earlier
        ones are graded; `done` is called as each finishes."""
        pending = iter(todo)
        # Without a CPU share per kernel, a neighbour's processes can push a submission past its
        # timeouts: what timed out (or hung) while sharing the machine is graded again, alone.
        shared = not self.fair_shares and min(self.jobs, len(todo)) > 1
        again: list[tuple[Submission, GradingKey]] = []

        async def worker(kernels: KernelPool | None) -> None:
            for submission, key in pending:
                started_at = utc_now()
                report, keep = await self.grade(submission, key.seed, kernels)
                if shared and keep and _ran_out_of_time(report):
                    again.append((submission, key))
                else:
                    done(submission, key, report, started_at, keep)

        # A submission without a notebook needs no kernel.
        needed = sum(s.notebook is not None for s, _ in todo)
        # Without kernels ahead, each kernel starts for its submission, as in `grade` alone.
        ahead = (KernelPool(self.limits, self.km_factory, self.ahead, total=needed)
                 if self.ahead > 0 else contextlib.nullcontext())
        async with ahead as kernels, asyncio.TaskGroup() as group:
            for _ in range(min(self.jobs, len(todo))):
                group.create_task(worker(kernels))
        for submission, key in again:
            started_at = utc_now()
            report, keep = await self.grade(submission, key.seed)
            done(submission, key, report, started_at, keep)


def _ran_out_of_time(report: Report) -> bool:
    """Whether a cell or a call of the report timed out or left a kernel that had to die."""
    lost = (TestStatus.TIMEOUT, TestStatus.KERNEL_DIED)
    return (any(c.problem in ("timeout", "kernel_died") for c in report.cells)
            or any(t.status in lost for t in report.tests))


def default_jobs() -> int:
    """The CPUs this process may run on (fewer than the machine's when pinned to some)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run at a time per OUT folder: two would race on the same files."""
    with (out / ".grader.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SourceError(f"another grader run is writing to {out}") from None
        yield


def grade_class(source: Path, out: Path, spec: AssignmentSpec, limits: Limits, *,
                jobs: int | None = None, force: bool = False,
                gradebook: Path | None = None, verbosity: Verbosity = Verbosity.NORMAL,
                km_factory: KernelManagerFactory | None = None,
                sandbox: str = "none", gradescope: bool = False,
                cluster: str | None = None, ahead: int | None = None) -> int:
    """Grade every submission in `source` into `out`; 0 when each got a report, 1 when the
    grader itself failed on some (their reports are not kept; run again).

    Kernels start in the sandbox `limits.sandbox` chooses; a caller that brings its own
    `km_factory` names its sandbox in `sandbox`. `jobs` submissions are graded at once, and
    `ahead` kernels (default: one per CPU) start ahead of the submissions that will take them.
    With `cluster` (a Dask scheduler's address, or `local:N`), the cluster's workers grade
    instead (grader.classrun.cluster).

    Raises SourceError for an unusable source or output folder, SpecError for a broken spec or
    reference, SandboxUnavailable and GradebookError, and with `cluster` UsageError (no such
    address, or Dask not installed) and ClusterError: each a GraderError.
    """
    reference_namespace(spec)  # a broken reference would fail every student: stop now
    try:
        spec_key = spec_hash(spec)
    except OSError as exc:
        raise SourceError(str(exc)) from None
    book_path = gradebook or out / "gradebook.sqlite"
    # What the kernels must not be able to read: the course's files, the submissions, OUT.
    hidden = (spec.source, spec.reference_path, source, out, book_path)
    if cluster is not None:
        from grader.classrun.cluster import ClusterRun

        with ClusterRun.connect(cluster, spec, limits, hide=hidden) as on_cluster:
            _grade_source(on_cluster, spec_key, source, out, book_path, force, verbosity,
                          gradescope)
        return 1 if on_cluster.failures else 0
    fair_shares = True
    if km_factory is None:
        # Chosen before any stored report is reused: the sandbox a report was graded in is part
        # of what it was computed from.
        box = choose_sandbox(limits.sandbox, hide=hidden, kernel_start=limits.kernel_start)
        km_factory, sandbox, fair_shares = box.factory(limits), box.name, box.fair_shares
    run = ClassRun(spec, limits, jobs or default_jobs(), km_factory, sandbox,
                   fair_shares=fair_shares, ahead=default_jobs() if ahead is None else ahead)
    # What an earlier run, killed, left: kernels, cgroups, scratch folders.
    run.warnings += sweep_leftovers()
    _grade_source(run, spec_key, source, out, book_path, force, verbosity, gradescope)
    # A failure of the grader itself (a kernel that cannot start) is no verdict on the student:
    # its report is not kept, and the exit status says that a re-run is due.
    return 1 if run.failures else 0


def _grade_source(run: Executor, spec_key: str, source: Path, out: Path, book_path: Path,
                  force: bool, verbosity: Verbosity, gradescope: bool) -> None:
    """Grade the submissions of `source` into `out` and the gradebook at `book_path`."""
    with open_source(source) as folder:
        submissions = find_submissions(folder)
        if not submissions:
            raise SourceError(f"no notebooks found in {source}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(f"cannot create {out}: {exc}") from None
        with _exclusive(out):
            _remove_partial_files(out)
            with Gradebook(book_path) as book:
                _grade_submissions(run, spec_key, submissions, book, force, verbosity, out,
                                   gradescope)


def _grade_submissions(run: Executor, spec_key: str, submissions: dict[str, Submission],
                       book: Gradebook, force: bool, verbosity: Verbosity, out: Path,
                       gradescope: bool) -> None:
    """A report for every submission, kept from the gradebook where still valid, else graded;
    then every file of OUT written from them."""
    stored = book.entries(run.spec.name)
    settings = grading_settings(run.limits, run.sandbox)
    reports: dict[str, Report] = {}
    todo: list[tuple[Submission, GradingKey]] = []
    for student, submission in submissions.items():
        key = GradingKey(submission.content_hash(), grader_build(), spec_key,
                         student_seed(run.spec, student, book.secret), settings)
        entry = stored.get(student)
        if entry is not None and entry.key == key and not force:
            with contextlib.suppress(ValueError):  # a row that no longer reads: graded again
                reports[student] = entry.report()
                continue
        todo.append((submission, key))

    with ClassConsole(verbosity, total=len(submissions), kept=len(reports)) as console:
        for warning in run.warnings:
            console.warn(f"cleaning up after an earlier run: {warning}")
        for submission in submissions.values():
            if len(submission.files) > 1:
                console.warn(f"several notebooks for student {submission.student!r}: "
                             + ", ".join(map(str, submission.files)))
        for student, report in reports.items():
            console.finished(safe_text(student), report, kept=True)

        def done(submission: Submission, key: GradingKey, report: Report, started_at: str,
                 keep: bool) -> None:
            student = submission.student
            if keep:
                try:
                    book.record(student, key, report, started_at)
                except Exception as exc:  # a report that cannot be stored, a full disk
                    report = run.failed(student, report.submission, key.seed,
                                        f"its report could not be recorded: "
                                        f"{type(exc).__name__}: {exc}", report.duration_s)
            reports[student] = report
            console.finished(safe_text(student), report, kept=False)

        asyncio.run(run.grade_all(todo, done))
        for student, report in list(reports.items()):
            try:
                write_student_outputs(out, student, report, run.spec, gradescope)
            except Exception as exc:  # a file name too long, a page that cannot be made
                reports[student] = run.failed(student, report.submission, report.seed,
                                              f"its files could not be written: "
                                              f"{type(exc).__name__}: {exc}", report.duration_s)
                # Best effort on a path already reported: a row left behind is kept by the
                # next run, which then fails to write the same files and says so again.
                with contextlib.suppress(Exception):
                    book.forget(run.spec.name, student)
                with contextlib.suppress(Exception):
                    write_student_outputs(out, student, reports[student], run.spec, gradescope)
        write_class_outputs(out, reports, run.spec)
        for failure in run.failures:
            console.warn(f"not kept, will be retried on the next run: {failure}")
        console.summary(reports, run.spec, graded=len(todo))
