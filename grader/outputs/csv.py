"""grades.csv: one row per student, a column per function, then total, max and status."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping

from grader.outputs.summary import function_score
from grader.report import Report
from grader.spec import AssignmentSpec
from grader.wire import safe_text


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run: an id like `=HYPERLINK(...)` is a formula there."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def grades_csv(reports: Mapping[str, Report], spec: AssignmentSpec) -> str:
    """One row per student: a column per function, then total, max and status."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", *(f.name for f in spec.functions), "score", "max_score",
                     "status"])
    for student, report in sorted(reports.items()):
        # An id is a file name, which need not be valid UTF-8.
        writer.writerow([_cell(safe_text(student)),
                         *(f"{function_score(report, f):g}" for f in spec.functions),
                         f"{report.score:g}", f"{report.max_score:g}", report.status])
    return out.getvalue()
