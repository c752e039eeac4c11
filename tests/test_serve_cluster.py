"""`grader serve` sending its grading jobs to a Dask cluster: a real scheduler and two real
workers (tests/daskcluster.py), none of which can read the course the server grades from, and a
`local:N` cluster the server starts itself."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader.classrun.gradebook import Gradebook
from grader.classrun.keys import student_seed
from grader.grade import grade_notebook, limits_for
from grader.report import Report
from grader.spec import AssignmentSpec
from tests.daskcluster import DaskCluster
from tests.notebooks import submission
from tests.serving import Client, Server, free_port

ASSIGNMENT = "derivative_calculation"
WRONG_DELTA2 = {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}
LIMITS = "cell_timeout = 20\ncall_timeout = 5\n"


@pytest.fixture(scope="module", autouse=True)
def unreachable(tmp_path_factory: pytest.TempPathFactory, course: Path
                ) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """`grader serve --cluster` on a port nothing listens on, started with the module so that
    its wait for the scheduler (30 s) passes while the other tests run."""
    data = tmp_path_factory.mktemp("unreachable")
    (data / "course.toml").write_text(f'course = "{course}"\n{LIMITS}'
                                      f"\n[assignments.{ASSIGNMENT}]\n")
    port, nowhere = free_port(), f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "serve", "--data", str(data), "--port", str(port),
         "--cluster", nowhere], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield server, port, nowhere
    finally:
        server.kill()
        server.wait()


def _graded_on_the_cluster(dask_cluster: DaskCluster) -> int:
    """How many grading tasks the cluster's scheduler has seen finish."""

    def finished(dask_scheduler) -> int:
        # Counted over the scheduler's life, forgotten tasks included.
        prefix = dask_scheduler.task_prefixes.get("grade_task")
        return 0 if prefix is None else prefix.state_counts["memory"]

    with dask_cluster.client() as client:
        return client.run_on_scheduler(finished)


def test_a_server_on_a_cluster_grades_an_upload_as_this_machine_would(
        tmp_path: Path, course: Path, course_spec: AssignmentSpec,
        dask_cluster: DaskCluster) -> None:
    server = Server(tmp_path / "data", f'course = "{course}"\n'
                    f'cluster = "{dask_cluster.address}"\n{LIMITS}'
                    f"\n[assignments.{ASSIGNMENT}]\n")
    token = server.add("bob")
    notebook = submission(tmp_path, "bob", bodies=WRONG_DELTA2)
    server.start()
    try:
        student = Client(server, token)
        status = student.wait(student.submit(ASSIGNMENT, notebook, notebook.name))
        log = server.log()
    finally:
        server.stop()
    store = server.store()
    try:
        (graded,) = store.history(ASSIGNMENT, "bob")
        there = graded.report()
    finally:
        store.close()
    assert status["state"] == "done" and there is not None
    assert f"grading on the Dask cluster at {dask_cluster.address}: 2 kernel slot(s)" in log
    assert _graded_on_the_cluster(dask_cluster) >= 1
    # The workers graded from the copy of the course they were sent.
    assert dask_cluster.forbidden_reads() == ""
    # The student's seed, drawn from the gradebook's secret as a class run draws it.
    book = Gradebook(server.data / "gradebook.sqlite")
    try:
        seed = student_seed(course_spec, "bob", book.secret)
    finally:
        book.close()
    assert there.seed == seed
    # The same notebook graded on this machine, in the same sandbox, with the same seed and
    # limits: the same report.
    here: Report = asyncio.run(grade_notebook(
        notebook, course_spec, seed, limits_for(course_spec, 20, 5, sandbox="auto")))
    assert 0 < there.score < course_spec.max_score
    assert there.sandbox == here.sandbox != "none"
    assert there.model_dump(exclude={"duration_s"}) == here.model_dump(exclude={"duration_s"})


def test_a_server_on_a_local_cluster_grades_every_assignment_on_one_cluster(
        tmp_path: Path, course: Path, course_spec: AssignmentSpec) -> None:
    other = "softmax_cross_entropy"
    server = Server(tmp_path / "data", f'course = "{course}"\ncluster = "local:2"\n{LIMITS}'
                    f"\n[assignments.{ASSIGNMENT}]\n\n[assignments.{other}]\n")
    token = server.add("ada")
    server.start()
    try:
        student = Client(server, token)
        first = student.submit(ASSIGNMENT, submission(tmp_path, "ada"))
        # The handout as it is given: every exercise still a stub.
        second = student.submit(other, course / "assignments" / f"{other}.ipynb")
        student.wait(first), student.wait(second)
        log = server.log()
    finally:
        server.stop()
    store = server.store()
    try:
        reports = {name: store.history(name, "ada")[0].report() for name in (ASSIGNMENT, other)}
    finally:
        store.close()
    assert "grading on the Dask cluster at local:2: 2 kernel slot(s)" in log
    # Both courses went to the same two workers: one local cluster, not one per assignment.
    addresses = {name: re.search(rf"{name}: the course is on the 2 worker\(s\) of the cluster "
                                 r"at (tcp://127\.0\.0\.1:\d+)", log) for name in reports}
    assert all(addresses.values()), log
    assert addresses[ASSIGNMENT].group(1) == addresses[other].group(1)
    ada, handout = reports[ASSIGNMENT], reports[other]
    assert ada is not None and handout is not None
    assert (ada.status, ada.score) == ("graded", course_spec.max_score)
    assert handout.assignment == other and handout.score == 0
    assert ada.sandbox == handout.sandbox != "none"


def test_a_worker_that_cannot_hide_the_course_stops_the_server_before_it_serves(
        tmp_path: Path, course: Path, dask_cluster: DaskCluster) -> None:
    # Its private folder lies in the interpreter's prefix, which every kernel may read.
    exposed = Path(sys.prefix) / f"exposed-worker-{os.getpid()}"
    server = Server(tmp_path / "data", f'course = "{course}"\n'
                    f'cluster = "{dask_cluster.address}"\n{LIMITS}'
                    f"\n[assignments.{ASSIGNMENT}]\n")
    try:
        dask_cluster.start_worker("exposed", folder=exposed)
        address = dask_cluster.wait_for({"w1", "w2", "exposed"})["exposed"]
        with pytest.raises(RuntimeError, match="the server stopped") as stopped:
            server.start()
    finally:
        dask_cluster.kill("exposed")
        shutil.rmtree(exposed, ignore_errors=True)
    dask_cluster.wait_for({"w1", "w2"})
    assert server.process is not None and server.process.returncode == 2
    assert f"worker {address} cannot grade" in str(stopped.value)
    assert str(exposed) in str(stopped.value)


def test_an_unreachable_cluster_stops_the_server_before_it_serves(
        unreachable: tuple[subprocess.Popen[str], int, str]) -> None:
    server, port, nowhere = unreachable
    _, stderr = server.communicate(timeout=120)
    assert server.returncode == 2
    assert f"cannot reach the Dask scheduler at {nowhere}" in stderr
    assert "Traceback" not in stderr
    # It stopped before it served: it never said so, and nothing answers on its port.
    assert "serving the course" not in stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
