"""Grading a class: layouts, the gradebook, re-runs, a killed run, and concurrency."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from grader.classrun.batch import grade_class
from grader.classrun.gradebook import Gradebook
from grader.classrun.keys import grader_build, grading_settings, spec_hash, student_seed
from grader.classrun.sources import SourceError, extract_notebooks, find_submissions
from grader.cli import main
from grader.grade import limits_for
from grader.outputs.html import feedback_html
from grader.outputs.progress import Verbosity
from grader.outputs.summary import class_summary
from grader.report import Report
from grader.settings import Limits
from grader.spec import AssignmentSpec, find_spec
from tests.notebooks import ROOT, submission
from tests.test_cli import unsafe_text_notebook

GRADER = Path(sys.executable).parent / "grader"
WRONG_DELTA2 = {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}
ASCENT = {"update": "return w + learning_rate * grad"}


def _grade(spec: AssignmentSpec, source: Path, out: Path, **kwargs) -> int:
    return grade_class(source, out, spec, limits_for(spec, 5.0, 2.0),
                       verbosity=Verbosity.QUIET, **kwargs)


def _rows(out: Path) -> dict[str, tuple]:
    """student -> (content hash, seed, status, score, started, finished), read directly."""
    if not (out / "gradebook.sqlite").exists():
        return {}
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        try:
            return {r[0]: r[1:] for r in db.execute(
                "SELECT student, content_hash, seed, status, score, started_at, finished_at "
                "FROM reports")}
        except sqlite3.OperationalError:  # created but its table not yet
            return {}


def _reports(out: Path) -> dict[str, Report]:
    return {p.stem: Report.model_validate_json(p.read_text()) for p in out.glob("*.json")}


def _without_timing(report: Report) -> dict:
    return report.model_dump(exclude={"duration_s"})


def _csv(out: Path) -> list[dict[str, str]]:
    with (out / "grades.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def mixed_class(tmp_path_factory: pytest.TempPathFactory, spec: AssignmentSpec):
    """A class mixing good, wrong, unfinished, unreadable and ambiguous submissions, graded."""
    source = tmp_path_factory.mktemp("class")
    submission(source, "ada")
    submission(source, "claude", bodies=WRONG_DELTA2)
    submission(source, "kath", complete=False)
    (source / "bob.ipynb").write_text("this is not a notebook")
    folder = source / "grace"
    folder.mkdir()
    submission(folder, "my_work", bodies=ASCENT)
    # Two submissions for one student id: a file and a folder.
    submission(source, "emmy")
    (source / "emmy").mkdir()
    submission(source / "emmy", "emmy_v2")
    (source / "dan").mkdir()
    (source / "dan" / "backprop.py").write_text("def delta2(): ...")
    out = tmp_path_factory.mktemp("out")
    status = _grade(spec, source, out, jobs=2)
    return source, out, status


def test_every_submission_of_a_mixed_class_gets_one_report(mixed_class, spec):
    _, out, status = mixed_class
    assert status == 0
    reports = _reports(out)
    assert sorted(reports) == ["ada", "bob", "claude", "dan", "emmy", "grace", "kath"]
    assert reports["ada"].score == spec.max_score
    assert reports["claude"].function_scores()["delta2"][0] == 0
    assert 0 < reports["claude"].score < spec.max_score
    assert reports["grace"].function_scores()["update"][0] == 0
    assert reports["grace"].submission == "my_work.ipynb"
    assert reports["kath"].score == 0 and reports["kath"].status == "graded"
    assert reports["bob"].status == "invalid" and "not valid JSON" in reports["bob"].reason
    assert reports["emmy"].status == "invalid" and "several notebooks" in reports["emmy"].reason
    assert reports["dan"].status == "invalid" and "no notebook" in reports["dan"].reason
    with Gradebook(out / "gradebook.sqlite") as book:
        assert reports["ada"].seed == student_seed(spec, "ada", book.secret)

    rows = _rows(out)
    assert sorted(rows) == sorted(reports)
    assert {s: (r[2], r[3]) for s, r in rows.items()} == {
        s: (r.status, r.score) for s, r in reports.items()}
    table = _csv(out)
    assert [r["student"] for r in table] == sorted(reports)
    assert {r["student"]: float(r["score"]) for r in table} == {
        s: r.score for s, r in reports.items()}
    assert {r["student"]: float(r["delta2"]) for r in table}["claude"] == 0


def test_class_summary_counts_passes_and_failures(mixed_class, spec):
    _, out, _ = mixed_class
    summary = class_summary(_reports(out), spec)
    passed = {f.name: f.passed for f in summary.functions}
    # ada passes everything; claude all but delta2; grace all but update; the others none.
    assert passed == {"sigmoid_prime": 3, "delta2": 2, "delta1": 3, "update": 2}
    assert summary.submissions == 7 and summary.invalid == 3
    assert summary.failures["invalid"] == 3 and summary.failures["not_implemented"] > 0


def test_a_rerun_keeps_every_report_and_force_grades_again(mixed_class, spec, tmp_path):
    # On copies: the class is shared with other tests, and this one changes a notebook.
    source, out = tmp_path / "class", tmp_path / "out"
    shutil.copytree(mixed_class[0], source)
    shutil.copytree(mixed_class[1], out)
    before = _rows(out)
    assert _grade(spec, source, out) == 0
    assert _rows(out) == before  # same timestamps: nothing was graded again

    # A new version of one notebook is graded again, and only it.
    submission(source, "claude")
    assert _grade(spec, source, out) == 0
    after = _rows(out)
    assert {s for s in after if after[s] != before[s]} == {"claude"}
    assert _reports(out)["claude"].score == spec.max_score

    assert _grade(spec, source, out, force=True) == 0
    forced = _rows(out)
    assert all(forced[s][5] > after[s][5] for s in after)  # every finished_at moved on


def _zip_of(folder: Path, archive: Path, prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{prefix}{path.relative_to(folder)}")
    return archive


def test_jobs_and_layouts_do_not_change_results(tmp_path, spec):
    """A folder graded one at a time and a zip of it graded four at a time agree."""
    source = tmp_path / "class"
    source.mkdir()
    for name, bodies in [("a", {}), ("b", WRONG_DELTA2), ("c", ASCENT), ("d", {})]:
        submission(source, name, bodies=bodies)
    (source / "e").mkdir()
    submission(source / "e", "notebook", bodies=WRONG_DELTA2)
    archive = _zip_of(source, tmp_path / "class.zip", "submissions/")

    assert _grade(spec, source, tmp_path / "one", jobs=1) == 0
    # The same gradebook, so the same cases; --force, so every submission is graded again.
    assert main(["grade", str(archive), "--out", str(tmp_path / "four"), "--jobs", "4",
                 "--gradebook", str(tmp_path / "one" / "gradebook.sqlite"), "--force",
                 "--assignment", "derivative_calculation", "--quiet"]) == 0
    one, four = _reports(tmp_path / "one"), _reports(tmp_path / "four")
    assert sorted(one) == ["a", "b", "c", "d", "e"]
    assert {s: _without_timing(r) for s, r in one.items()} == {
        s: _without_timing(r) for s, r in four.items()}
    assert (tmp_path / "one" / "grades.csv").read_text() == (
        tmp_path / "four" / "grades.csv").read_text()


def _sockets(pid: int) -> set[str]:
    inodes = set()
    with_fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in with_fds.iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:  # the process ended while we looked
        pass
    return inodes


def _descendants(pid: int) -> set[int]:
    children = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    for child in set(children):
        children |= _descendants(child)
    return children


def _tcp_inodes() -> set[str]:
    """Sockets of every TCP connection and listener in this (the grader's) network namespace.

    A sandboxed kernel has a network namespace of its own; what it binds there (ipykernel binds
    a loopback pipe for the output of forked processes) no other process can reach.
    """
    inodes = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        inodes |= {line.split()[9] for line in lines}
    return inodes


def _processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_run_is_finished_by_running_it_again(tmp_path, spec):
    source = tmp_path / "class"
    source.mkdir()
    for i in range(8):
        submission(source, f"s{i}", bodies=[{}, WRONG_DELTA2, ASCENT][i % 3])
    out = tmp_path / "out"
    command = [str(GRADER), "grade", str(source), "--out", str(out), "--jobs", "2",
               "--assignment", "derivative_calculation", "--quiet"]
    # A temp folder of its own, where what the killed run leaves is ours to count.
    scratch = Path(tempfile.mkdtemp(prefix="gb-", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(scratch)}
    # Its own session, so the kill reaches the kernels it started as well.
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    kernels, sockets, tcp = set(), set(), set()
    try:
        while proc.poll() is None and len(_rows(out)) < 3:
            for pid in {proc.pid, *_descendants(proc.pid)}:
                kernels.add(pid)
                sockets |= _sockets(pid)
            tcp |= _tcp_inodes()
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(kernels) > 1 and sockets, "no kernel was seen while grading"
    assert not sockets & tcp, "grading opened a TCP socket"

    survivors = _rows(out)
    assert 3 <= len(survivors) < 8
    left = list(scratch.glob("grader-*"))
    assert left, "a killed run leaves its scratch folders (if not, this check is moot)"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(out)
    assert sorted(rows) == [f"s{i}" for i in range(8)]
    assert {s: rows[s] for s in survivors} == survivors  # not graded a second time
    reports = _reports(out)
    assert sorted(reports) == sorted(rows)
    assert all(r.status == "graded" for r in reports.values())
    assert [r["student"] for r in _csv(out)] == sorted(rows)
    assert not [p for p in out.iterdir() if ".partial-" in p.name]
    assert not [p for p in left if p.exists()], "the re-run swept the killed run's folders"
    # A kernel that was starting when the run was killed can outlive it; the re-run ends it.
    assert not [p for p in left if _processes_naming(str(p))], "a kernel of the killed run lives"
    assert list(scratch.iterdir()) == []
    scratch.rmdir()


def test_zip_members_that_could_escape_are_refused(tmp_path):
    cases = {
        "traversal": ("../evil.ipynb", None),
        "absolute": ("/tmp/evil.ipynb", None),
        "drive": ("C:/evil.ipynb", None),
        "backslash": ("..\\evil.ipynb", None),
        "symlink": ("alice.ipynb", stat.S_IFLNK | 0o777),
    }
    for label, (name, mode) in cases.items():
        archive = tmp_path / f"{label}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, "/etc/passwd" if mode else "{}")
        dest = tmp_path / label
        dest.mkdir()
        with pytest.raises(SourceError):
            extract_notebooks(archive, dest)
        assert not list(dest.rglob("*")), label
    assert not (tmp_path / "evil.ipynb").exists()


def test_zip_size_caps_and_duplicates_are_refused(tmp_path, monkeypatch):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.ipynb", "0" * 5000)
        zf.writestr("b.ipynb", "0" * 5000)
    monkeypatch.setattr("grader.classrun.sources.ZIP_MAX_NOTEBOOK_BYTES", 4000)
    with pytest.raises(SourceError, match="unpacks to"):
        extract_notebooks(archive, tmp_path)
    monkeypatch.setattr("grader.classrun.sources.ZIP_MAX_NOTEBOOK_BYTES", 10_000)
    monkeypatch.setattr("grader.classrun.sources.ZIP_MAX_TOTAL_BYTES", 8000)
    with pytest.raises(SourceError, match="more than"):
        extract_notebooks(archive, tmp_path / "x")

    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a.ipynb", "{}")
        zf.writestr("a.ipynb", "{}")
    with pytest.raises(SourceError, match="twice"):
        extract_notebooks(twice, tmp_path / "y")

    not_zip = tmp_path / "class.zip"
    not_zip.write_text("no")
    with pytest.raises(SourceError, match="zip"):
        extract_notebooks(not_zip, tmp_path / "z")


def test_zip_layouts_unpack_to_the_same_submissions(tmp_path):
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("export/alice.ipynb", "{}")
        zf.writestr("export/bob/notebook.ipynb", "{}")
        zf.writestr("export/bob/data.csv", "1,2")
        zf.writestr("export/carol/backprop.py", "")
        zf.writestr("__MACOSX/export/._alice.ipynb", "junk")
        zf.writestr("export/.ipynb_checkpoints/alice-checkpoint.ipynb", "{}")
    extract_notebooks(archive, tmp_path / "x")
    found = find_submissions(tmp_path / "x")
    assert {s: [p.name for p in sub.files] for s, sub in found.items()} == {
        "alice": ["alice.ipynb"], "bob": ["notebook.ipynb"], "carol": []}
    assert not (tmp_path / "x" / "export" / "bob" / "data.csv").exists()


def test_a_lone_student_folder_is_not_taken_for_a_wrapper(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "work.ipynb").write_text("{}")
    assert list(find_submissions(tmp_path)) == ["alice"]


def test_unusable_sources_exit_2(tmp_path, capsys):
    args = ["--out", str(tmp_path / "out"), "--assignment", "derivative_calculation", "-q"]
    assert main(["grade", str(tmp_path / "missing"), *args]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["grade", str(tmp_path / "empty"), *args]) == 2
    (tmp_path / "bad.zip").write_text("not a zip")
    assert main(["grade", str(tmp_path / "bad.zip"), *args]) == 2
    assert main(["grade", str(submission(tmp_path, "alone")), *args]) == 2
    with pytest.raises(SystemExit) as bad_jobs:
        main(["grade", str(tmp_path / "empty"), *args, "--jobs", "0"])
    assert bad_jobs.value.code == 2
    err = capsys.readouterr().err
    assert "no such folder or zip" in err and "no notebooks" in err and "zip archive" in err
    assert "grader check" in err


def test_verbose_lists_each_submission_and_quiet_prints_nothing(tmp_path, capsys):
    source = tmp_path / "class"
    source.mkdir()
    for name in ("xavier", "yvonne"):
        (source / f"{name}.ipynb").write_text("{")  # unreadable: reports without a kernel
    args = ["grade", str(source), "--out", str(tmp_path / "out"),
            "--assignment", "derivative_calculation"]
    assert main([*args, "--verbose"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^xavier\s+0/\d+\s+invalid", out, re.MULTILINE)
    assert "Failures by status" in out and "invalid (submissions)" in out
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main([*args, "-v"]) == 0
    assert re.search(r"^yvonne .*\(kept\)$", capsys.readouterr().out, re.MULTILINE)


def test_a_fixed_spec_or_reference_changes_the_spec_hash(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "assignments", course / "assignments")
    shutil.copytree(ROOT / "solutions", course / "solutions")
    before = spec_hash(find_spec("derivative_calculation", course))
    assert spec_hash(find_spec("derivative_calculation", course)) == before
    reference = course / "solutions" / "derivative_calculation.ipynb"
    reference.write_text(reference.read_text() + "\n")
    after_reference = spec_hash(find_spec("derivative_calculation", course))
    toml = course / "assignments" / "derivative_calculation.toml"
    toml.write_text(toml.read_text() + "\n# fixed a tolerance\n")
    after_spec = spec_hash(find_spec("derivative_calculation", course))
    assert len({before, after_reference, after_spec}) == 3


def test_a_grader_failure_is_reported_but_not_kept(tmp_path, spec):
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "ada")
    out = tmp_path / "out"

    def no_kernel(runtime: Path, workdir: Path):
        raise RuntimeError("no kernel today")

    # Exit status 1: a run is due to retry what the grader could not do.
    assert _grade(spec, source, out, km_factory=no_kernel, sandbox="none") == 1
    report = _reports(out)["ada"]
    assert report.status == "invalid" and "no kernel today" in report.reason
    assert _rows(out) == {}  # the next run tries again
    assert _grade(spec, source, out) == 0
    assert _reports(out)["ada"].score == spec.max_score


def test_a_gradebook_of_another_schema_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        db.execute("CREATE TABLE reports (x)")
        db.execute("PRAGMA user_version = 99")
    source = tmp_path / "class"
    source.mkdir()
    (source / "x.ipynb").write_text("{")
    assert main(["grade", str(source), "--out", str(out), "-q",
                 "--assignment", "derivative_calculation"]) == 2
    assert "schema 99" in capsys.readouterr().err


def test_a_reader_that_stops_early_does_not_stop_the_grading(tmp_path):
    source = tmp_path / "class"
    source.mkdir()
    for i in range(4):
        (source / f"s{i}.ipynb").write_text("{")  # unreadable: reports without a kernel
    out = tmp_path / "out"
    # What `grader grade -v ... | head -1` does to the grader: its stdout closes early.
    proc = subprocess.Popen([str(GRADER), "grade", str(source), "--out", str(out), "-v",
                             "--assignment", "derivative_calculation"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert sorted(_reports(out)) == [f"s{i}" for i in range(4)]
    assert len(_csv(out)) == 4 and (out / "summary.png").exists()


def test_a_student_id_is_never_a_spreadsheet_formula(tmp_path, spec):
    source = tmp_path / "class"
    source.mkdir()
    (source / "=HYPERLINK(1+1).ipynb").write_text("{")
    out = tmp_path / "out"
    assert _grade(spec, source, out) == 0
    assert [row["student"] for row in _csv(out)] == ["'=HYPERLINK(1+1)"]


def test_a_notebook_that_sends_lone_surrogates_gets_a_report_and_the_class_finishes(
        tmp_path, spec):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    submission(source, "ada")
    unsafe_text_notebook(source, "mallory")
    assert _grade(spec, source, out, jobs=2) == 0
    reports = _reports(out)
    assert reports["ada"].score == spec.max_score
    assert reports["mallory"].status == "graded"
    assert reports["mallory"].cells[-1].message == "ValueError: lone \ufffd and \ufffd[2J"
    assert [r["student"] for r in _csv(out)] == ["ada", "mallory"]
    assert (out / "mallory.html").is_file() and (out / "summary.png").is_file()
    before = _rows(out)
    assert _grade(spec, source, out) == 0
    assert _rows(out) == before  # both kept: nothing to retry


def test_what_fails_while_recording_one_student_is_that_students_failure(
        tmp_path, spec, monkeypatch, capsys):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    # A name the file system takes, but too long for the temporary file beside its report.
    long_id = "x" * 240
    for student in ("ada", "bob", "cy", long_id):
        (source / f"{student}.ipynb").write_text("{")  # unreadable: reports without a kernel
    record, page = Gradebook.record, feedback_html

    def record_all_but_bob(book, student, *args):
        if student == "bob":
            raise sqlite3.OperationalError("database or disk is full")
        return record(book, student, *args)

    def page_for_all_but_cy(report, title=""):
        if report.submission == "cy.ipynb" and "the grader failed" not in (report.reason or ""):
            raise RecursionError("maximum recursion depth exceeded")
        return page(report, title)

    monkeypatch.setattr(Gradebook, "record", record_all_but_bob)
    monkeypatch.setattr("grader.classrun.batch.feedback_html", page_for_all_but_cy)
    monkeypatch.setenv("COLUMNS", "1000")  # one warning a line
    command = ["grade", str(source), "--out", str(out), "--assignment",
               "derivative_calculation", "-q"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "bob: the grader failed: its report could not be recorded" in err
    assert "cy: the grader failed: its files could not be written" in err
    assert f"{long_id}: the grader failed: its files could not be written" in err

    # The others are written; each failing student is in the table, with a report where one
    # can be written, and none is kept.
    reports = _reports(out)
    assert reports["ada"].status == "invalid" and "not valid JSON" in reports["ada"].reason
    assert "database or disk is full" in reports["bob"].reason
    assert "RecursionError" in reports["cy"].reason
    assert long_id not in reports
    table = {r["student"]: r["status"] for r in _csv(out)}
    assert table == {"ada": "invalid", "bob": "invalid", "cy": "invalid", long_id: "invalid"}
    assert set(_rows(out)) == {"ada"}

    # The next run retries them (and only them): what can be recorded now is.
    monkeypatch.undo()
    kept = _rows(out)["ada"]
    assert main(command) == 1  # the long name still cannot be written
    assert set(_rows(out)) == {"ada", "bob", "cy"} and _rows(out)["ada"] == kept
    assert "not valid JSON" in _reports(out)["cy"].reason


def test_a_report_is_graded_again_when_anything_that_could_change_it_changes(
        tmp_path, spec, monkeypatch):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    (source / "ada.ipynb").write_text("{")  # unreadable: a report without a kernel

    def no_kernel(runtime: Path, workdir: Path):
        raise AssertionError("an unreadable notebook needs no kernel")

    def graded_again(sandbox: str = "bwrap+landlock", **limits) -> bool:
        before = _rows(out).get("ada")
        assert grade_class(source, out, spec, Limits(**limits),
                           verbosity=Verbosity.QUIET, km_factory=no_kernel,
                           sandbox=sandbox) == 0
        return _rows(out)["ada"] != before

    assert graded_again()
    assert not graded_again()
    for change in [{"cell_timeout_s": 6.0}, {"call_timeout_s": 3.0},
                   {"memory_bytes": 1 << 30}, {"output_bytes": 1000},
                   {"notebook_timeout_s": 10.0}, {"restarts": 0}]:
        assert graded_again(**change), change
        assert not graded_again(**change), change
    assert graded_again(sandbox="bwrap")
    assert not graded_again(sandbox="bwrap")
    versions = json.loads(grading_settings(Limits(), "bwrap"))["versions"]
    monkeypatch.setattr("grader.classrun.keys._library_versions",
                        lambda: {**versions, "numpy": "0.0.1"})
    assert graded_again(sandbox="bwrap", memory_bytes=1 << 30)
    assert not graded_again(sandbox="bwrap", memory_bytes=1 << 30)
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        (settings,), = db.execute("SELECT settings FROM reports")
    recorded = json.loads(settings)
    assert recorded["sandbox"] == "bwrap" and recorded["mode"] == "full"
    assert recorded["limits"]["memory_bytes"] == 1 << 30
    assert set(recorded["versions"]) >= {"numpy", "nbclient", "ipykernel"}


def test_a_gradebook_of_the_previous_schema_is_brought_up_to_date(tmp_path, spec):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    (source / "ada.ipynb").write_text("{")
    out.mkdir()
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        db.execute("CREATE TABLE reports (assignment TEXT NOT NULL, student TEXT NOT NULL, "
                   "content_hash TEXT NOT NULL, grader_version TEXT NOT NULL, spec_hash TEXT "
                   "NOT NULL, seed INTEGER NOT NULL, score REAL NOT NULL, max_score REAL NOT "
                   "NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT "
                   "NULL, report_json TEXT NOT NULL, PRIMARY KEY (assignment, student))")
        secret = bytes(range(32))
        db.execute("CREATE TABLE secret (id INTEGER PRIMARY KEY CHECK (id = 0), value BLOB NOT "
                   "NULL)")
        db.execute("INSERT INTO secret VALUES (0, ?)", (secret,))
        # A row that matches on everything that schema recorded, its secret included.
        report = Report(assignment=spec.name, submission="ada.ipynb", status="invalid",
                        reason="then", score=0, max_score=spec.max_score, seed=0,
                        grader_version="then", duration_s=0)
        key = (find_submissions(source)["ada"].content_hash(), grader_build(), spec_hash(spec),
               student_seed(spec, "ada", secret))
        db.execute("INSERT INTO reports VALUES ('derivative_calculation', 'ada', ?, ?, ?, ?, "
                   "0, 22, 'invalid', 'then', 'then', ?)", (*key, report.model_dump_json()))
        db.execute("PRAGMA user_version = 1")
        db.commit()
    assert _grade(spec, source, out) == 0
    # Graded again: the settings it was graded under were never recorded.
    assert _rows(out)["ada"][5] != "then"
    assert "not valid JSON" in _reports(out)["ada"].reason
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
