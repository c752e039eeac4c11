"""What a class run shows on the terminal: a progress bar while grading, a summary at the end."""

from __future__ import annotations

import os
import sys
from enum import IntEnum
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from grader.outputs.summary import ClassSummary, class_summary
from grader.report import Report
from grader.spec import AssignmentSpec


class Verbosity(IntEnum):
    """How much a class run prints: nothing but warnings, a bar and the summary, or a line per
    submission too."""

    QUIET = 0
    NORMAL = 1
    VERBOSE = 2


def _tables(summary: ClassSummary, graded: int) -> list[Table]:
    overview = Table(title="Class", show_header=False)
    overview.add_row("submissions", str(summary.submissions))
    overview.add_row("graded in this run", str(graded))
    overview.add_row("kept from the gradebook", str(summary.submissions - graded))
    overview.add_row("could not be graded", str(summary.invalid))
    overview.add_row("mean score", f"{summary.mean_score:.2f} / {summary.max_score:g}")
    overview.add_row("median score", f"{summary.median_score:g} / {summary.max_score:g}")
    # Every layer the graded submissions ran in; reports kept from earlier runs may differ.
    overview.add_row("sandbox", ", ".join(
        f"{name} ({count})" for name, count in sorted(summary.sandboxes.items())) or "-")

    functions = Table(title="Functions")
    for column in ("function", "full marks", "mean points"):
        functions.add_column(column, justify="left" if column == "function" else "right")
    for f in summary.functions:
        functions.add_row(
            f.name, f"{f.passed}/{summary.submissions} ({summary.full_marks_percent(f):.0f}%)",
            f"{f.mean_score:.2f} / {f.max_score:g}")

    failures = Table(title="Failures by status")
    failures.add_column("status")
    failures.add_column("count", justify="right")
    for status, count in sorted(summary.failures.items(), key=lambda kv: -kv[1]):
        label = "invalid (submissions)" if status == "invalid" else f"{status} (tests)"
        failures.add_row(label, str(count))
    if not summary.failures:
        failures.add_row("none", "0")

    slowest = Table(title="Slowest submissions")
    for column in ("student", "seconds", "status"):
        slowest.add_column(column, justify="right" if column == "seconds" else "left")
    for student, seconds, status in summary.slowest:
        slowest.add_row(Text(student), f"{seconds:.1f}", status)  # an id is not markup
    return [overview, functions, failures, slowest]


class _Console(Console):
    """A console whose reader may go away (`grader grade -v ... | head`): rich would end the
    process there; a class run goes on silently and still writes every file."""

    def on_broken_pipe(self) -> None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class ClassConsole:
    """Progress while a class is graded: a bar on a terminal, nothing in a log unless asked."""

    def __init__(self, verbosity: Verbosity, total: int, kept: int) -> None:
        self._verbosity = verbosity
        self._out = _Console()
        self._err = Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if verbosity is not Verbosity.QUIET and self._out.is_terminal:
            self._progress = Progress(
                TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn(), console=self._out)
            # Kept reports start the bar filled that far without counting towards the speed.
            self._task = self._progress.add_task("grading", total=total, completed=kept)

    def __enter__(self) -> ClassConsole:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _print(self, text: str) -> None:
        console = self._progress.console if self._progress else self._out
        console.print(text, highlight=False, markup=False)

    def finished(self, student: str, report: Report, kept: bool) -> None:
        """One submission has its report (kept: from the gradebook, not graded again)."""
        if self._progress is not None and self._task is not None and not kept:
            self._progress.advance(self._task)
        if self._verbosity is Verbosity.VERBOSE:
            how = "kept" if kept else f"{report.duration_s:.1f} s"
            self._print(f"{student:<24} {report.score:>5g}/{report.max_score:g}  "
                        f"{report.status:<8} ({how})")

    def warn(self, message: str) -> None:
        """A problem the instructor must see, whatever the verbosity."""
        self._err.print(f"grader: warning: {message}", highlight=False, markup=False)

    def summary(self, reports: dict[str, Report], spec: AssignmentSpec, graded: int) -> None:
        """The end-of-run tables, unless quiet."""
        if self._verbosity is Verbosity.QUIET:
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        for table in _tables(class_summary(reports, spec), graded):
            self._out.print(table)
