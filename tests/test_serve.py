"""`grader serve` as students and instructors meet it: a real server on a loopback port, real
uploads graded by real sandboxed kernels, and every route tried by someone who must not pass."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from grader.service.routes import routes
from grader.service.store import Store
from tests.notebooks import ASSIGNMENT, ROOT, submission
from tests.serving import Client, Server, course_toml

ASSIGNMENT_NAME = "derivative_calculation"
CLOSED = "vectorized_backprop"
# A name and a file name that would run as script in a page that did not escape them.
SCRIPT_NAME = "<script>alert('name')</script>"
SCRIPT_FILE = "<script>alert(1)<script>.ipynb"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A course whose first deadline has passed (late work keeps half its score) and whose
    second assignment is closed after its deadline."""
    data = tmp_path_factory.mktemp("serve")
    config = course_toml(**{
        ASSIGNMENT_NAME: 'deadline = 2000-01-01T00:00:00Z\nlate = "multiplier"\n'
                         "late_multiplier = 0.5\nsubmissions = 3\nrefill_minutes = 600",
        CLOSED: 'deadline = 2000-01-01T00:00:00Z\nlate = "closed"\nsubmissions = 2'})
    server = Server(data, config)
    server.tokens = {"ann": server.add("ann", name="Ann"), "bob": server.add("bob"),
                     "eve": server.add("eve", name=SCRIPT_NAME),
                     "prof": server.add("prof", instructor=True)}
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def graded(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Ann's correct notebook and Bob's with a wrong delta2, both graded."""
    folder = tmp_path_factory.mktemp("notebooks")
    ann, bob = Client(server, server.tokens["ann"]), Client(server, server.tokens["bob"])
    ids = {"ann": ann.submit(ASSIGNMENT_NAME, submission(folder, "ann")),
           "bob": bob.submit(ASSIGNMENT_NAME, submission(
               folder, "bob", bodies={"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}))}
    ann.wait(ids["ann"])
    bob.wait(ids["bob"])
    return ids


def test_student_uploads_and_reads_feedback_with_late_credit(server: Server,
                                                             graded: dict[str, int]) -> None:
    ann = Client(server, server.tokens["ann"])
    status = ann.get(f"/submissions/{graded['ann']}/status").json()
    assert status["status"] == "graded" and status["score"] == status["max_score"] == 22
    # Submitted after the deadline: half the score counts, as recorded at submission time.
    assert status["late"] and status["counted"] == 11
    page = ann.get(f"/submissions/{graded['ann']}").text
    assert "22 / 22 points" in page and "late" in page and "11" in page
    history = ann.get(f"/assignments/{ASSIGNMENT_NAME}").text
    assert f"/submissions/{graded['ann']}" in history and "counts" in history
    report = server.store().submission(graded["ann"]).report()
    assert report.sandbox != "none" and report.submission == "hw.ipynb"


def test_every_route_refuses_another_student(server: Server, graded: dict[str, int]) -> None:
    """Bob can read none of Ann's submission, report, notebook or queue entry, nor any
    instructor page; nobody signed out reads anything."""
    bob, nobody = Client(server, server.tokens["bob"]), Client(server)
    ann_id = graded["ann"]
    a = ASSIGNMENT_NAME
    # Every route of the app, with a request that must be refused to Bob (a student) and to
    # someone signed out, and the statuses expected.
    tried = {
        "/": ("GET", "/", None),
        "/login": None,  # the sign-in page and form themselves: open to everyone
        "/logout": None,  # ends the caller's own session only (CSRF-tested below)
        "/assignments": None,  # the caller's own list: checked below to hold nothing of Ann
        "/assignments/{assignment}": None,  # the caller's own history: checked below
        "/assignments/{assignment}/submit": None,  # adds to the caller's own history
        "/submissions/{submission:int}": ("GET", f"/submissions/{ann_id}", 404),
        "/submissions/{submission:int}/status": ("GET", f"/submissions/{ann_id}/status", 404),
        "/submissions/{submission:int}/notebook": (
            "GET", f"/submissions/{ann_id}/notebook", 404),
        "/instructor": ("GET", "/instructor", 403),
        "/instructor/gradebook.sqlite": ("GET", "/instructor/gradebook.sqlite", 403),
        "/instructor/{assignment}": ("GET", f"/instructor/{a}", 403),
        "/instructor/{assignment}/summary.png": ("GET", f"/instructor/{a}/summary.png", 403),
        "/instructor/{assignment}/grades.csv": ("GET", f"/instructor/{a}/grades.csv", 403),
        "/instructor/{assignment}/gradescope.zip": (
            "GET", f"/instructor/{a}/gradescope.zip", 403),
        "/instructor/{assignment}/regrade": ("POST", f"/instructor/{a}/regrade", 403),
        "/instructor/{assignment}/extension": ("POST", f"/instructor/{a}/extension", 403),
    }
    assert {r.path for r in routes} == set(tried), "a route without an access test"
    for path, attempt in tried.items():
        if attempt is None:
            continue
        method, url, refused = attempt
        if method == "GET":
            got = bob.get(url)
            if refused is not None:
                assert got.status_code == refused, (path, got.status_code)
                assert "Ann" not in got.text and "hw.ipynb" not in got.text
            # Signed out: sent to sign in, and shown nothing.
            out = nobody.get(url)
            assert out.status_code == 303 and out.headers["location"] == "/login", path
        else:
            got = bob.post(url, student="ann", deadline="2100-01-01T00:00")
            assert got.status_code == refused, (path, got.status_code)
            assert nobody.post(url, student="ann").status_code == 403, path
    # Submission ids run in sequence: Bob tries his neighbours' and every one near his own.
    for other in range(1, graded["bob"] + 5):
        if other != graded["bob"]:
            assert bob.get(f"/submissions/{other}").status_code == 404
    # His own pages show his submissions only, and the queue only as a position.
    for url in ("/assignments", f"/assignments/{a}", f"/submissions/{graded['bob']}"):
        text = bob.get(url).text
        assert f"/submissions/{ann_id}\"" not in text and "Ann" not in text
    # Ann's regrade and extension were refused: nothing changed for her.
    store = server.store()
    assert store.submission(ann_id).state == "done" and not store.extensions(a)


def test_every_form_needs_its_csrf_token(server: Server, graded: dict[str, int],
                                         tmp_path: Path) -> None:
    ann, prof = Client(server, server.tokens["ann"]), Client(server, server.tokens["prof"])
    before = server.uploads()
    for client, path, data in [
            (ann, "/logout", {}),
            (prof, f"/instructor/{ASSIGNMENT_NAME}/regrade", {"student": "*"}),
            (prof, f"/instructor/{ASSIGNMENT_NAME}/extension",
             {"student": "ann", "deadline": "2100-01-01T00:00"})]:
        for token in (None, "forged"):
            form = data | ({"csrf": token} if token else {})
            assert client.http.post(path, data=form).status_code == 403, path
    nb = submission(tmp_path, "ann").read_bytes()
    refused = ann.http.post(f"/assignments/{ASSIGNMENT_NAME}/submit", data={"csrf": "x"},
                            files={"notebook": ("hw.ipynb", nb)})
    assert refused.status_code == 403
    # The sign-in form too: a token without the form's own CSRF value signs nobody in.
    fresh = Client(server)
    assert fresh.http.post("/login", data={"token": server.tokens["ann"]}).status_code == 403
    assert server.uploads() == before
    assert ann.get("/assignments").status_code == 200  # still signed in: logout was refused
    store = server.store()
    assert all(s.state == "done" for s in store.all_submissions(ASSIGNMENT_NAME))
    assert not store.extensions(ASSIGNMENT_NAME)


@pytest.mark.parametrize(("filename", "content", "status", "says"), [
    ("hw.ipynb", b"x" * (3 * 1024 * 1024), 413, "too large"),
    ("hw.ipynb", b"not json at all", 400, "not a notebook"),
    ("hw.ipynb", b'{"cells": []}', 400, "not a notebook"),
    ("../../escape.ipynb", None, 400, "plain name"),
    ("sub/dir.ipynb", None, 400, "plain name"),
    ("..\\escape.ipynb", None, 400, "plain name"),
    (".hidden.ipynb", None, 400, "plain name"),
    ("notes.txt", None, 400, "plain name"),
    # 100 characters but 382 bytes: more than a file name may hold.
    pytest.param("\U0001F600" * 94 + ".ipynb", None, 400, "plain name", id="382-byte-name"),
    # A right-to-left override: the instructor would read "xbnpi.png".
    ("x\u202egnp.ipynb", None, 400, "plain name"),
    ("hw.ipynb", b"\xff\xfe" + ASSIGNMENT.read_bytes(), 400, "not UTF-8"),
    # 400 kB that nest deeper than any JSON parser recurses.
    ("hw.ipynb", b'{"nbformat": 4, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 400,
     "nests its JSON too deeply"),
    # An integer longer than Python converts from text.
    ("hw.ipynb", b'{"nbformat": 4, "x": ' + b"9" * 5000 + b"}", 400, "not JSON a notebook holds"),
])
def test_refused_uploads_leave_nothing_and_cost_nothing(server: Server, graded: dict[str, int],
                                                        filename: str,
                                                        content: bytes | None, status: int,
                                                        says: str) -> None:
    bob = Client(server, server.tokens["bob"])
    before_files = server.uploads()
    before_rows = len(server.store().all_submissions(ASSIGNMENT_NAME))
    response = bob.upload(ASSIGNMENT_NAME, content or ASSIGNMENT.read_bytes(), filename)
    assert response.status_code == status
    assert says in response.text
    assert server.uploads() == before_files
    assert len(server.store().all_submissions(ASSIGNMENT_NAME)) == before_rows
    assert not list((server.data / "uploads").rglob("escape*"))
    # No submission was spent: Bob's bucket (3, one used by his graded notebook) is intact.
    with sqlite3.connect(server.data / "server.sqlite") as db:
        rows = db.execute("SELECT tokens FROM buckets WHERE student = 'bob'").fetchall()
    assert rows and rows[0][0] >= 2 - 1e-6


@pytest.mark.parametrize("who", ["bob", None])
def test_a_body_without_a_length_is_cut_off_at_the_limit(server: Server, graded: dict[str, int],
                                                        who: str | None) -> None:
    """Sent in chunks, an upload announces no length: it is counted as it arrives and refused
    once past the limit, never spooled whole; signed out, it is refused before it is read, and
    the rest is not read either."""
    bob = Client(server, server.tokens[who] if who else None)
    before = server.uploads()
    sent = 0

    def body():
        nonlocal sent
        yield (b'--B\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
               + bob.csrf.encode() + b'\r\n--B\r\nContent-Disposition: form-data; '
               b'name="notebook"; filename="hw.ipynb"\r\n\r\n')
        for _ in range(64 * 1024):  # 64 MiB offered
            sent += 1024
            yield b" " * 1024
        yield b"\r\n--B--\r\n"

    try:
        response = bob.http.post(f"/assignments/{ASSIGNMENT_NAME}/submit", content=body(),
                                 headers={"content-type": "multipart/form-data; boundary=B"})
        assert response.status_code == (413 if who else 403)
    except httpx.TransportError:
        pass  # the server answered and closed while the rest was still being sent
    assert sent < 16 * 1024 * 1024
    assert server.uploads() == before


def test_rate_limit_refuses_past_the_bucket(server: Server, tmp_path: Path) -> None:
    """Closed assignments refuse without spending; after an extension, the bucket decides."""
    ann = Client(server, server.tokens["ann"])
    handout = ROOT / "assignments" / f"{CLOSED}.ipynb"
    refused = ann.upload(CLOSED, handout.read_bytes())
    assert refused.status_code == 403 and "closed" in refused.text
    assert "Submissions are closed" in ann.get(f"/assignments/{CLOSED}").text
    prof = Client(server, server.tokens["prof"])
    assert prof.post(f"/instructor/{CLOSED}/extension", student="ann",
                     deadline="2100-01-01T00:00").status_code == 303
    assert "Submissions are closed" not in ann.get(f"/assignments/{CLOSED}").text
    # Bob got no extension: still closed for him.
    bob = Client(server, server.tokens["bob"])
    assert bob.upload(CLOSED, handout.read_bytes()).status_code == 403
    # Two in a burst, then the bucket is empty.
    first = ann.submit(CLOSED, handout)
    accepted = [first]
    while True:
        response = ann.upload(CLOSED, handout.read_bytes())
        if response.status_code != 303:
            break
        accepted.append(int(response.headers["location"].rsplit("/", 1)[1]))
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert len(accepted) == 2
    on_time = ann.get(f"/submissions/{first}/status").json()
    assert not on_time["late"]
    for submission_id in accepted:
        assert ann.wait(submission_id)["status"] == "graded"


def test_every_student_string_is_escaped(server: Server, graded: dict[str, int],
                                         tmp_path: Path) -> None:
    eve = Client(server, server.tokens["eve"])
    eve_id = eve.submit(ASSIGNMENT_NAME, submission(tmp_path, "eve"), filename=SCRIPT_FILE)
    eve.wait(eve_id)
    prof = Client(server, server.tokens["prof"])
    pages = [eve.get("/assignments"), eve.get(f"/assignments/{ASSIGNMENT_NAME}"),
             eve.get(f"/submissions/{eve_id}"), prof.get(f"/instructor/{ASSIGNMENT_NAME}"),
             prof.get(f"/submissions/{eve_id}"), prof.get("/instructor")]
    for page in pages:
        assert page.status_code == 200
        assert "<script" not in page.text
        assert "script-src" not in page.headers["content-security-policy"]
    assert "&lt;script&gt;alert(1)&lt;script&gt;.ipynb" in pages[2].text
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in pages[3].text


def test_cookies_are_http_only_and_same_site(server: Server) -> None:
    login = Client(server).http.get("/login")
    signed = Client(server).sign_in(server.tokens["ann"])
    for response in (login, signed):
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie


def test_a_session_ends_on_the_server_and_is_never_one_the_browser_brought(
        server: Server) -> None:
    """Sign-out ends the session for a copied cookie too; a session key planted in the
    browser before sign-in (fixation) is replaced, never adopted."""
    planted = "planted-by-someone-else"
    ann = Client(server)
    ann.http.cookies.set("grader_session", planted, domain="127.0.0.1")
    ann.sign_in(server.tokens["ann"])
    key = ann.http.cookies.get("grader_session")
    assert key and key != planted
    thief = httpx.Client(base_url=server.url, cookies={"grader_session": key})
    assert thief.get("/assignments").status_code == 200
    assert ann.post("/logout").status_code == 303
    assert thief.get("/assignments").status_code == 303  # sent to sign in
    assert thief.post(f"/assignments/{ASSIGNMENT_NAME}/submit").status_code == 403


def test_a_sibling_site_cannot_sign_a_student_into_another_account(server: Server) -> None:
    """Login CSRF: a page on a sibling subdomain sets its own sign-in cookie here (a parent
    domain cookie) and posts the matching form with its author's token; SameSite lets that
    through, so the server must read who sent it."""
    mallory = Client(server)
    csrf = re.search(r'name="csrf" value="([^"]+)"', mallory.http.get("/login").text).group(1)
    victim = httpx.Client(base_url=server.url, cookies={"grader_signin": csrf})
    form = {"csrf": csrf, "token": server.tokens["bob"]}
    for sender in ("same-site", "cross-site"):
        tossed = victim.post("/login", data=form, headers={"sec-fetch-site": sender})
        assert tossed.status_code == 403 and "grader_session" not in victim.cookies, sender
    # Every other form says the same to another site, even with a good token.
    ann = Client(server, server.tokens["ann"])
    assert ann.http.post("/logout", data={"csrf": ann.csrf},
                         headers={"sec-fetch-site": "same-site"}).status_code == 403
    # The server's own page, as a browser sends it.
    own = victim.post("/login", data=form, headers={"sec-fetch-site": "same-origin"})
    assert own.status_code == 303 and "grader_session" in victim.cookies


def test_a_notebook_graded_by_the_server_reads_none_of_its_records(
        server: Server, graded: dict[str, int], tmp_path: Path) -> None:
    """Other students' uploads (to copy), the gradebook (its secret draws every student's hidden
    cases) and the server's records lie on the grading machine: a kernel reads none of them."""
    records = [server.data / "gradebook.sqlite", server.data / "server.sqlite",
               *server.uploads()]
    assert any("uploads" in str(p) for p in records)
    # delta2 is right only where one of these files could be read.
    body = (f"for p in {[str(p) for p in records]!r}:\n"
            "    try:\n"
            "        open(p, 'rb').read(1)\n"
            "    except OSError:\n"
            "        continue\n"
            "    return (y_hat - y) * sigmoid_prime(z2)\n"
            "return (y - y_hat) * sigmoid_prime(z2)")
    dan = Client(server, server.add("dan"))
    done = dan.wait(dan.submit(ASSIGNMENT_NAME, submission(tmp_path, "dan",
                                                           bodies={"delta2": body})))
    assert done["status"] == "graded" and done["score"] < done["max_score"]


def test_uploads_sent_at_once_cannot_overdraw_the_bucket(server: Server) -> None:
    """Eight uploads racing on a bucket of three: three are taken, five refused."""
    cat = server.add("cat")
    clients = [Client(server, cat) for _ in range(8)]
    handout = ASSIGNMENT.read_bytes()
    with ThreadPoolExecutor(len(clients)) as pool:
        statuses = list(pool.map(lambda c: c.upload(ASSIGNMENT_NAME, handout).status_code,
                                 clients))
    assert sorted(statuses) == [303] * 3 + [429] * 5
    assert len(server.store().history(ASSIGNMENT_NAME, "cat")) == 3


def test_instructor_dashboard_downloads_and_regrade(server: Server,
                                                   graded: dict[str, int]) -> None:
    prof = Client(server, server.tokens["prof"])
    page = prof.get(f"/instructor/{ASSIGNMENT_NAME}").text
    for student in ("ann", "bob", "Ann"):
        assert f"<td>{student}</td>" in page
    assert "summary.png" in page and "delta2." in page  # Bob's mistake is named
    assert prof.get(f"/instructor/{ASSIGNMENT_NAME}/summary.png").content[:4] == b"\x89PNG"
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(
        prof.get(f"/instructor/{ASSIGNMENT_NAME}/grades.csv").text))}
    assert rows["ann"]["score"] == "22" and rows["ann"]["counted_score"] == "11"
    assert rows["ann"]["late"] == "true" and float(rows["bob"]["score"]) < 22
    archive = zipfile.ZipFile(io.BytesIO(
        prof.get(f"/instructor/{ASSIGNMENT_NAME}/gradescope.zip").content))
    assert {"ann.json", "bob.json"} <= set(archive.namelist())
    assert json.loads(archive.read("ann.json"))["score"] == 22
    book = prof.get("/instructor/gradebook.sqlite").content
    copy = Path(server.data.parent / "downloaded.sqlite")
    copy.write_bytes(book)
    with sqlite3.connect(copy) as db:
        students = {r[0] for r in db.execute("SELECT student FROM reports WHERE assignment = ?",
                                             (ASSIGNMENT_NAME,))}
    assert {"ann", "bob"} <= students
    # A regrade replaces the report of Ann's submission; it still has exactly one.
    assert prof.post(f"/instructor/{ASSIGNMENT_NAME}/regrade", student="ann").status_code == 303
    # Until the new report is in, Ann reads the one she had (and then the new one).
    page = Client(server, server.tokens["ann"]).get(f"/submissions/{graded['ann']}").text
    assert "22 / 22 points" in page
    status = prof.wait(graded["ann"])
    assert status["status"] == "graded" and status["score"] == 22
    assert server.store().submission(graded["ann"]).report().score == 22


def test_roster_import_prints_tokens_once_and_keeps_hashes(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,role\nzoe,Zoe Z,student\nta,T A,instructor\n")
    out = subprocess.run([sys.executable, "-m", "grader.cli", "roster", "--data", str(tmp_path),
                          "import", str(roster)], check=True, capture_output=True,
                         text=True).stdout
    tokens = {r["id"]: r["token"] for r in csv.DictReader(io.StringIO(out))}
    assert set(tokens) == {"zoe", "ta"}
    raw = (tmp_path / "server.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("server.sqlite-*"))
    assert not any(t.encode() in raw for t in tokens.values())
    store = Store(tmp_path / "server.sqlite")
    assert store.sign_in(tokens["zoe"])[1].user.role == "student"
    assert store.sign_in(tokens["ta"])[1].user.role == "instructor"
    again = subprocess.run([sys.executable, "-m", "grader.cli", "roster", "--data",
                            str(tmp_path), "import", str(roster)], capture_output=True, text=True)
    assert again.returncode == 2 and "on the roster already" in again.stderr


def _queued(store: Store, student: str, assignment: str = "a", folder: str | None = None
            ) -> int:
    """Queue n.ipynb of `student` (on time, full credit, a bucket of 9) straight in the store;
    its id. The folder defaults to a new one per submission."""
    return store.add_submission(student=student, assignment=assignment, filename="n.ipynb",
                                folder=folder or f"{assignment}/{student}{len(store.folders())}",
                                content_hash="h", deadline=None, late=False, multiplier=1,
                                capacity=9, refill_s=60)


def test_queue_takes_new_submissions_before_regrades(tmp_path: Path) -> None:
    store = Store(tmp_path / "server.sqlite")
    for student in ("s1", "s2"):
        store.add_user(student, student, "student")

    old = _queued(store, "s1")
    store.finish(store.claim().id, _report())
    store.regrade([old])
    new = _queued(store, "s2")
    assert store.queue_position(new) == 1 and store.queue_position(old) == 2
    assert [store.claim().id, store.claim().id] == [new, old]
    assert store.claim() is None


def test_one_students_burst_takes_turns_with_the_others(tmp_path: Path) -> None:
    """Five slow notebooks from one student do not hold every kernel while another waits."""
    store = Store(tmp_path / "server.sqlite")
    for student in ("flood", "s2", "s3"):
        store.add_user(student, student, "student")

    burst = [_queued(store, "flood") for _ in range(5)]
    assert store.claim().id == burst[0]  # being graded: the rest of the burst waits behind it
    s2 = _queued(store, "s2")
    assert store.queue_position(s2) == 1
    s3 = _queued(store, "s3")
    assert store.queue_position(s3) == 2  # behind s2 only: the burst has a kernel already
    assert store.queue_position(burst[1]) == 3
    assert [store.claim().id for _ in range(3)] == [s2, s3, burst[1]]
    assert [store.queue_position(i) for i in burst[2:]] == [1, 2, 3]
    assert [store.claim().id for _ in range(3)] == burst[2:]


def _report():
    from grader.report import Report

    return Report(assignment="a", submission="n.ipynb", status="graded", score=0,
                  max_score=1, seed=1, grader_version="x", duration_s=0)


def test_server_killed_while_grading_grades_everything_after_restart(tmp_path: Path) -> None:
    """A crash while one notebook runs and another waits: after the restart each is graded,
    with exactly one report, and what the killed server saved but never queued is gone."""
    config = course_toml(**{ASSIGNMENT_NAME: "submissions = 5"}).replace("kernels = 2",
                                                                         "kernels = 1")
    server = Server(tmp_path / "data", config)
    tokens = {s: server.add(s) for s in ("ann", "bob")}
    server.start()
    try:
        ann, bob = Client(server, tokens["ann"]), Client(server, tokens["bob"])
        slow = submission(tmp_path, "slow", cells_before=["import time; time.sleep(6)"])
        running = ann.submit(ASSIGNMENT_NAME, slow)
        waiting = bob.submit(ASSIGNMENT_NAME, submission(tmp_path, "bob"))
        while ann.get(f"/submissions/{running}/status").json()["state"] != "running":
            time.sleep(0.1)
        assert bob.get(f"/submissions/{waiting}/status").json()["position"] == 1
        server.stop(kill=True)
        store = server.store()
        assert {s.id: s.state for s in store.all_submissions(ASSIGNMENT_NAME)} == {
            running: "running", waiting: "queued"}
        store.close()
        # A notebook saved but never recorded (the crash came between the two).
        orphan = server.data / "uploads" / ASSIGNMENT_NAME / "0123abcd"
        orphan.mkdir()
        (orphan / "hw.ipynb").write_bytes(ASSIGNMENT.read_bytes())
        server.start()
        ann, bob = Client(server, tokens["ann"]), Client(server, tokens["bob"])
        assert ann.wait(running)["status"] == "graded"
        assert bob.wait(waiting)["score"] == 22
        rows = server.store().all_submissions(ASSIGNMENT_NAME)
        assert [(s.id, s.state) for s in rows] == [(running, "done"), (waiting, "done")]
        assert all(s.report() is not None for s in rows)
        assert not orphan.exists()
        assert "queued again" in server.log()
    finally:
        server.stop()



def test_cookies_are_secure_behind_https(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "https = true\n" + course_toml(**{ASSIGNMENT_NAME: ""}))
    token = server.add("ann")
    server.start()
    try:
        # Plain http here, so the client would not send a Secure cookie back: sent by hand.
        http = Client(server).http
        page = http.get("/login")
        # __Host-: a browser takes it only from this host, never set for a parent domain by a
        # sibling subdomain's page (a session tossed in would sign a student in as another).
        signin = page.cookies["__Host-grader_signin"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        tossed = httpx.post(f"{server.url}/login", data={"csrf": csrf, "token": token},
                            cookies={"grader_signin": signin})
        assert tossed.status_code == 403
        signed = httpx.post(f"{server.url}/login", data={"csrf": csrf, "token": token},
                            cookies={"__Host-grader_signin": signin})
        assert signed.status_code == 303
        session = signed.cookies["__Host-grader_session"]
        assert httpx.get(f"{server.url}/assignments",
                         cookies={"grader_session": session}).status_code == 303
        assert httpx.get(f"{server.url}/assignments",
                         cookies={"__Host-grader_session": session}).status_code == 200
        for response in (page, signed):
            cookie = response.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert cookie.startswith("__host-") and "domain" not in cookie
    finally:
        server.stop()


def _in_process_queue(tmp_path: Path, students: list[str], assignment: str = ASSIGNMENT_NAME):
    """A queue over fresh records (no server, kernels unconfined), each student's notebook
    queued, for tests that give it a grading function of their own."""
    from grader.classrun.gradebook import Gradebook
    from grader.service.config import load_config
    from grader.service.queue import GradingQueue

    (tmp_path / "course.toml").write_text(
        'sandbox = "none"\n' + course_toml(**{ASSIGNMENT_NAME: "submissions = 9"}))
    config, specs = load_config(tmp_path / "course.toml")
    store, book = Store(tmp_path / "server.sqlite"), Gradebook(tmp_path / "gradebook.sqlite")
    for name in students:
        store.add_user(name, name, "student")
        _queued(store, name, assignment, folder=name)
    return GradingQueue(config, specs, tmp_path, store, book), store


def _drain(queue, store: Store) -> None:
    """Run the queue until nothing waits."""
    import asyncio

    async def run() -> None:
        await queue.start()
        while store.waiting():
            await asyncio.sleep(0.02)
        await queue.stop()

    asyncio.run(run())


def test_what_timed_out_beside_others_is_graded_again_alone(tmp_path: Path) -> None:
    """Without a CPU share per kernel (cgroups), a notebook that timed out while others ran is
    graded again with nothing beside it, as a class run does."""
    import asyncio

    from grader.report import CellProblem, Report

    queue, store = _in_process_queue(tmp_path, ["slow", "a", "b", "c"])
    queue._shared = True  # as on a machine without cpu cgroups
    calls: list[str] = []
    events: list[tuple[str, int]] = []  # ("start" | "end", call number), in order

    async def grade(path: Path, spec, seed: int) -> Report:
        calls.append(path.parent.name)
        number = len(calls)
        events.append(("start", number))
        await asyncio.sleep(0.05)
        events.append(("end", number))
        cells = [CellProblem(cell=0, problem="timeout", message="slow")] if (
            path.parent.name == "slow" and calls.count("slow") == 1) else []
        return Report(assignment=spec.name, submission=path.name, status="graded", score=0,
                      max_score=spec.max_score, seed=seed, grader_version="x", duration_s=0,
                      cells=cells)

    queue.grade = grade
    _drain(queue, store)
    assert calls.count("slow") == 2
    again = [i for i, name in enumerate(calls, start=1) if name == "slow"][1]
    start = events.index(("start", again))
    assert events[start + 1] == ("end", again), "another notebook ran beside the regrade"
    assert all(events.count(("end", n)) == 1 for n in range(1, len(calls) + 1))
    assert not store.submission(1).report().cells  # the second grading's report is kept


def test_submission_of_an_assignment_no_longer_served_still_ends_with_a_report(
        tmp_path: Path) -> None:
    queue, store = _in_process_queue(tmp_path, ["ann"], assignment="retired")
    _drain(queue, store)
    report = store.submission(1).report()
    assert report.status == "invalid" and "no longer serves" in report.reason


def test_a_grader_failure_is_tried_again_then_reported_and_costs_no_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.report import Report
    from grader.service import queue as queue_module

    monkeypatch.setattr(queue_module, "RETRY_PAUSE_S", 0)
    queue, store = _in_process_queue(tmp_path, ["once", "always"])
    calls: list[str] = []

    async def grade(path: Path, spec, seed: int) -> Report:
        calls.append(path.parent.name)
        if path.parent.name == "always" or calls.count("once") == 1:
            raise RuntimeError("kernel did not start")
        return Report(assignment=spec.name, submission=path.name, status="graded", score=0,
                      max_score=spec.max_score, seed=seed, grader_version="x", duration_s=0)

    queue.grade = grade
    _drain(queue, store)
    assert calls.count("once") == 2 and store.submission(1).status == "graded"
    assert calls.count("always") == queue_module.ATTEMPTS
    failed = store.submission(2).report()
    assert failed.status == "invalid" and "kernel did not start" in failed.reason
    # Its token came back: the bucket is as full as before the upload (9, less a little time).
    with sqlite3.connect(tmp_path / "server.sqlite") as db:
        tokens = dict(db.execute("SELECT student, tokens FROM buckets").fetchall())
    assert tokens["always"] == pytest.approx(9, abs=0.01) and tokens["once"] < 8.5


def test_demo_prints_tokens_that_sign_in(tmp_path: Path) -> None:
    """The README's `make serve`: a demo course, its tokens printed, the URL to open."""
    from tests.serving import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "serve", "--demo", "--data", str(tmp_path),
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert f"http://127.0.0.1:{port}/login" in lines[0]
        tokens = {line.split()[0]: line.split()[2] for line in lines[1:]}
        assert set(tokens) == {"ada", "alan", "prof"}
        server = SimpleNamespace(url=f"http://127.0.0.1:{port}")
        while process.poll() is None:
            try:
                httpx.get(f"{server.url}/login")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert Client(server).sign_in(tokens["prof"]).headers["location"] == "/instructor"
        assert Client(server).sign_in(tokens["ada"]).headers["location"] == "/assignments"
    finally:
        process.terminate()
        process.wait(60)


def test_a_second_server_on_the_same_data_is_refused(tmp_path: Path) -> None:
    """Started by mistake beside a running one, a second server would remove the first's
    uploads being saved and queue again what it grades; it stops before touching anything."""
    first = Server(tmp_path, course_toml(**{ASSIGNMENT_NAME: ""}))
    token = first.add("ann")
    first.start()
    try:
        ann = Client(first, token)
        queued = ann.submit(ASSIGNMENT_NAME, ASSIGNMENT)
        with socket.socket() as taken:  # so that a second server that went ahead stops at once
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            second = subprocess.run(
                [sys.executable, "-m", "grader.cli", "serve", "--data", str(tmp_path),
                 "--port", str(taken.getsockname()[1])], capture_output=True, text=True,
                timeout=120)
        assert second.returncode == 2 and "another `grader serve`" in second.stderr
        assert ann.wait(queued)["state"] == "done"
        assert len(first.uploads()) == 1
    finally:
        first.stop()


def test_demo_refuses_a_real_course_s_data_folder(tmp_path: Path) -> None:
    """`--demo` pointed at a real course would put its instructor, token printed, on that
    course's roster (and give a new token to anyone there named like the demo's people)."""
    server = Server(tmp_path, course_toml(derivative_calculation="submissions = 3"))
    token = server.add("prof", instructor=True)
    with socket.socket() as taken:  # so that a server that went ahead stops at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([sys.executable, "-m", "grader.cli", "serve", "--demo", "--data",
                               str(tmp_path), "--port", str(taken.getsockname()[1])],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not the demo" in done.stderr
    assert "ada" not in done.stdout and "token" not in done.stdout
    store = server.store()
    assert [u.id for u in store.users()] == ["prof"] and store.sign_in(token) is not None


def test_a_course_without_its_answer_key_is_refused_before_serving(tmp_path: Path) -> None:
    from grader.service.app import create_app
    from grader.spec import SpecError

    course = tmp_path / "course" / "assignments"
    course.mkdir(parents=True)
    for suffix in (".toml", ".ipynb"):
        name = f"{ASSIGNMENT_NAME}{suffix}"
        (course / name).write_bytes((ROOT / "assignments" / name).read_bytes())
    data = tmp_path / "data"
    data.mkdir()
    (data / "course.toml").write_text('course = "../course"\n'
                                      + course_toml(**{ASSIGNMENT_NAME: ""}))
    with pytest.raises(SpecError, match="no answer key"):
        create_app(data)
    assert not (data / "uploads").exists() or not any((data / "uploads").iterdir())


def test_a_kernel_is_ready_before_the_upload_and_serves_that_submission_only(
        tmp_path: Path) -> None:
    """The server keeps a kernel started for each assignment, so a student's feedback waits on
    the grading, not on an interpreter starting; the kernel that graded an upload is gone
    afterwards and another stands ready in its place."""
    import asyncio
    import shutil

    queue, store = _in_process_queue(tmp_path, [])
    store.add_user("ada", "ada", "student")

    async def run() -> tuple[Path, Path, int | None]:
        await queue.start()
        pool = queue._pools[ASSIGNMENT_NAME]
        await pool.ready()
        before = pool._starting[0].result().runtime
        assert before.is_dir()  # started, with no submission yet
        folder = tmp_path / "uploads" / "ada"
        folder.mkdir(parents=True)
        shutil.copy(submission(tmp_path), folder / "n.ipynb")
        sid = _queued(store, "ada", ASSIGNMENT_NAME, folder="ada")
        queue.wake()
        while store.waiting():
            await asyncio.sleep(0.02)
        while store.submission(sid).report_json is None:
            await asyncio.sleep(0.02)
        await pool.ready()
        after = pool._starting[0].result().runtime
        await queue.stop()
        report = store.submission(sid).report()
        return before, after, report.score if report else None

    before, after, score = asyncio.run(run())
    assert score == 22  # graded in the kernel that was waiting for it
    assert after != before and not before.exists()  # used once, then removed
    assert not after.exists()  # the server's stop shuts down what waits
