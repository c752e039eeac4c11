"""The class at a glance from the reports alone: what the terminal and summary.png both show."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from grader.report import Report, TestStatus
from grader.spec import AssignmentSpec, FunctionSpec

SLOWEST_SHOWN = 5


@dataclass(frozen=True)
class FunctionSummary:
    """How the class did on one function."""

    name: str
    passed: int  # submissions with full marks on the function
    mean_score: float
    max_score: float


@dataclass(frozen=True)
class ClassSummary:
    """The class at a glance, computed from the reports alone."""

    submissions: int
    invalid: int
    mean_score: float
    median_score: float
    max_score: float
    functions: list[FunctionSummary]
    failures: dict[str, int]  # test status (or "invalid") -> how many tests (or submissions)
    slowest: list[tuple[str, float, str]]  # student, seconds, status
    sandboxes: dict[str, int]  # the layers graded submissions ran in -> how many

    def full_marks_percent(self, function: FunctionSummary) -> float:
        """The share of all submissions with full marks on the function: one that could not be
        graded counts as one without."""
        return 100 * function.passed / max(self.submissions, 1)


def function_score(report: Report, function: FunctionSpec) -> float:
    """The points a report gives a function (none when it could not be graded)."""
    return report.function_scores().get(function.name, (0.0, function.max_score))[0]


def class_summary(reports: Mapping[str, Report], spec: AssignmentSpec) -> ClassSummary:
    """Scores, per-function full marks, failures by status and the slowest submissions."""
    scores = [r.score for r in reports.values()] or [0.0]
    functions = []
    for f in spec.functions:
        got = [function_score(r, f) for r in reports.values()]
        functions.append(FunctionSummary(
            f.name, sum(1 for g in got if g >= f.max_score), statistics.fmean(got or [0.0]),
            f.max_score))
    failures: dict[str, int] = {}
    for report in reports.values():
        if report.status == "invalid":
            failures["invalid"] = failures.get("invalid", 0) + 1
        for t in report.tests:
            if t.status is not TestStatus.PASSED:
                failures[t.status.value] = failures.get(t.status.value, 0) + 1
    slowest = sorted(((s, r.duration_s, r.status) for s, r in reports.items()),
                     key=lambda row: -row[1])[:SLOWEST_SHOWN]
    sandboxes: dict[str, int] = {}
    for report in reports.values():
        if report.status == "graded":
            sandboxes[report.sandbox] = sandboxes.get(report.sandbox, 0) + 1
    return ClassSummary(
        submissions=len(reports), invalid=failures.get("invalid", 0),
        mean_score=statistics.fmean(scores), median_score=statistics.median(scores),
        max_score=spec.max_score, functions=functions, failures=failures, slowest=slowest,
        sandboxes=sandboxes)


def class_mistakes(reports: Mapping[str, Report]) -> Counter[str]:
    """How many students show each known mistake (once per student, however many tests)."""
    return Counter(m for r in reports.values() for m in {t.mistake for t in r.tests if t.mistake})
