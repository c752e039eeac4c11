"""Kernels started ahead: each runs one submission only, grades the same, and leaves nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from grader import grade
from grader.classrun.batch import ClassRun, grade_class
from grader.classrun.gradebook import GradingKey
from grader.classrun.sources import find_submissions
from grader.grade import grade_notebook, limits_for
from grader.outputs.progress import Verbosity
from grader.run.pool import KernelPool
from grader.run.sandbox import choose_sandbox
from grader.spec import AssignmentSpec
from tests.notebooks import submission
from tests.test_batch import _processes_naming, _reports, _rows, _without_timing

GRADER = Path(sys.executable).parent / "grader"

# Leaves a mark everywhere a later kernel could find it if it were the same kernel: in the
# interpreter (a module's state), its environment, its home and its temp folder.
LEAVE = """
import builtins, os, sys, tempfile
builtins.LEFT_BY_ANOTHER = True
os.environ["LEFT_BY_ANOTHER"] = "1"
sys.modules["left_by_another"] = sys
for folder in (os.path.expanduser("~"), tempfile.gettempdir()):
    open(os.path.join(folder, "left_by_another"), "w").write("x")
"""
LOOK = """
import builtins, os, sys, tempfile
FOUND = [where for where, seen in [
    ("builtins", hasattr(builtins, "LEFT_BY_ANOTHER")),
    ("environment", "LEFT_BY_ANOTHER" in os.environ),
    ("modules", "left_by_another" in sys.modules),
    ("home", os.path.exists(os.path.join(os.path.expanduser("~"), "left_by_another"))),
    ("temp", os.path.exists(os.path.join(tempfile.gettempdir(), "left_by_another")))] if seen]
"""
# Correct only when no mark was found: a found mark costs the points of `update`.
JUDGED_BY_MARKS = {"update": "return w - learning_rate * grad if not FOUND else w"}
# Correct only when the kernel's home holds the submission's own file, whole.
OWN_FILE = """
import json, os
try:
    with open("reader.ipynb") as fh:
        OWN_FILE = "def update(" in fh.read() and bool(json.load(open("reader.ipynb")))
except OSError:
    OWN_FILE = False
"""


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch):
    """A temp folder of this test's own (short: IPC socket paths must fit), where every run
    and kernel folder of the grader goes, and where what is left is ours to count."""
    folder = Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert not _processes_naming(str(folder)), "a kernel outlived its run"
    assert list(folder.iterdir()) == [], "a run or kernel folder was left behind"
    folder.rmdir()


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_no_kernel_runs_two_submissions(tmp_path, spec, scratch, sandbox):
    """Submissions that leave marks and submissions that look for them, one at a time with two
    kernels ahead: no one finds another's marks; one that looks for its own finds them."""
    source = tmp_path / "class"
    source.mkdir()
    for i in range(3):
        submission(source, f"a{i}_leaver", cells_before=[LEAVE, "FOUND = []"],
                   bodies=JUDGED_BY_MARKS)
        submission(source, f"b{i}_looker", cells_before=[LOOK], bodies=JUDGED_BY_MARKS)
    # The control: marks it left itself are found, so the looking works.
    submission(source, "c_itself", cells_before=[LEAVE, LOOK], bodies=JUDGED_BY_MARKS)
    limits = limits_for(spec, 5.0, 2.0).model_copy(update={"sandbox": sandbox})
    out = tmp_path / "out"
    assert grade_class(source, out, spec, limits, jobs=1, ahead=2,
                       verbosity=Verbosity.QUIET) == 0
    reports = _reports(out)
    assert len(reports) == 7 and all(r.status == "graded" for r in reports.values())
    assert reports["c_itself"].score < spec.max_score
    assert {s: r.score for s, r in reports.items() if s != "c_itself"} == {
        s: spec.max_score for s in reports if s != "c_itself"}


def test_kernels_ahead_grade_as_kernels_started_on_demand(tmp_path, spec, scratch):
    """The same class, graded with and without kernels ahead, gets the same reports, a kernel
    that dies (and its fresh replacement) included; each kernel sees its submission's file."""
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "ada")
    submission(source, "claude", bodies={"delta2": "return (y - y_hat) * sigmoid_prime(z2)"})
    submission(source, "kath", complete=False)
    submission(source, "killer", bodies={"delta1": "import os\nos._exit(1)"})
    reader = submission(source, "reader", cells_before=[OWN_FILE],
                        bodies={"update": "return w - learning_rate * grad if OWN_FILE else w"})
    # Large enough to reach the kernel in more than one piece.
    nb = nbformat.read(reader, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A long essay. " * 200_000))
    nbformat.write(nb, reader)
    limits = limits_for(spec, 5.0, 2.0)
    assert grade_class(source, tmp_path / "ahead", spec, limits, jobs=2, ahead=3,
                       verbosity=Verbosity.QUIET) == 0
    # The same gradebook, so the same cases.
    assert grade_class(source, tmp_path / "on-demand", spec, limits, jobs=2, ahead=0,
                       gradebook=tmp_path / "ahead" / "gradebook.sqlite", force=True,
                       verbosity=Verbosity.QUIET) == 0
    ahead, on_demand = _reports(tmp_path / "ahead"), _reports(tmp_path / "on-demand")
    assert sorted(ahead) == ["ada", "claude", "kath", "killer", "reader"]
    assert {s: _without_timing(r) for s, r in ahead.items()} == {
        s: _without_timing(r) for s, r in on_demand.items()}
    assert ahead["reader"].score == ahead["ada"].score == spec.max_score
    assert ahead["killer"].score < spec.max_score


def test_an_error_mid_run_shuts_down_every_kernel_started_ahead(tmp_path, spec, scratch):
    """A run that stops on an error (here: recording the first report fails) leaves no kernel
    and no folder, though kernels were started ahead for the rest of the class."""
    source = tmp_path / "class"
    source.mkdir()
    for i in range(6):
        submission(source, f"s{i}")
    limits = limits_for(spec, 5.0, 2.0)
    box = choose_sandbox(limits.sandbox, hide=(spec.source, spec.reference_path, source))
    run = ClassRun(spec, limits, jobs=1, km_factory=box.factory(limits), sandbox=box.name,
                   ahead=3)
    todo = [(s, GradingKey("", "", "", 7, "")) for s in find_submissions(source).values()]
    graded: list[str] = []

    def done(submission, key, report, started_at, keep) -> None:
        graded.append(submission.student)
        raise OSError("disk full")

    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(run.grade_all(todo, done))
    assert caught.group_contains(OSError, match="disk full")
    assert graded == ["s0"]
    # The scratch fixture checks that nothing was left.


def test_a_service_grades_each_submission_in_a_kernel_of_its_own(tmp_path, spec, scratch):
    """A pool kept open across submissions, as a service keeps it, hands each submission a
    started kernel of its own; closing it shuts down the one still waiting."""
    looker = submission(tmp_path, "looker", cells_before=[LOOK], bodies=JUDGED_BY_MARKS)
    leaver = submission(tmp_path, "leaver", cells_before=[LEAVE, "FOUND = []"],
                        bodies=JUDGED_BY_MARKS)
    limits = limits_for(spec, 5.0, 2.0)
    box = choose_sandbox(limits.sandbox, hide=(spec.source, spec.reference_path))
    factory = box.factory(limits)

    async def serve() -> list[int]:
        async with KernelPool(limits, factory, size=1) as pool:
            scores = []
            for path in (leaver, looker, leaver, looker):
                await pool.ready()
                report = await grade_notebook(path, spec, 7, limits, km_factory=factory,
                                              sandbox=box.name, kernels=pool)
                scores.append(report.score)
            await pool.ready()
            assert len(list(scratch.glob("grader-*/run-*"))) == 1  # the next one, waiting
            return scores

    assert asyncio.run(serve()) == [spec.max_score] * 4


def test_a_check_starts_its_kernel_while_it_reads_the_reference(tmp_path, spec, scratch,
                                                               monkeypatch):
    """One notebook graded alone (`grader check`): its kernel is already starting while the
    reference notebook is read."""
    path = submission(tmp_path, "ada")
    seen: list[bool] = []
    read = grade.reference_namespace

    def reading(spec: AssignmentSpec) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _processes_naming(str(scratch)):
            time.sleep(0.05)
        seen.append(bool(_processes_naming(str(scratch))))
        return read(spec)

    monkeypatch.setattr(grade, "reference_namespace", reading)
    # Fresh kernels, whose command line names their folder: a forked kernel's shows its
    # server's, and the start overlaps the reading the same way in either.
    limits = limits_for(spec, 5.0, 2.0, kernel_start="fresh")
    report = asyncio.run(grade_notebook(path, spec, 7, limits))
    assert seen == [True]
    assert report.score == spec.max_score


def test_ctrl_c_shuts_down_the_kernels_started_ahead(tmp_path, spec):
    """Interrupted (Ctrl-C) mid-class, a run exits 130 and leaves no kernel and no folder."""
    source = tmp_path / "class"
    source.mkdir()
    for i in range(8):
        # Slow enough that the class is still being graded when the interrupt comes.
        submission(source, f"s{i}", cells_before=["import time\ntime.sleep(1)"])
    scratch = Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))
    command = [str(GRADER), "grade", str(source), "--out", str(tmp_path / "out"), "--jobs", "1",
               "--kernels-ahead", "3", "--assignment", "derivative_calculation", "--quiet"]
    proc = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(scratch)},
                            stderr=subprocess.PIPE, text=True)
    try:
        # Interrupted once kernels are started ahead and the first report is in.
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and (
                not _rows(tmp_path / "out") or len(list(scratch.glob("grader-*/run-*"))) < 3):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert 1 <= len(_rows(tmp_path / "out")) < 8
    assert not _processes_naming(str(scratch)), "a kernel outlived the interrupted run"
    assert list(scratch.iterdir()) == [], "the interrupted run left folders"
    scratch.rmdir()
