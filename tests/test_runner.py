"""The kernel side of grading one notebook: deaths and replays, the notebook's time, malformed
messages, the output budget and the limits themselves, each with real kernels."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nbformat
import pytest

from grader.grade import grade_notebook, limits_for
from grader.report import Report, TestStatus
from grader.run.processes import remove_scratch, scratch_dir
from grader.run.sandbox import choose_sandbox
from grader.run.session import KernelSession
from grader.settings import Limits
from grader.spec import AssignmentSpec
from tests.notebooks import submission

# delta1 kills its kernel on the matrix case, once every cell has run: a death during the calls.
DIES_ON_MATRICES = ("if np.ndim(z1) == 2:\n    import os\n    os._exit(1)\n"
                    "return delta2 * w2 * sigmoid_prime(z1)")


def _grade(spec: AssignmentSpec, path: Path, **overrides) -> Report:
    # No sandbox: the cells below write down that they ran in a file of the test's own.
    limits = limits_for(spec, overrides.pop("cell_timeout", 5.0), 2.0, sandbox="none",
                        **overrides)
    return asyncio.run(grade_notebook(path, spec, 7, limits))


def _logged(log: Path, name: str, body: str) -> str:
    """A cell that notes each time it starts in `log`, then runs `body`."""
    return f"with open({str(log)!r}, 'a') as log:\n    log.write({name!r} + '\\n')\n{body}"


def _statuses(report: Report, function: str) -> dict[str, TestStatus]:
    return {t.name.split(": ", 1)[1]: t.status for t in report.tests if t.function == function}


def test_a_death_during_the_calls_replays_no_cell_the_notebooks_time_skipped(spec, tmp_path):
    log = tmp_path / "ran.log"
    wrong_update = "def update(w, grad, learning_rate):\n    return w + learning_rate * grad"
    path = submission(tmp_path, "slow", bodies={"delta1": DIES_ON_MATRICES}, extra_cells=[
        _logged(log, "slow", "import time\ntime.sleep(60)"),
        _logged(log, "late", wrong_update),
    ])
    report = _grade(spec, path, notebook_timeout_s=3.0)

    # The slow cell used up the notebook's time and the late one never ran; after delta1
    # killed the kernel, neither ran either, and there was no time left to replay the others.
    assert log.read_text().split() == ["slow"]
    problems = [(c.problem, c.message.split(":")[0]) for c in report.cells]
    assert problems == [
        ("timeout", "stopped, and no cell after it run"),
        ("timeout", "not run again after the kernel died, nor any cell after it"),
    ]
    assert all("used up their 3 s" in c.message for c in report.cells)
    assert _statuses(report, "delta1")["matrix"] is TestStatus.KERNEL_DIED
    update = _statuses(report, "update")
    assert update.pop("examples") is TestStatus.PASSED  # every worked example is called first
    assert set(update.values()) == {TestStatus.KERNEL_DIED}
    sigmoid_prime, top = report.function_scores()["sigmoid_prime"]
    assert sigmoid_prime == top  # graded before the death


def test_a_replay_gets_only_what_is_left_of_the_notebooks_time(spec, tmp_path):
    log = tmp_path / "ran.log"
    path = submission(tmp_path, "slowish", bodies={"delta1": DIES_ON_MATRICES}, extra_cells=[
        _logged(log, "slow", "import time\ntime.sleep(3)"),
    ])
    report = _grade(spec, path, notebook_timeout_s=5.0, cell_timeout=10.0)

    # The slow cell ran in full, then again after the death until the 5 s were used up.
    assert log.read_text().split() == ["slow", "slow"]
    slow = len(nbformat.read(path, as_version=4).cells) - 1
    assert [(c.cell, c.problem) for c in report.cells] == [(slow, "timeout")]
    assert report.cells[0].message.startswith("stopped when run again after the kernel "
                                              "restarted")
    # The functions were defined before the slow cell: the fresh kernel grades the rest.
    assert _statuses(report, "delta1")["matrix"] is TestStatus.KERNEL_DIED
    assert report.function_scores()["update"] == (5, 5)


def test_a_cell_that_kills_the_kernel_when_replayed_is_left_out_of_the_next_replay(
        spec, tmp_path):
    marker = tmp_path / "ran-once"
    fickle = (f"import os, pathlib\nmarker = pathlib.Path({str(marker)!r})\n"
              "if marker.exists():\n    os._exit(1)\nmarker.touch()")
    path = submission(tmp_path, "fickle", extra_cells=[fickle, "import os\nos._exit(3)"])
    report = _grade(spec, path, restarts=2)
    cells = len(nbformat.read(path, as_version=4).cells)
    assert [(c.cell, c.problem) for c in report.cells] == [
        (cells - 1, "kernel_died"), (cells - 2, "kernel_died")]
    assert report.cells[1].message.startswith("run again after the kernel restarted")
    # The second fresh kernel replayed every other cell: nothing is lost.
    assert report.score == report.max_score


def test_a_malformed_message_during_a_call_ends_in_a_report(spec, tmp_path):
    # Content that is not JSON, sent on the kernel's own channel while update is called on a
    # matrix: on a hidden case, so that the notebook's own cells, replayed, do not send it.
    forge = ("if np.ndim(w) == 2:\n"
             "    k = get_ipython().kernel\n"
             "    k.session.send(k.iopub_socket, 'display_data', b'{not json', "
             "parent=k.get_parent())\n"
             "return w - learning_rate * grad")
    report = _grade(spec, submission(tmp_path, "forger", bodies={"update": forge}))
    assert report.status == "graded"
    assert _statuses(report, "update")["matrix"] is TestStatus.KERNEL_DIED
    assert all(score == top for f, (score, top) in report.function_scores().items()
               if f != "update")


def test_a_display_and_its_update_are_each_charged_once_to_the_output_budget(spec, tmp_path):
    path = submission(tmp_path, "display", extra_cells=[
        "from IPython.display import display\ndisplay('a' * 10_000, display_id='d')",
        "from IPython.display import update_display\nupdate_display('b' * 10_000, "
        "display_id='d')",
    ])
    roomy = _grade(spec, path, output_bytes=1_000_000)
    assert roomy.output_dropped_bytes == 0
    # 15,000 bytes hold the display (10,003 bytes of text with its id) once, not twice, and
    # not its update as well.
    tight = _grade(spec, path, output_bytes=15_000)
    assert tight.output_dropped_bytes == 10_003
    assert tight.score == tight.max_score


@pytest.mark.parametrize("limit", ["cell_timeout_s", "notebook_timeout_s", "memory_bytes",
                                   "output_bytes", "cpu_s", "processes"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_limits_refuse_zero_negative_and_non_finite_values(limit, value):
    with pytest.raises(ValueError, match=limit):
        Limits(**{limit: value})


def test_no_restart_is_a_limit_too():
    assert Limits(restarts=0).restarts == 0
    with pytest.raises(ValueError, match="restarts"):
        Limits(restarts=-1)


async def _execute_in_a_kernel(code: str, stall_s: float) -> tuple[bool, list[str]]:
    """Run `code` with a deadline of 0.5 s in a fresh kernel while the grader stalls for
    `stall_s` right after sending it; (whether it was interrupted, the message types read)."""
    limits = Limits()
    runtime = scratch_dir("run")
    (runtime / "work").mkdir()
    session = KernelSession(nbformat.v4.new_notebook(), limits,
                            choose_sandbox("none").factory(limits), runtime, runtime / "work")
    read: list[str] = []
    stalled = False

    def progress() -> int:
        nonlocal stalled
        if not stalled:
            stalled = True
            time.sleep(stall_s)  # the grader, busy elsewhere, holds up the event loop
        return 0

    try:
        await session.start()
        interrupted = await session.execute(code, lambda msg: read.append(msg["msg_type"]),
                                            deadline_s=0.5, progress=progress)
    finally:
        await session.stop()
        remove_scratch(runtime)
    return interrupted, read


def test_an_answer_queued_while_the_grader_was_busy_is_read_before_any_interrupt():
    interrupted, read = asyncio.run(_execute_in_a_kernel("print('done')", stall_s=3.0))
    assert not interrupted
    assert "stream" in read


def test_a_kernel_flooding_output_is_interrupted_all_the_same():
    interrupted, read = asyncio.run(_execute_in_a_kernel(
        "import sys\nwhile True:\n    sys.stdout.write('x' * 100 + '\\n'); sys.stdout.flush()",
        stall_s=0.0))
    assert interrupted
    assert "error" in read  # the KeyboardInterrupt
