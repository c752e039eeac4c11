"""The server's HTML pages: plain forms and tables, no scripts; every string escaped here."""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime

from grader.service.store import Session, Submission

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
nav { display: flex; gap: 1em; align-items: center; border-bottom: 1px solid #ccc;
      padding-bottom: 0.5em; margin-bottom: 1em; }
nav form { margin-left: auto; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; }
th, td { text-align: left; padding: 0.35em 0.6em; border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; }
.late { color: #b42318; }
.box { background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.8em 1em; margin: 1em 0; }
.error { background: #fdecea; border-left: 4px solid #b42318; padding: 0.6em 0.8em; }
input[type=text], input[type=password] { width: 24em; }
td form { display: inline; margin-right: 0.5em; }
img { max-width: 100%; }
"""


def e(text: object) -> str:
    """Text made safe for HTML, attributes included."""
    return html.escape(str(text), quote=True)


def csrf_field(token: str) -> str:
    """The hidden field every form of a signed-in page carries."""
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def layout(title: str, body: str, current: Session | None = None, refresh: int = 0) -> str:
    """A whole page: head, the navigation of the signed-in user, the body."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    nav = ""
    if current is not None:
        home = "/instructor" if current.user.role == "instructor" else "/assignments"
        nav = (f'<nav><a href="{home}">Home</a><span>Signed in as <b>{e(current.user.name)}'
               f'</b> ({e(current.user.id)})</span><form method="post" action="/logout">'
               f'{csrf_field(current.csrf)}<button>Sign out</button></form></nav>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title>{meta}<style>{_CSS}</style></head><body>{nav}"
            f"<h1>{e(title)}</h1>{body}</body></html>")


def when(stamp: str | datetime | None) -> str:
    """A timestamp as people read it, in UTC."""
    if stamp is None:
        return "none"
    moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment.utcoffset() is not None else (
        moment.strftime("%Y-%m-%d %H:%M:%S"))


def points(value: float | None, top: float | None = None) -> str:
    """A score, with its maximum when known."""
    if value is None:
        return "&ndash;"
    return f"{value:g}" + (f" / {top:g}" if top is not None else "")


def state_words(s: Submission, position: int | None = None) -> str:
    """Where a submission stands, in words."""
    if s.state == "queued":
        return (f"waiting, number {position} in the queue" if position
                else "waiting in the queue") + (" (regrade)" if s.regrade else "")
    if s.state == "running":
        return "being graded"
    return "graded" if s.status == "graded" else "could not be graded"


def sign_in(csrf: str, error: str = "") -> str:
    """The sign-in page."""
    problem = f'<p class="error">{e(error)}</p>' if error else ""
    return layout("Sign in", f"""{problem}
<form method="post" action="/login"><input type="hidden" name="csrf" value="{e(csrf)}">
<p><label>Your token <input type="password" name="token" autocomplete="off" autofocus></label>
</p><p><button>Sign in</button></p></form>
<p>Your instructor gave you the token once; ask them for a new one if it is lost.</p>""")


def problem(title: str, message: str, current: Session | None = None) -> str:
    """A page that says what went wrong."""
    return layout(title, f'<p class="error">{e(message)}</p>', current)


def history_table(rows: Iterable[tuple[Submission, int | None]], counting: Submission | None,
                  student: bool) -> str:
    """A student's submissions, newest first, with the one that counts marked."""
    def deadline(s: Submission) -> str:
        return f"<span class=late>late, &times;{s.multiplier:g}</span>" if s.late else "on time"

    body = "".join(
        f'<tr><td><a href="/submissions/{s.id}">#{s.id}</a></td><td>{e(s.filename)}</td>'
        f"<td>{e(when(s.submitted_at))}</td>"
        f"<td>{deadline(s)}</td>"
        f"<td>{e(state_words(s, position))}</td><td>{points(s.score, s.max_score)}</td>"
        f"<td>{points(s.counted)}{' &#9733; counts' if counting and s.id == counting.id else ''}"
        "</td></tr>" for s, position in rows)
    who = "your" if student else "the student's"
    if not body:
        return "<p>No submissions yet.</p>"
    return ("<table><tr><th>Submission</th><th>File</th><th>Submitted</th><th>Lateness</th>"
            f"<th>Status</th><th>Score</th><th>Counted</th></tr>{body}</table>"
            f"<p>&#9733; marks the score that counts: {who} latest graded submission, "
            "late credit applied.</p>")
