"""Grading a class on a Dask cluster: a real scheduler and real workers, each a process of its
own in its own empty folder, none of them able to read the course the coordinator grades from."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.classrun.batch import grade_class
from grader.classrun.cluster import Cluster, ClusterError, Outcome, read_report
from grader.classrun.gradebook import Gradebook
from grader.grade import limits_for
from grader.outputs.progress import Verbosity
from grader.spec import AssignmentSpec
from tests.daskcluster import BIN, DaskCluster
from tests.notebooks import submission
from tests.test_batch import _reports

WRONG_DELTA2 = {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}
SLOW = ["import time\ntime.sleep(1.5)"]


def _limits(spec: AssignmentSpec):
    return limits_for(spec, 5.0, 2.0)


def _rows(book: Path) -> dict[str, tuple]:
    """student -> (content hash, grader version, spec hash, seed, settings, finished_at)."""
    with contextlib.closing(sqlite3.connect(book)) as db:
        try:
            return {r[0]: r[1:] for r in db.execute(
                "SELECT student, content_hash, grader_version, spec_hash, seed, settings, "
                "finished_at FROM reports")}
        except sqlite3.OperationalError:  # created but its table not yet
            return {}


def _twin_gradebooks(folder: Path) -> tuple[Path, Path]:
    """Two empty gradebooks holding the same secret, so that they draw the same seeds."""
    first, second = folder / "local.sqlite", folder / "cluster.sqlite"
    Gradebook(first).close()
    shutil.copy(first, second)
    return first, second


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, course_spec: AssignmentSpec,
           dask_cluster: DaskCluster):
    """A class graded locally with --jobs and on the cluster, from gradebooks of one secret."""
    source = tmp_path_factory.mktemp("class")
    submission(source, "ada")
    submission(source, "bob", bodies=WRONG_DELTA2)
    submission(source, "cy", complete=False)
    (source / "dee.ipynb").write_text("not a notebook")
    books = tmp_path_factory.mktemp("books")
    local_book, cluster_book = _twin_gradebooks(books)
    local_out, cluster_out = books / "local", books / "cluster"
    local = grade_class(source, local_out, course_spec, _limits(course_spec), jobs=2,
                        gradebook=local_book, verbosity=Verbosity.QUIET)
    on_cluster = grade_class(source, cluster_out, course_spec, _limits(course_spec),
                             gradebook=cluster_book, verbosity=Verbosity.QUIET,
                             cluster=dask_cluster.address)
    return source, (local, local_out, local_book), (on_cluster, cluster_out, cluster_book)


def test_a_class_graded_on_the_cluster_gets_the_scores_and_seeds_of_a_local_run(
        graded, course_spec, dask_cluster):
    _, (local, local_out, local_book), (on_cluster, cluster_out, cluster_book) = graded
    assert local == on_cluster == 0
    here, there = _reports(local_out), _reports(cluster_out)
    assert sorted(there) == ["ada", "bob", "cy", "dee"]
    assert there["ada"].score == course_spec.max_score
    assert 0 < there["bob"].score < course_spec.max_score
    assert there["dee"].status == "invalid"
    assert {s: r.model_dump(exclude={"duration_s"}) for s, r in there.items()} == {
        s: r.model_dump(exclude={"duration_s"}) for s, r in here.items()}
    assert there["ada"].sandbox != "none"
    # The same keys: a report graded on the cluster is kept by a local run, and the reverse.
    assert {s: r[:5] for s, r in _rows(cluster_book).items()} == {
        s: r[:5] for s, r in _rows(local_book).items()}
    # Full marks, with every attempt to read the coordinator's course refused: the workers
    # graded from their own copy.
    assert dask_cluster.forbidden_reads() == ""


def test_a_rerun_on_the_cluster_grades_nothing_again(graded, course, dask_cluster, capsys):
    from grader.cli import main

    source, _, (_, out, book) = graded
    before = _rows(book)
    status = main(["grade", str(source), "--out", str(out), "--gradebook", str(book),
                   "--course", str(course), "--assignment", "derivative_calculation",
                   "--cell-timeout", "5", "--call-timeout", "2",
                   "--cluster", dask_cluster.address])
    assert status == 0
    assert _rows(book) == before
    assert "graded in this run      │ 0" in capsys.readouterr().out


def test_a_worker_that_cannot_hide_the_course_stops_the_run_and_is_named(
        tmp_path, course_spec, dask_cluster):
    # A worker whose private folder lies in the interpreter's prefix, which every kernel may
    # read: it would let the kernels read its copy of the course.
    exposed = Path(sys.prefix) / f"exposed-worker-{os.getpid()}"
    try:
        dask_cluster.start_worker("exposed", folder=exposed)
        address = dask_cluster.wait_for({"w1", "w2", "exposed"})["exposed"]
        (tmp_path / "class").mkdir()
        submission(tmp_path / "class", "ada")
        with pytest.raises(ClusterError) as refused:
            grade_class(tmp_path / "class", tmp_path / "out", course_spec,
                        _limits(course_spec), verbosity=Verbosity.QUIET,
                        cluster=dask_cluster.address)
        assert f"worker {address} cannot grade" in str(refused.value)
        assert str(exposed) in str(refused.value)
        assert not (tmp_path / "out").exists()  # refused before anything was graded
    finally:
        dask_cluster.kill("exposed")
        shutil.rmtree(exposed, ignore_errors=True)
    dask_cluster.wait_for({"w1", "w2"})


def test_a_worker_killed_mid_run_still_leaves_one_report_per_student(
        tmp_path, course_spec, dask_cluster):
    source = tmp_path / "class"
    source.mkdir()
    for name in ("ann", "ben", "cat", "dan"):
        submission(source, name, extra_cells=SLOW,
                   bodies=WRONG_DELTA2 if name == "ben" else None)
    dask_cluster.start_worker("doomed")
    doomed = dask_cluster.wait_for({"w1", "w2", "doomed"})["doomed"]
    out = tmp_path / "out"
    status: list[int] = []
    run = threading.Thread(target=lambda: status.append(grade_class(
        source, out, course_spec, _limits(course_spec), verbosity=Verbosity.QUIET,
        cluster=dask_cluster.address)))
    run.start()
    try:
        with dask_cluster.client() as client:
            deadline = time.monotonic() + 120
            while not client.processing(workers=[doomed]).get(doomed):
                assert time.monotonic() < deadline, "the doomed worker never got a task"
                time.sleep(0.05)
        time.sleep(0.5)  # its kernel is starting or running the notebook's cells
        dask_cluster.kill("doomed")
    finally:
        run.join()
    assert status == [0]
    rows = _rows(out / "gradebook.sqlite")
    assert sorted(rows) == ["ann", "ben", "cat", "dan"]
    reports = _reports(out)
    assert sorted(reports) == sorted(rows)
    assert {s: r.score for s, r in reports.items()} == {
        "ann": course_spec.max_score, "ben": reports["ben"].score,
        "cat": course_spec.max_score, "dan": course_spec.max_score}
    assert reports["ben"].score < course_spec.max_score
    assert all(r.status == "graded" for r in reports.values())


def test_a_coordinator_killed_mid_run_is_finished_by_the_same_command(
        tmp_path, course, dask_cluster):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    for name in ("ann", "ben", "cat", "dan"):
        submission(source, name, extra_cells=SLOW)
    command = [str(BIN / "grader"), "grade", str(source), "--out", str(out), "--quiet",
               "--course", str(course), "--assignment", "derivative_calculation",
               "--cell-timeout", "5", "--call-timeout", "2", "--cluster", dask_cluster.address]
    first = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "gradebook.sqlite").exists() or not _rows(out / "gradebook.sqlite"):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = _rows(out / "gradebook.sqlite")
    assert 1 <= len(before) < 4
    assert subprocess.run(command, timeout=300).returncode == 0
    after = _rows(out / "gradebook.sqlite")
    assert sorted(after) == ["ann", "ben", "cat", "dan"]
    # What the killed run committed was kept, not graded again.
    assert {s: after[s] for s in before} == before
    assert sorted(_reports(out)) == sorted(after)


def test_without_distributed_the_error_names_the_extra(tmp_path, course):
    submission(tmp_path, "ada")
    run = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['distributed'] = None; "
         "from grader.cli import main; sys.exit(main(sys.argv[1:]))",
         "grade", str(tmp_path), "--out", str(tmp_path / "out"), "--course", str(course),
         "--assignment", "derivative_calculation", "--cluster", "local:1"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "pip install 'backprop-grader[dask]'" in run.stderr


def test_a_service_grades_one_notebooks_bytes_on_the_cluster(graded, course_spec,
                                                              dask_cluster):
    source, (_, local_out, _), _ = graded
    here = _reports(local_out)["bob"]  # graded on this machine
    with Cluster.open(dask_cluster.address, course_spec, _limits(course_spec)) as cluster:
        there = cluster.grade((source / "bob.ipynb").read_bytes(), "bob.ipynb", here.seed)
        # The workers named which sandbox they grade in, and graded in it.
        assert there.sandbox == cluster.sandbox == here.sandbox
    assert there.model_dump(exclude={"duration_s"}) == here.model_dump(exclude={"duration_s"})
    assert dask_cluster.forbidden_reads() == ""


def test_only_a_valid_report_in_json_text_is_taken_from_a_worker(graded):
    report = _reports(graded[1][1])["cy"]
    sent = Outcome(worker="tcp://10.0.0.7:4000", report=report).model_dump_json()
    assert read_report(sent) == report
    refused = {
        "failure": Outcome(worker="tcp://10.0.0.7:4000", failure="no kernel").model_dump_json(),
        "object": report,  # an object unpickled from a worker is never taken as a report
        "not json": "<html>",
        "bad report": sent.replace('"status":"graded"', '"status":"excellent"'),
        "extra field": sent.replace('{"worker"', '{"admin":true,"worker"'),
    }
    for what, result in refused.items():
        with pytest.raises(ClusterError) as error:
            read_report(result)
        if what == "failure":
            assert "worker tcp://10.0.0.7:4000: no kernel" in str(error.value)
