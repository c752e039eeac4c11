"""PrairieLearn's external-grader results.json for one report.

It reads the report and nothing else, and shows no seed: students read it.
"""

from __future__ import annotations

from typing import Any

from grader.outputs.gradescope import report_lines
from grader.report import Report


def prairielearn_results(report: Report) -> dict[str, Any]:
    """PrairieLearn's results.json: score in 0..1, one entry per test; a notebook that cannot
    be graded is `gradable: false`, which costs the student no attempt."""
    message = "\n".join(report_lines(report))
    if report.status == "invalid":
        return prairielearn_failure(report.reason or "the notebook could not be graded", message)
    return {
        "gradable": True,
        "score": report.score / report.max_score if report.max_score > 0 else 0.0,
        "message": message,
        "tests": [{"name": t.name, "points": t.score, "max_points": t.max_score,
                   "message": t.feedback} for t in report.tests],
    }


def prairielearn_failure(reason: str, message: str | None = None) -> dict[str, Any]:
    """results.json for a submission the grader could not grade: not gradable, and why."""
    return {"gradable": False, "format_errors": [reason], "message": message or reason,
            "tests": []}
