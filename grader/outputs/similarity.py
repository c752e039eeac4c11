"""similarity.csv and similarity.html: the flagged pairs of a class, for a person to read.

Every student string (names, code) is escaped; the page is self-contained, with no script.
The flags are evidence, not a verdict: no grade depends on them.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from grader.classrun.similarity import Pair, Similarity
from grader.files import write_atomic
from grader.outputs.csv import _cell
from grader.wire import safe_text

# Pairs below the threshold shown for comparison, so that a reader sees how far apart they are.
UNFLAGGED_SHOWN = 5

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 110em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; }
.note { background: #fff8e1; padding: 0.6em 0.8em; border-left: 4px solid #e0a800; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.pair h3 { font-size: 1em; margin: 0.3em 0; }
pre { background: #fafafa; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto;
      font-size: 0.85em; line-height: 1.35; white-space: pre-wrap; word-break: break-all; }
mark { background: #ffd6a5; }
"""


def _e(text: object) -> str:
    return html.escape(safe_text(str(text)), quote=True)


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def similarity_csv(result: Similarity) -> str:
    """One row per flagged pair, highest score first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["first", "second", "score", "share_first", "share_second"])
    for p in result.flagged:
        writer.writerow([_cell(safe_text(p.first)), _cell(safe_text(p.second)),
                         f"{p.score:.3f}", f"{p.share_first:.3f}", f"{p.share_second:.3f}"])
    return out.getvalue()


def marked(code: str, spans: list[tuple[int, int]]) -> str:
    """The code, escaped, with the shared passages in <mark>."""
    parts, at = [], 0
    for start, end in sorted(spans):
        start, end = max(start, at), min(end, len(code))
        if start >= end:
            continue
        parts += [_e(code[at:start]), "<mark>", _e(code[start:end]), "</mark>"]
        at = end
    parts.append(_e(code[at:]))
    return "".join(parts)


def _pair_section(result: Similarity, p: Pair, number: int) -> str:
    return (f"<h2 id='pair-{number}'>{number}. {_e(p.first)} and {_e(p.second)}: "
            f"score {p.score:.2f}</h2><div class='pair'>"
            f"<div><h3>{_e(p.first)}: {_pct(p.share_first)} of their own code is found in "
            f"{_e(p.second)}'s</h3><pre>{marked(result.codes[p.first], p.passages_first)}</pre>"
            f"</div><div><h3>{_e(p.second)}: {_pct(p.share_second)} of their own code is "
            f"found in {_e(p.first)}'s</h3>"
            f"<pre>{marked(result.codes[p.second], p.passages_second)}</pre></div></div>")


def similarity_html(result: Similarity, title: str) -> str:
    """The page: the flagged pairs side by side with the shared passages marked."""
    flagged = result.flagged
    rows = "".join(f"<tr><td><a href='#pair-{i}'>{i}</a></td><td>{_e(p.first)}</td>"
                   f"<td>{_e(p.second)}</td><td>{p.score:.2f}</td></tr>"
                   for i, p in enumerate(flagged, 1))
    below = result.pairs[len(flagged):len(flagged) + UNFLAGGED_SHOWN]
    below_rows = "".join(f"<tr><td>{_e(p.first)}</td><td>{_e(p.second)}</td>"
                         f"<td>{p.score:.2f}</td></tr>" for p in below)
    skipped = "".join(f"<li>{_e(s)}: {_e(why)}</li>" for s, why in sorted(result.skipped.items()))
    body = [
        f"<h1>Similar code: {_e(title)}</h1>",
        "<p class='note'>Evidence for a person to read, not a verdict: similar code can have "
        "innocent causes, and no grade depends on these flags. The handout's code and passages "
        "that many submissions share are left out; identifiers are compared by kind, not by "
        "name, so renaming hides nothing. A pair's score is the larger share of one's own "
        "code found in the other's.</p>",
        f"<p>{len(result.codes)} submissions compared, {len(result.pairs)} pairs; "
        f"{len(flagged)} at or above the threshold {result.threshold:g}.</p>",
    ]
    if flagged:
        body.append(f"<table><tr><th>#</th><th>first</th><th>second</th><th>score</th></tr>"
                    f"{rows}</table>")
    if below:
        body.append(f"<p>The highest pairs below the threshold:</p><table><tr><th>first</th>"
                    f"<th>second</th><th>score</th></tr>{below_rows}</table>")
    if skipped:
        body.append(f"<p>Not compared:</p><ul>{skipped}</ul>")
    body += [_pair_section(result, p, i) for i, p in enumerate(flagged, 1)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Similar code: {_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def write_similarity(result: Similarity, out: Path, title: str) -> tuple[Path, Path]:
    """Write OUT/similarity.csv and OUT/similarity.html; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out / "similarity.csv", out / "similarity.html"
    write_atomic(csv_path, similarity_csv(result))
    write_atomic(html_path, similarity_html(result, title))
    return csv_path, html_path
