"""`grader check` on screen: a table per function with pass marks, points and hints.

A terminal gets a rich table; a pipe or a file gets the same content as plain text, so that
logs and tests read it without escape codes.

A student may see this screen (a self-check, or an autograder's log), so it shows no seed: the
seed is in the JSON report, the instructor's record.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader.outputs.wording import header_lines
from grader.report import Report, TestStatus

_MARK = {True: "✓", False: "✗"}


def _shared_ending(texts: list[str]) -> str:
    """The longest run of whole sentences that every text ends with."""
    if len(texts) < 2:
        return ""
    ending = texts[0]
    while ending and not all(t.endswith(ending) for t in texts):
        _, _, ending = ending.partition(". ")
    return ending.strip()


def _rows(report: Report, function: str) -> tuple[list[tuple[bool, str, str, str]], list[str]]:
    """(passed, test, points, feedback) for each test of a function, and what its tests all
    say: a hint or a note that every test of a group repeats is said once, under the function.
    Tests naming the same mistake form a group; the tests naming none form another."""
    tests = [t for t in report.tests if t.function == function]
    groups: dict[str | None, list[str]] = {}
    for t in tests:
        groups.setdefault(t.mistake, []).append(t.feedback)
    shared = {key: _shared_ending(texts) for key, texts in groups.items()}
    rows = []
    for t in tests:
        note = t.feedback.removesuffix(shared[t.mistake]).strip() if shared[t.mistake] else (
            t.feedback)
        if t.mistake:
            note = f"{note} [{t.mistake}]".strip()
        rows.append((t.status is TestStatus.PASSED, t.group,
                     f"{t.score:g}/{t.max_score:g}", note))
    said = [f"hint {key}: {text}" if key else f"note: {text}"
            for key, text in shared.items() if text]
    return rows, said


def plain_text(report: Report) -> str:
    """The report as plain text: a block per function, one line per test."""
    lines = header_lines(report)
    for function, (score, top) in report.function_scores().items():
        lines.append(f"{function}  {score:g}/{top:g}")
        rows, hints = _rows(report, function)
        for ok, name, points, note in rows:
            lines.append(f"  {_MARK[ok]} {points:>7}  {name}")
            if note:
                lines.append(f"      {note}")
        lines += [f"  {line}" for line in hints]
    lines += [f"note: {c.where()} ({c.problem}): {c.message}" for c in report.cells]
    return "\n".join(lines)


def print_report(report: Report, stream: TextIO | None = None) -> None:
    """Print the report for a person: rich tables on a terminal, plain text otherwise."""
    stream = stream or sys.stdout
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        print(plain_text(report), file=stream)
        return
    for line in header_lines(report):
        console.print(escape(line), style="bold")
    for function, (score, top) in report.function_scores().items():
        table = Table(title=f"{function}  {score:g}/{top:g}", title_justify="left",
                      show_lines=False, expand=True)
        table.add_column("", width=1)
        table.add_column("test", ratio=2)
        table.add_column("points", justify="right", no_wrap=True)
        table.add_column("hint", ratio=5)
        rows, hints = _rows(report, function)
        for ok, name, points, note in rows:
            table.add_row(f"[green]{_MARK[ok]}[/]" if ok else f"[red]{_MARK[ok]}[/]",
                          escape(name), points, escape(note))
        console.print(table)
        for line in hints:
            console.print(escape(line), style="yellow")
    for c in report.cells:
        console.print(escape(f"note: {c.where()} ({c.problem}): {c.message}"))
