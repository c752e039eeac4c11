"""Gradescope's autograder results.json for one report.

It reads the report and nothing else, and shows no seed: students read it.
"""

from __future__ import annotations

from typing import Any, Literal

from grader.outputs.wording import STATUS_WORDS, header_lines
from grader.report import Report, TestStatus, Visibility

# When Gradescope shows a student the verdicts on hidden cases: at once, after the due date, or
# once the instructor publishes the grades.
HiddenVisibility = Literal["visible", "after_due_date", "after_published"]
HIDDEN_VISIBILITIES: tuple[str, ...] = ("visible", "after_due_date", "after_published")


def report_lines(report: Report) -> list[str]:
    """A plain-text account of the report: the header, then each test that did not pass."""
    lines = header_lines(report)
    if report.status == "invalid":
        return lines
    lines += [f"{t.name} [{STATUS_WORDS[t.status]}]: {t.feedback}"
              for t in report.tests if t.status is not TestStatus.PASSED]
    lines += [f"{c.where()} ({c.problem}): {c.message}" for c in report.cells]
    return lines


def gradescope_results(report: Report, hidden: HiddenVisibility = "visible") -> dict[str, Any]:
    """Gradescope's autograder results.json for one report.

    Hidden cases are hidden inside our tests (their feedback never carries their inputs); `hidden`
    also sets when Gradescope shows the tests judged on them, while the worked examples stay
    visible at once.
    """
    return {
        "score": report.score,
        "execution_time": max(0, round(report.duration_s)),
        "output": "\n".join(report_lines(report)),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [
            {
                "name": t.name,
                "score": t.score,
                "max_score": t.max_score,
                "status": "passed" if t.status is TestStatus.PASSED else "failed",
                "output": t.feedback,
                "visibility": "visible" if t.visibility is Visibility.VISIBLE else hidden,
                **({"tags": [t.mistake]} if t.mistake else {}),
            }
            for t in report.tests
        ],
    }


def gradescope_failure(message: str, execution_time: float = 0) -> dict[str, Any]:
    """results.json for a submission that could not be graded: no points, and the reason."""
    return {"score": 0, "execution_time": max(0, round(execution_time)), "output": message,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": []}
