"""The server's routes: sign-in, the students' pages and uploads, the instructors' dashboard,
downloads and actions. Every route that names a submission checks that it is the signed-in
student's own (else 404, the same answer as for a submission that does not exist)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import unicodedata
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from grader.classrun.sources import file_sha256
from grader.files import write_atomic
from grader.outputs.csv import grades_csv
from grader.outputs.gradescope import gradescope_results
from grader.outputs.html import feedback_html
from grader.outputs.plot import summary_png
from grader.outputs.summary import class_mistakes
from grader.report import Report
from grader.run.notebook import UnreadableNotebook, load_notebook
from grader.service import pages
from grader.service.auth import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    checked_form,
    cookie_name,
    from_this_site,
    new_signin_token,
    same_token,
    session,
    set_cookie,
)
from grader.service.config import AssignmentPolicy, ServerConfig
from grader.service.pages import csrf_field, e, layout, points, when
from grader.service.queue import GradingQueue, counting_submission
from grader.service.store import SESSION_SECONDS, Refused, Session, Store, Submission
from grader.spec import AssignmentSpec

# An uploaded file's name: a plain name ending .ipynb, nothing that could name a folder.
_NOTEBOOK_NAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,93}\.ipynb")
# A file name is at most 255 bytes, and the upload is first written under a longer temporary
# name: 100 characters of 4 bytes each would not fit.
_NAME_BYTES = 200
# Drawing the class summary takes a second and matplotlib is not thread-safe: one at a time.
_PLOT_LOCK = asyncio.Lock()


def _store(request: Request) -> Store:
    return request.app.state.store


def _config(request: Request) -> ServerConfig:
    return request.app.state.config


def _queue(request: Request) -> GradingQueue:
    return request.app.state.queue


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def _assignment(request: Request) -> tuple[str, AssignmentSpec, AssignmentPolicy]:
    name = request.path_params["assignment"]
    specs: dict[str, AssignmentSpec] = request.app.state.specs
    if name not in specs:
        raise HTTPException(404, "No such assignment.")
    return name, specs[name], _config(request).assignments[name]


def _own_submission(request: Request, current: Session) -> Submission:
    """The submission the path names, if the user may see it: its student, or an instructor."""
    found = _store(request).submission(request.path_params["submission"])
    if found is None or (current.user.role != "instructor" and found.student != current.user.id):
        raise HTTPException(404, "No such submission.")
    return found


def _deadline(request: Request, name: str, student: str, policy: AssignmentPolicy
              ) -> datetime | None:
    """The student's deadline: their extension, else the assignment's."""
    return _store(request).extensions(name).get(student, policy.deadline)


# --- signing in ---------------------------------------------------------------------------------

async def home(request: Request) -> Response:
    current = session(request)
    return RedirectResponse("/instructor" if current.user.role == "instructor"
                            else "/assignments", 303)


async def login_page(request: Request) -> Response:
    token = new_signin_token()
    response = _html(pages.sign_in(token))
    set_cookie(response, cookie_name(request, SIGNIN_COOKIE), token, _config(request).https,
               3600)
    return response


async def login(request: Request) -> Response:
    from_this_site(request)
    form = await request.form(max_files=0, max_fields=4)
    expected = request.cookies.get(cookie_name(request, SIGNIN_COOKIE), "")
    if not expected or not same_token(form.get("csrf"), expected):
        raise HTTPException(403, "The sign-in form is out of date: reload the page.")
    token = form.get("token")
    found = _store(request).sign_in(token) if isinstance(token, str) and token else None
    if found is None:
        fresh = new_signin_token()
        response = _html(pages.sign_in(fresh, "That token is not on the roster."), 401)
        set_cookie(response, cookie_name(request, SIGNIN_COOKIE), fresh,
                   _config(request).https, 3600)
        return response
    key, current = found
    response = RedirectResponse("/instructor" if current.user.role == "instructor"
                                else "/assignments", 303)
    set_cookie(response, cookie_name(request, SESSION_COOKIE), key, _config(request).https,
               SESSION_SECONDS)
    response.delete_cookie(cookie_name(request, SIGNIN_COOKIE), path="/", httponly=True,
                           samesite="strict", secure=_config(request).https)
    return response


async def logout(request: Request) -> Response:
    await checked_form(request, session(request))
    _store(request).sign_out(request.cookies[cookie_name(request, SESSION_COOKIE)])
    response = RedirectResponse("/login", 303)
    response.delete_cookie(cookie_name(request, SESSION_COOKIE), path="/", httponly=True,
                           samesite="strict", secure=_config(request).https)
    return response


# --- students -----------------------------------------------------------------------------------

async def assignments(request: Request) -> Response:
    current = session(request)
    store, rows = _store(request), []
    for name, spec in request.app.state.specs.items():
        policy = _config(request).assignments[name]
        counting = counting_submission(store.history(name, current.user.id))
        deadline = _deadline(request, name, current.user.id, policy)
        rows.append(f'<tr><td><a href="/assignments/{e(name)}">{e(spec.title)}</a></td>'
                    f"<td>{e(when(deadline))}</td>"
                    f"<td>{points(counting.counted if counting else None, spec.max_score)}"
                    "</td></tr>")
    body = ("<table><tr><th>Assignment</th><th>Deadline</th><th>Score that counts</th></tr>"
            + "".join(rows) + "</table>")
    return _html(layout("Assignments", body, current))


def _policy_words(policy: AssignmentPolicy, deadline: datetime | None) -> str:
    if deadline is None:
        due = "No deadline."
    elif policy.late == "closed":
        due = f"Due {when(deadline)}; closed after that."
    else:
        due = (f"Due {when(deadline)}; a late submission keeps "
               f"{policy.late_multiplier:g} of its score.")
    return (f"{due} Up to {policy.submissions} submissions at once, one more every "
            f"{policy.refill_minutes:g} minutes; a notebook that cannot be graded costs none.")


async def assignment_page(request: Request) -> Response:
    current = session(request)
    name, spec, policy = _assignment(request)
    store = _store(request)
    student = current.user.id
    history = store.history(name, student)
    counting = counting_submission(history)
    positions = store.queue_positions()
    rows = [(s, positions.get(s.id)) for s in history]
    deadline = _deadline(request, name, student, policy)
    closed = (policy.late == "closed" and deadline is not None
              and datetime.now(UTC) > deadline)
    upload = ("<p class=\"error\">Submissions are closed.</p>" if closed else
              f'<form method="post" action="/assignments/{e(name)}/submit" '
              f'enctype="multipart/form-data">{csrf_field(current.csrf)}'
              '<p><label>Notebook <input type="file" name="notebook" accept=".ipynb"></label> '
              "<button>Submit</button></p></form>")
    counted = points(counting.counted if counting else None, spec.max_score)
    body = (f'<div class="box">{e(_policy_words(policy, deadline))}</div>{upload}'
            f"<h2>Score that counts: {counted}"
            f"</h2><h2>Your submissions</h2>"
            + pages.history_table(rows, counting, student=True))
    return _html(layout(spec.title, body, current))


def _refuse(status: int, message: str, current: Session, title: str) -> Response:
    return _html(pages.problem(title, message, current), status)


async def submit(request: Request) -> Response:
    current = session(request, "student")
    name, spec, policy = _assignment(request)
    form = await checked_form(request, current)
    try:
        upload = form.get("notebook")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return _refuse(400, "Choose a notebook file to submit.", current, spec.title)
        filename = upload.filename
        if not _plain_name(filename):
            return _refuse(400, "The file name must be a plain name ending in .ipynb (no "
                           "folders, not starting with a dot, at most 100 characters, no "
                           "control or formatting characters).", current, spec.title)
        limit = _config(request).max_upload_kib * 1024
        data = await upload.read(limit + 1)
        if len(data) > limit:
            return _refuse(413, f"The notebook is larger than {limit // 1024} KiB.", current,
                           spec.title)
    finally:
        await form.close()
    deadline = _deadline(request, name, current.user.id, policy)
    late = deadline is not None and datetime.now(UTC) > deadline
    if late and policy.late == "closed":
        return _refuse(403, "Submissions to this assignment are closed: the deadline has "
                       "passed.", current, spec.title)
    queue = _queue(request)
    folder = f"{name}/{uuid.uuid4().hex}"
    path = queue.data / "uploads" / folder / filename
    try:
        # Off the event loop: syncing to disk, and validating a notebook of tens of thousands
        # of cells (about a second), would stall every other request meanwhile.
        await asyncio.to_thread(_save_checked, path, data)
    except UnreadableNotebook as exc:
        shutil.rmtree(path.parent, ignore_errors=True)
        return _refuse(400, f"This file is not a notebook that can be graded: {exc}", current,
                       spec.title)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    try:
        added = _store(request).add_submission(
            student=current.user.id, assignment=name, filename=filename, folder=folder,
            content_hash=file_sha256(path), deadline=deadline, late=late,
            multiplier=policy.late_multiplier if late else 1.0,
            capacity=policy.submissions, refill_s=policy.refill_minutes * 60)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    if isinstance(added, Refused):
        shutil.rmtree(path.parent, ignore_errors=True)
        minutes = max(1, round(added.retry_after_s / 60))
        response = _refuse(429, f"You have used your submissions for now: the next one is "
                           f"possible in about {minutes} minute(s).", current, spec.title)
        response.headers["Retry-After"] = str(int(added.retry_after_s) + 1)
        return response
    queue.wake()
    return RedirectResponse(f"/submissions/{added}", 303)


def _save_checked(path: Path, data: bytes) -> None:
    """Save an upload, then read it as the grader will (UnreadableNotebook if it cannot)."""
    _save(path, data)
    load_notebook(path)


def _plain_name(filename: str) -> bool:
    """A name that can be saved as given and shown as it is: no folder, no control or format
    character (a right-to-left override would make `x\u202egnp.ipynb` read as a picture)."""
    return (_NOTEBOOK_NAME.fullmatch(filename) is not None
            and len(filename.encode("utf-8", "surrogatepass")) <= _NAME_BYTES
            and not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
                        for c in filename))


def _save(path: Path, data: bytes) -> None:
    """Write an upload and sync it and its folders, so that it outlives a crash."""
    path.parent.mkdir(parents=True)
    write_atomic(path, data)
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def submission_page(request: Request) -> Response:
    current = session(request)
    found = _own_submission(request, current)
    spec = request.app.state.specs.get(found.assignment)
    title = spec.title if spec else found.assignment
    report = found.report()
    back = (f"/instructor/{found.assignment}" if current.user.role == "instructor"
            else f"/assignments/{found.assignment}")
    late = (f"Submitted late: its score counts &times;{found.multiplier:g}, "
            f"{points(found.counted)}." if found.late else "Submitted on time.")
    if report is None:
        words = pages.state_words(found, _store(request).queue_position(found.id))
        body = (f'<div class="box"><p>Submission #{found.id} ({e(found.filename)}), '
                f"submitted {e(when(found.submitted_at))}: <b>{e(words)}</b>.</p>"
                "<p>This page refreshes itself; the feedback appears here when the notebook "
                f'is graded.</p></div><p><a href="{e(back)}">Back</a></p>')
        return _html(layout(f"{title}: submission #{found.id}", body, current, refresh=2))
    if found.state != "done":
        late += " It is being graded again; this is its report so far."
    page = feedback_html(report, title)
    banner = (f'<div style="border-bottom:1px solid #ccc;margin-bottom:1em;padding-bottom:.5em">'
              f'<a href="{e(back)}">&larr; All submissions</a> &middot; Submission #{found.id}, '
              f"{e(when(found.submitted_at))}. {late}</div>")
    # feedback_html writes the <body> tag once, right after its <head>.
    return _html(page.replace("<body>", "<body>" + banner, 1))


async def submission_status(request: Request) -> Response:
    current = session(request)
    found = _own_submission(request, current)
    return JSONResponse({"id": found.id, "state": found.state,
                         "position": _store(request).queue_position(found.id),
                         "status": found.status, "score": found.score,
                         "max_score": found.max_score, "late": found.late,
                         "counted": found.counted})


async def submission_notebook(request: Request) -> Response:
    current = session(request)
    found = _own_submission(request, current)
    data = _queue(request).upload_path(found).read_bytes()
    return Response(data, media_type="application/x-ipynb+json", headers={
        "Content-Disposition": f'attachment; filename="submission-{found.id}.ipynb"'})


# --- instructors --------------------------------------------------------------------------------

def _counting_reports(store: Store, name: str) -> dict[str, tuple[Submission, Report]]:
    """Every student's submission that counts, with its report."""
    out = {}
    for student, s in store.counting(name).items():
        report = s.report()
        if report is not None:
            out[student] = (s, report)
    return out


async def instructor_home(request: Request) -> Response:
    current = session(request, "instructor")
    store = _store(request)
    rows = []
    for name, spec in request.app.state.specs.items():
        subs = store.all_submissions(name, reports=False)
        rows.append(f'<tr><td><a href="/instructor/{e(name)}">{e(spec.title)}</a></td>'
                    f"<td>{len({s.student for s in subs})}</td><td>{len(subs)}</td>"
                    f"<td>{sum(s.state != 'done' for s in subs)}</td></tr>")
    body = ("<table><tr><th>Assignment</th><th>Students who submitted</th><th>Submissions"
            "</th><th>Waiting</th></tr>" + "".join(rows) + "</table>"
            f"<p>{len(store.users('student'))} students on the roster. "
            '<a href="/instructor/gradebook.sqlite">Download the gradebook</a> (it holds the '
            "secret every student's cases are drawn from: keep it private).</p>")
    return _html(layout("Course dashboard", body, current))


async def dashboard(request: Request) -> Response:
    current = session(request, "instructor")
    name, spec, policy = _assignment(request)
    store = _store(request)
    extensions = store.extensions(name)
    by_student: dict[str, list[Submission]] = {}
    for s in store.all_submissions(name, reports=False):
        by_student.setdefault(s.student, []).insert(0, s)
    counting = _counting_reports(store, name)
    positions = store.queue_positions()
    rows = []
    for user in store.users("student"):
        history = by_student.get(user.id, [])
        latest = history[0] if history else None
        count = counting.get(user.id)
        deadline = extensions.get(user.id, policy.deadline)
        status = pages.state_words(latest, positions.get(latest.id)) if latest else (
            "no submission")
        link = (f'<a href="/submissions/{latest.id}">#{latest.id}</a> '
                if latest else "")
        rows.append(
            f"<tr><td>{e(user.id)}</td><td>{e(user.name)}</td><td>{link}{e(status)}</td>"
            f"<td>{points(latest.score if latest else None)}</td>"
            f"<td>{points(count[0].counted if count else None)}</td>"
            f"<td>{'<span class=late>late</span>' if latest and latest.late else ''}</td>"
            f"<td>{e(when(latest.submitted_at)) if latest else ''}</td>"
            f"<td>{len(history)}</td><td>{e(when(deadline))}"
            f"{' (extended)' if user.id in extensions else ''}</td><td>"
            f'<form method="post" action="/instructor/{e(name)}/regrade">'
            f'{csrf_field(current.csrf)}<input type="hidden" name="student" value="{e(user.id)}">'
            f"<button{' disabled' if not latest else ''}>Regrade</button></form>"
            f'<form method="post" action="/instructor/{e(name)}/extension">'
            f'{csrf_field(current.csrf)}<input type="hidden" name="student" value="{e(user.id)}">'
            '<input type="datetime-local" name="deadline" required> UTC '
            "<button>Extend</button></form></td></tr>")
    mistakes = class_mistakes({s: r for s, (_, r) in counting.items()}).most_common(8)
    hints = {m.id: m.hint for f in spec.functions for m in f.mistakes}
    mistake_rows = "".join(f"<tr><td><code>{e(m)}</code></td><td>{n}</td>"
                           f"<td>{e(hints.get(m, ''))}</td></tr>" for m, n in mistakes)
    body = (
        f'<div class="box">{e(_policy_words(policy, policy.deadline))}</div>'
        f'<p><a href="/instructor/{e(name)}/grades.csv">grades.csv</a> &middot; '
        f'<a href="/instructor/{e(name)}/gradescope.zip">Gradescope results</a> &middot; '
        '<a href="/instructor/gradebook.sqlite">gradebook</a></p>'
        f'<form method="post" action="/instructor/{e(name)}/regrade">{csrf_field(current.csrf)}'
        '<input type="hidden" name="student" value="*"><button>Regrade every student</button> '
        "(each student's latest submission, queued behind new submissions)</form>"
        "<h2>Students</h2><table><tr><th>Id</th><th>Name</th><th>Latest submission</th>"
        "<th>Latest score</th><th>Counting score</th><th>Late</th><th>Submitted at</th>"
        "<th>Submissions</th><th>Deadline</th><th>Actions</th></tr>"
        + "".join(rows) + "</table>"
        + (f'<h2>Class summary</h2><img src="/instructor/{e(name)}/summary.png" '
           'alt="score distribution, full marks per function, common mistakes">'
           if counting else "<p>No graded submission yet.</p>")
        + ("<h2>Most common misconceptions</h2><table><tr><th>Mistake</th><th>Students</th>"
           f"<th>Hint shown</th></tr>{mistake_rows}</table>" if mistake_rows
           else "<p>No known misconception in the scores that count.</p>" if counting else ""))
    return _html(layout(f"{spec.title}: dashboard", body, current))


async def summary_plot(request: Request) -> Response:
    session(request, "instructor")
    name, spec, _ = _assignment(request)
    counting = _counting_reports(_store(request), name)
    if not counting:
        raise HTTPException(404, "No graded submission yet.")
    # Drawn again only when a score that counts changed: a report came in or was regraded.
    key = tuple(sorted((s.id, s.finished_at) for s, _ in counting.values()))
    plots: dict[str, tuple[tuple, bytes]] = request.app.state.plots
    async with _PLOT_LOCK:
        if name not in plots or plots[name][0] != key:
            reports = {student: r for student, (_, r) in counting.items()}
            plots[name] = key, await asyncio.to_thread(summary_png, reports, spec)
    return Response(plots[name][1], media_type="image/png")


def _attachment(data: bytes | str, filename: str, media_type: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def grades(request: Request) -> Response:
    session(request, "instructor")
    name, spec, _ = _assignment(request)
    counting = _counting_reports(_store(request), name)
    rows = list(csv.reader(io.StringIO(grades_csv({s: r for s, (_, r) in counting.items()},
                                                  spec))))
    # The class run's columns, then what the server adds: lateness and the score that counts.
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*rows[0], "submission", "submitted_at", "late", "multiplier",
                     "counted_score"])
    for row, (_, (s, _)) in zip(rows[1:], sorted(counting.items()), strict=True):
        writer.writerow([*row, s.id, s.submitted_at, str(s.late).lower(), f"{s.multiplier:g}",
                         f"{s.counted:g}"])
    return _attachment(out.getvalue(), f"{name}-grades.csv", "text/csv; charset=utf-8")


async def gradescope(request: Request) -> Response:
    session(request, "instructor")
    name, _, _ = _assignment(request)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for student, (_, report) in sorted(_counting_reports(_store(request), name).items()):
            archive.writestr(f"{student}.json", json.dumps(gradescope_results(report),
                                                           indent=2))
    return _attachment(buffer.getvalue(), f"{name}-gradescope.zip", "application/zip")


async def gradebook(request: Request) -> Response:
    session(request, "instructor")
    path = _queue(request).data / "gradebook.sqlite"

    def snapshot() -> bytes:
        # A consistent copy while the queue keeps writing: SQLite's online backup.
        source, copy = sqlite3.connect(path), sqlite3.connect(":memory:")
        try:
            source.backup(copy)
            return copy.serialize()
        finally:
            source.close()
            copy.close()

    data = await asyncio.to_thread(snapshot)
    return _attachment(data, "gradebook.sqlite", "application/vnd.sqlite3")


async def regrade(request: Request) -> Response:
    current = session(request, "instructor")
    name, _, _ = _assignment(request)
    form = await checked_form(request, current)
    who = form.get("student")
    store = _store(request)
    latest: dict[str, int] = {}
    for s in store.all_submissions(name, reports=False):
        latest[s.student] = s.id
    if who == "*":
        ids = list(latest.values())
    elif isinstance(who, str) and who in latest:
        ids = [latest[who]]
    else:
        raise HTTPException(400, "That student has no submission to regrade.")
    store.regrade(ids)
    _queue(request).wake()
    return RedirectResponse(f"/instructor/{name}", 303)


async def extension(request: Request) -> Response:
    current = session(request, "instructor")
    name, _, _ = _assignment(request)
    form = await checked_form(request, current)
    student, given = form.get("student"), form.get("deadline")
    store = _store(request)
    if not isinstance(student, str) or store.user(student) is None:
        raise HTTPException(400, "No such student on the roster.")
    try:
        deadline = datetime.fromisoformat(str(given))
    except ValueError:
        raise HTTPException(400, "Give the new deadline as a date and time, "
                                 "e.g. 2026-12-20T23:59.") from None
    # The form's picker gives no offset: the dashboard states that it is UTC.
    store.extend(name, student, deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC))
    return RedirectResponse(f"/instructor/{name}", 303)


routes = [
    Route("/", home),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/assignments", assignments),
    Route("/assignments/{assignment}", assignment_page),
    Route("/assignments/{assignment}/submit", submit, methods=["POST"]),
    Route("/submissions/{submission:int}", submission_page),
    Route("/submissions/{submission:int}/status", submission_status),
    Route("/submissions/{submission:int}/notebook", submission_notebook),
    Route("/instructor", instructor_home),
    Route("/instructor/gradebook.sqlite", gradebook),
    Route("/instructor/{assignment}", dashboard),
    Route("/instructor/{assignment}/summary.png", summary_plot),
    Route("/instructor/{assignment}/grades.csv", grades),
    Route("/instructor/{assignment}/gradescope.zip", gradescope),
    Route("/instructor/{assignment}/regrade", regrade, methods=["POST"]),
    Route("/instructor/{assignment}/extension", extension, methods=["POST"]),
]
