"""What every renderer of a report says the same way: the header lines and each status's words."""

from __future__ import annotations

from grader.report import PUBLIC_MODE_NOTE, Report, TestStatus

STATUS_WORDS = {
    TestStatus.PASSED: "passed",
    TestStatus.FAILED: "failed",
    TestStatus.ERROR: "raised an error",
    TestStatus.TIMEOUT: "timed out",
    TestStatus.MISSING: "missing",
    TestStatus.NOT_IMPLEMENTED: "not implemented",
    TestStatus.KERNEL_DIED: "kernel died",
}


def header_lines(report: Report) -> list[str]:
    """The score line, then why it could not be graded, the mode's note and the grader's notes.

    Every renderer shows these first and in this order: what matters most to the reader (no
    grade at all) comes before what qualifies a grade.
    """
    lines = [f"{report.submission} ({report.assignment}): "
             f"{report.score:g}/{report.max_score:g} points"]
    if report.status == "invalid":
        lines.append(f"Could not be graded: {report.reason}")
    if report.mode == "public":
        lines.append(PUBLIC_MODE_NOTE)
    lines += [f"Note: {note}" for note in report.notes]
    return lines
