"""One student's feedback page: self-contained HTML that opens from disk.

It reads the report and nothing else. Text from the student (exception messages, values they
returned) reaches it only through the report, and is escaped. Students read it, so it shows no
seed: with it, the hidden cases could be drawn again.
"""

from __future__ import annotations

import html

from grader.outputs.wording import STATUS_WORDS, header_lines
from grader.report import Report, TestResult, TestStatus, Visibility

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
    mark = "&#10003; passed" if ok else f"&#10007; {_e(STATUS_WORDS[t.status])}"
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
    # The score line is the paragraph above; the rest of the header follows it as notes.
    parts += [f"<p class=\"note\">{_e(line)}</p>" for line in header_lines(report)[1:]]
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
