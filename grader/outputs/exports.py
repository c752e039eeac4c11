"""Exports of reports: a feedback page per student, Gradescope results, the class picture.

Every export reads the pydantic Report and nothing else. Text from the student (exception
messages, values they returned) reaches these files only through the report, and is escaped.
Students read these files, so none shows the report's seed: with it, the hidden cases could be
drawn again.
"""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.files import write_atomic
from grader.report import PUBLIC_MODE_NOTE, Report, TestResult, TestStatus, Visibility
from grader.spec import AssignmentSpec

_STATUS_WORDS = {
    TestStatus.PASSED: "passed",
    TestStatus.FAILED: "failed",
    TestStatus.ERROR: "raised an error",
    TestStatus.TIMEOUT: "timed out",
    TestStatus.MISSING: "missing",
    TestStatus.NOT_IMPLEMENTED: "not implemented",
    TestStatus.KERNEL_DIED: "kernel died",
}


def report_lines(report: Report) -> list[str]:
    """A plain-text account of the report: the score, then each test that did not pass."""
    lines = [f"{report.submission}: {report.score:g}/{report.max_score:g} points"]
    if report.status == "invalid":
        lines.append(f"Could not be graded: {report.reason}")
        return lines
    if report.mode == "public":
        lines.append(PUBLIC_MODE_NOTE)
    lines += [f"{t.name} [{_STATUS_WORDS[t.status]}]: {t.feedback}"
              for t in report.tests if t.status is not TestStatus.PASSED]
    lines += [f"{c.where()} ({c.problem}): {c.message}" for c in report.cells]
    lines += [f"Note: {note}" for note in report.notes]
    return lines


def gradescope_results(report: Report) -> dict[str, Any]:
    """Gradescope's autograder results.json for one report.

    Every test is `visible` to the student: hidden cases are hidden inside our tests (their
    feedback never carries their inputs), not by hiding the test itself.
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
                "visibility": "visible",
                **({"tags": [t.mistake]} if t.mistake else {}),
            }
            for t in report.tests
        ],
    }


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.score { font-size: 1.2em; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0; }
th, td { text-align: left; vertical-align: top; padding: 0.35em 0.6em;
         border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; }
.passed { color: #1a7f37; font-weight: bold; white-space: nowrap; }
.failed { color: #b42318; font-weight: bold; white-space: nowrap; }
.mistake { font-family: monospace; font-size: 0.9em; color: #6b4a00; }
.cases td, .cases th { font-family: monospace; font-size: 0.9em; }
.note { background: #fff8e1; padding: 0.6em 0.8em; border-left: 4px solid #e0a800; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _test_row(t: TestResult) -> str:
    ok = t.status is TestStatus.PASSED
    mark = "&#10003; passed" if ok else f"&#10007; {_e(_STATUS_WORDS[t.status])}"
    error = ""
    if t.visibility is Visibility.HIDDEN and t.max_error is not None and not ok:
        error = f"<br><small>largest error: {t.max_error:.3g}</small>"
    mistake = (f"<br><span class=\"mistake\">known mistake: {_e(t.mistake)}</span>"
               if t.mistake else "")
    cases = ""
    if t.visibility is Visibility.VISIBLE and t.details:
        head = "".join(f"<th>{_e(k)}</th>" for k in t.details[0].inputs)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in d.inputs.values())
            + f"<td>{_e(d.expected)}</td><td>{_e(d.got)}</td></tr>" for d in t.details)
        cases = (f"<table class=\"cases\"><tr>{head}<th>expected</th><th>got</th></tr>"
                 f"{rows}</table>")
    return (f"<tr><td>{_e(t.group)}<br><small>"
            f"{'shown in the notebook' if t.visibility is Visibility.VISIBLE else 'hidden cases'}"
            f"</small></td><td class=\"{'passed' if ok else 'failed'}\">{mark}</td>"
            f"<td>{t.score:g}/{t.max_score:g}</td>"
            f"<td>{_e(t.feedback)}{mistake}{error}{cases}</td></tr>")


def feedback_html(report: Report, title: str = "") -> str:
    """One self-contained feedback page: no scripts, no external resources, opens from disk."""
    parts = [
        "<!DOCTYPE html>",
        "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Feedback: {_e(report.submission)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title or report.assignment)}</h1>",
        f"<p>Submission <b>{_e(report.submission)}</b> &middot; "
        f"<span class=\"score\">{report.score:g} / {report.max_score:g} points</span></p>",
    ]
    if report.status == "invalid":
        parts.append(f"<p class=\"note\">This notebook could not be graded: "
                     f"{_e(report.reason)}</p>")
    if report.mode == "public":
        parts.append(f"<p class=\"note\">{_e(PUBLIC_MODE_NOTE)}</p>")
    parts += [f"<p class=\"note\">{_e(note)}</p>" for note in report.notes]
    for function, (score, top) in report.function_scores().items():
        parts.append(f"<h2><code>{_e(function)}</code> &mdash; {score:g}/{top:g}</h2>")
        parts.append("<table><tr><th>Test</th><th>Status</th><th>Points</th>"
                     "<th>Feedback</th></tr>")
        parts += [_test_row(t) for t in report.tests if t.function == function]
        parts.append("</table>")
    if report.cells:
        parts.append("<h2>Notebook cells that did not run cleanly</h2><ul>")
        parts += [f"<li>{_e(c.where())} ({_e(c.problem)}): {_e(c.message)}</li>"
                  for c in report.cells]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def class_mistakes(reports: Mapping[str, Report]) -> Counter[str]:
    """How many students show each known mistake (once per student, however many tests)."""
    return Counter(m for r in reports.values() for m in {t.mistake for t in r.tests if t.mistake})


def summary_png(reports: Mapping[str, Report], spec: AssignmentSpec) -> bytes:
    """The class at a glance: score distribution, pass rate per function, common mistakes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    graded = [r for r in reports.values() if r.status == "graded"]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    scores_ax, pass_ax, mistakes_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    fig.suptitle(f"{spec.title}: {len(reports)} submissions", fontsize=12)

    top = spec.max_score
    scores_ax.hist([r.score for r in reports.values()], bins=min(12, max(4, int(top) + 1)),
                   range=(0, top), color="#4c72b0", edgecolor="white")
    scores_ax.set(title="Score distribution", xlabel=f"score (out of {top:g})",
                  ylabel="students")
    scores_ax.yaxis.get_major_locator().set_params(integer=True)

    names = [f.name for f in spec.functions]
    rates = []
    for name in names:
        full = [r.function_scores().get(name, (0.0, 1.0)) for r in graded]
        rates.append(100 * sum(s >= m for s, m in full) / len(full) if full else 0.0)
    bars = pass_ax.barh(names[::-1], rates[::-1], color="#55a868")
    pass_ax.bar_label(bars, fmt="%.0f%%", padding=3)
    pass_ax.set(title="Full marks per function", xlim=(0, 115), xlabel="% of graded students")

    common = class_mistakes(reports).most_common(8)
    if common:
        ids = [m for m, _ in common][::-1]
        bars = mistakes_ax.barh(ids, [n for _, n in common][::-1], color="#c44e52")
        mistakes_ax.bar_label(bars, padding=3)
        mistakes_ax.xaxis.get_major_locator().set_params(integer=True)
        mistakes_ax.set_xlim(0, max(n for _, n in common) * 1.25)
    else:
        mistakes_ax.text(0.5, 0.5, "no known mistake found", ha="center", va="center",
                         transform=mistakes_ax.transAxes)
        mistakes_ax.set_yticks([])
    mistakes_ax.set(title="Most common misconceptions", xlabel="students")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_summary_png(path: Path, reports: Mapping[str, Report], spec: AssignmentSpec) -> None:
    """Write the class picture atomically: never half a picture."""
    write_atomic(path, summary_png(reports, spec))
