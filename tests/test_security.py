"""Hostile submissions: each notebook tries one kind of attack and the test asserts it fails.

Where an attack is judged by the credit it earns, the same notebook is also graded without a
sandbox when that shows the attack would have worked, so a passing test means "stopped". Each
attack on the sandbox is tried in both confining sandboxes (bwrap, its kernels started afresh and
forked from the fork server, and landlock, the fallback where user namespaces are missing); a
machine that cannot run one fails those tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.cli import main
from grader.grade import grade_notebook, limits_for
from grader.report import Report, TestStatus
from grader.run import processes
from grader.run import sandbox as sandbox_module
from grader.run.sandbox import SandboxUnavailable, cgroups, choose_sandbox, forking
from grader.spec import AssignmentSpec
from tests.notebooks import ROOT, SOLUTION, submission

GRADER = [str(Path(sys.executable).parent / "grader")]
# The confining sandboxes, and the layers each must bring on a Linux of today.
CONFINING = {"bwrap": "bwrap+landlock+seccomp", "fork": "fork+bwrap+landlock+seccomp",
             "landlock": "landlock+seccomp"}
# What each mode asks for: the sandbox, and how its kernels start.
REQUEST = {"bwrap": ("bwrap", "fresh"), "fork": ("bwrap", "fork"),
           "landlock": ("landlock", "fresh")}
confining = pytest.mark.parametrize("mode", list(CONFINING))


def _grade(spec: AssignmentSpec, path: Path, sandbox: str = "bwrap", **overrides) -> Report:
    """Grade in the sandbox a mode of CONFINING asks for, or in `sandbox` (auto, none)."""
    box, start = REQUEST.get(sandbox, (sandbox, "auto"))
    limits = limits_for(spec, overrides.pop("cell_timeout", 5.0),
                        overrides.pop("call_timeout", 2.0), sandbox=box, kernel_start=start,
                        **overrides)
    try:
        return asyncio.run(grade_notebook(path, spec, 7, limits))
    finally:
        # The process's fork server (forked kernels) keeps its folder until it ends.
        forking.shutdown_fork_server()


def _scores(report: Report) -> dict[str, float]:
    return {f: score for f, (score, _top) in report.function_scores().items()}


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _short_private_folder() -> Path:
    # Short, or the grader would not use it: IPC socket paths must fit in 107 bytes, so it
    # falls back to /tmp beside a long temp folder (pytest's own are too long).
    folder = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    assert len(str(folder)) <= 40
    return folder


@pytest.fixture
def private_tmp(monkeypatch) -> Iterator[Path]:
    """A temp folder for this test's grading alone, so leftovers are ours to count."""
    folder = _short_private_folder()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    forking.shutdown_fork_server()  # were one started, its folder is in this one
    shutil.rmtree(folder, ignore_errors=True)


def _conditional(flag: str, function: str, correct: str) -> str:
    """A body that is correct only when the attack behind `flag` worked."""
    # Wrong whatever the other functions return (delta2 is judged against the student's own
    # sigmoid_prime, so a zero would match a zero).
    wrong = {"sigmoid_prime": "return z + 1.0", "delta2": "return z2 + 1.0",
             "delta1": "return z1 + 1.0", "update": "return w + 1.0"}[function]
    return f"if {flag}:\n" + "".join(f"    {line}\n" for line in correct.splitlines()) + wrong


# --- choosing the sandbox ---------------------------------------------------------------------

@pytest.fixture
def fresh_choice():
    """Sandbox availability probed again, in this test and after it."""
    sandbox_module._available.cache_clear()
    yield
    sandbox_module._available.cache_clear()


def test_auto_uses_bubblewrap_landlock_and_seccomp_and_the_report_says_so(spec, fresh_choice):
    report = _grade(spec, SOLUTION, sandbox="auto")
    # As root, kernels are forked from the fork server, in the same sandbox.
    assert report.sandbox == ("fork+" * (os.geteuid() == 0)) + "bwrap+landlock+seccomp"
    assert report.score == report.max_score


def test_without_bubblewrap_auto_falls_back_to_landlock(monkeypatch, fresh_choice):
    monkeypatch.setattr(sandbox_module, "_bwrap_program", lambda: None)
    with pytest.raises(SandboxUnavailable, match="no bwrap found"):
        choose_sandbox("bwrap")
    assert choose_sandbox("auto").name == "landlock+seccomp"


def test_when_nothing_hides_the_course_check_and_grade_stop_and_name_none(
        monkeypatch, fresh_choice, tmp_path, capsys):
    # No bwrap, no Landlock: no sandbox can hide the answer key, and nothing grades silently.
    monkeypatch.setattr(sandbox_module, "_bwrap_program", lambda: None)
    monkeypatch.setattr(sandbox_module, "landlock_abi", lambda: 0)
    path = submission(tmp_path, "student")
    with pytest.raises(SandboxUnavailable, match="--sandbox none"):
        choose_sandbox("auto")
    assert main(["check", str(path)]) == 2
    assert "--sandbox none" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path), "--out", str(out), "--assignment",
                 "derivative_calculation", "-q"]) == 2
    assert "--sandbox none" in capsys.readouterr().err
    assert not list(out.glob("*.json"))
    # Asked for by name, `none` grades (trusted notebooks only), and the report says so.
    assert main(["check", str(path), "--sandbox", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sandbox"] == "none"


# --- what the kernel can reach ----------------------------------------------------------------

SNOOP = """
import os, socket, subprocess
def _reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False
NET = _reach({port})
try:
    import grader
    GRADER = True
except Exception:
    GRADER = False
def _read(path):
    try:
        with open(path, "rb") as fh:
            return len(fh.read()) > 0
    except OSError:
        return False
def _answer_key():
    folder = os.getcwd()
    while True:
        if _read(os.path.join(folder, "solutions", "derivative_calculation.ipynb")):
            return True
        if folder == os.path.dirname(folder):
            return _read({solution!r})
        folder = os.path.dirname(folder)
KEY = _answer_key()
# A grandchild in a session of its own: it outlives the kernel unless something kills it.
subprocess.Popen(["setsid", "sh", "-c", "sleep {marker} & sleep {marker} &"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""


@pytest.fixture
def listener():
    """A real TCP server on 127.0.0.1 that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[object] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def _snoop(folder: Path, port: int, marker: str) -> Path:
    from tests.notebooks import CORRECT

    return submission(folder, "snoop", cells_before=[SNOOP.format(
        port=port, solution=str(ROOT / "solutions" / "derivative_calculation.ipynb"),
        marker=marker)], bodies={
            "sigmoid_prime": _conditional("NET", "sigmoid_prime", CORRECT["sigmoid_prime"]),
            "delta2": _conditional("GRADER", "delta2", CORRECT["delta2"]),
            "delta1": _conditional("KEY", "delta1", CORRECT["delta1"]),
        })


@confining
def test_sandboxed_kernel_reaches_no_network_no_answer_key_and_leaves_no_process(
        spec, tmp_path, listener, private_tmp, mode):
    port, accepted = listener
    marker = "1000.271828"
    path = _snoop(tmp_path, port, marker)

    report = _grade(spec, path, sandbox=mode)

    assert report.sandbox == CONFINING[mode]
    assert accepted == []  # not even loopback
    scores = _scores(report)
    assert scores["sigmoid_prime"] == 0  # the network was unreachable
    assert scores["delta2"] == 0  # `import grader` failed
    assert scores["delta1"] == 0  # no solutions/ anywhere up the tree, nor at its real path
    assert scores["update"] == report.function_scores()["update"][1]  # honest work still counts
    assert _processes_with(marker) == []
    assert list(private_tmp.iterdir()) == []


def test_without_a_sandbox_the_same_notebook_steals_but_leaves_no_process(
        spec, tmp_path, listener):
    """The control for the test above: every attack works when nothing stops it."""
    port, accepted = listener
    marker = "1000.314159"
    report = _grade(spec, _snoop(tmp_path, port, marker), sandbox="none")
    assert report.sandbox == "none"
    assert len(accepted) == 1
    assert all(score == top for score, top in report.function_scores().values())
    # setsid escapes the process group; the environment marker still finds the sleeps.
    assert _processes_with(marker) == []


# --- limits -----------------------------------------------------------------------------------

LIMITS_PROBE = """
import subprocess
try:
    hog = bytearray(1536 << 20)
    MEMORY_CAPPED = False
except MemoryError:
    MEMORY_CAPPED = True
try:
    with open("big.bin", "wb") as fh:
        fh.write(b"x" * (3 << 20))
    FILE_CAPPED = False
except OSError:
    FILE_CAPPED = True
children = []
try:
    for _ in range(200):
        children.append(subprocess.Popen(["sleep", "30"]))
    PROCESSES_CAPPED = False
except OSError:
    PROCESSES_CAPPED = True
for child in children:
    child.kill()
    child.wait()
"""


@confining
def test_memory_file_size_and_process_limits_hold(spec, tmp_path, mode):
    from tests.notebooks import CORRECT

    path = submission(tmp_path, "greedy", cells_before=[LIMITS_PROBE], bodies={
        "sigmoid_prime": _conditional("MEMORY_CAPPED", "sigmoid_prime", CORRECT["sigmoid_prime"]),
        "delta2": _conditional("FILE_CAPPED", "delta2", CORRECT["delta2"]),
        "delta1": _conditional("PROCESSES_CAPPED", "delta1", CORRECT["delta1"]),
    })
    report = _grade(spec, path, sandbox=mode, memory_bytes=1 << 30, file_bytes=2 << 20,
                    processes=48)
    assert report.cells == []
    assert all(score == top for score, top in report.function_scores().values()), _scores(report)


def _peak_rss_kib(notebook: Path, out: Path) -> tuple[int, dict]:
    script = (
        "import asyncio, json, resource, sys\n"
        "from pathlib import Path\n"
        "from grader.grade import grade_notebook, limits_for\n"
        "from grader.spec import find_spec\n"
        "spec = find_spec('derivative_calculation')\n"
        "limits = limits_for(spec, 20.0, 2.0)\n"
        "report = asyncio.run(grade_notebook(Path(sys.argv[1]), spec, 7, limits))\n"
        "Path(sys.argv[2]).write_text(report.model_dump_json())\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", script, str(notebook), str(out)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.split()[-1]), json.loads(out.read_text())


def test_a_50_mb_print_costs_the_grader_no_memory(tmp_path):
    quiet = submission(tmp_path, "quiet")
    loud = submission(tmp_path, "loud", extra_cells=[
        "print('x' * 50_000_000)",
        "for _ in range(30_000):\n    print('y' * 99)",
    ])
    quiet_kib, _ = _peak_rss_kib(quiet, tmp_path / "quiet.json")
    loud_kib, report = _peak_rss_kib(loud, tmp_path / "loud.json")
    assert report["score"] == report["max_score"]
    assert report["output_dropped_bytes"] >= 2_000_000  # the small prints, counted and dropped
    assert loud_kib - quiet_kib < 30_000, (quiet_kib, loud_kib)


# --- dead kernels -----------------------------------------------------------------------------

def _kernel_cgroups(tokens: list[str]) -> set[Path]:
    """The cgroups of the kernels of these runs, across the machine's hierarchies (other
    programs grading on the machine have cgroups of their own)."""
    return {group for mount, _version in set(cgroups.hierarchies().values())
            for token in tokens for group in mount.glob(f"grader-{token}-*")}


def test_a_kernel_lost_on_a_later_case_keeps_the_earlier_cases(spec, tmp_path, monkeypatch):
    body = ("if np.ndim(z1) == 2:\n    import ctypes\n    ctypes.string_at(0)\n"
            "return delta2 * w2 * sigmoid_prime(z1)")
    tokens = [processes.RUN_FOLDER.fullmatch(run.folder.name).group(1)
              for (pid, _), run in processes._runs.items() if pid == os.getpid()]
    open_run = processes._open_run

    def recorded(base: Path) -> processes._Run:
        run = open_run(base)
        tokens.append(processes.RUN_FOLDER.fullmatch(run.folder.name).group(1))
        return run

    monkeypatch.setattr(processes, "_open_run", recorded)
    report = _grade(spec, submission(tmp_path, "late", bodies={"delta1": body}), sandbox="auto")
    delta1 = {t.group: t.status for t in report.tests if t.function == "delta1"}
    assert delta1["examples"] == delta1["scalar"] == delta1["vector"] == "passed"
    assert delta1["matrix"] == "kernel_died"
    # The kernel came back for the functions after it.
    assert _scores(report)["update"] == 5
    # A kernel that died by itself is cleaned up too: no cgroup of its run is left.
    assert tokens and not _kernel_cgroups(tokens)


def test_a_module_written_to_shadow_the_kernel_does_not_stop_the_report(spec, tmp_path):
    # Without a sandbox the working folder is writable and on the kernel's path: the student
    # plants ipykernel_launcher.py, then kills the kernel so that it has to start again.
    plant = ("open('ipykernel_launcher.py', 'w').write('import os\\nos._exit(1)\\n')\n"
             "import os\nos._exit(3)")
    report = _grade(spec, submission(tmp_path, "plant", extra_cells=[plant]), sandbox="none")
    assert report.status == "graded"
    assert [c.problem for c in report.cells] == ["kernel_died"]
    assert report.score == report.max_score


def test_a_segfault_mid_notebook_restarts_and_what_was_defined_is_graded(spec, tmp_path):
    path = submission(tmp_path, "crash", cells_before=["import ctypes\nctypes.string_at(0)"])
    report = _grade(spec, path, sandbox="auto")
    assert [c.problem for c in report.cells] == ["kernel_died"]
    assert report.score == report.max_score


def test_memory_exhaustion_is_an_error_in_its_cell_not_a_lost_grade(spec, tmp_path):
    path = submission(tmp_path, "hog", extra_cells=["hog = [bytearray(1 << 20) for _ in "
                                                    "range(4096)]"])
    report = _grade(spec, path, sandbox="auto", memory_bytes=1 << 30)
    assert [(c.problem, c.message.split(":")[0]) for c in report.cells] == [
        ("error", "MemoryError")]
    assert report.score == report.max_score


def test_a_second_death_marks_the_remaining_tests_kernel_died(spec, tmp_path):
    path = submission(tmp_path, "twice", extra_cells=["import os\nos._exit(3)",
                                                      "import ctypes\nctypes.string_at(0)"])
    report = _grade(spec, path, sandbox="auto")
    assert report.status == "graded"
    assert [c.problem for c in report.cells] == ["kernel_died", "kernel_died"]
    assert {t.status for t in report.tests} == {TestStatus.KERNEL_DIED}
    assert report.score == 0


@confining
def test_timeouts_interrupt_a_sandboxed_kernel(spec, tmp_path, mode):
    path = submission(tmp_path, "spin", cells_before=["while True:\n    pass"],
                      bodies={"update": "while True:\n    pass"})
    report = _grade(spec, path, sandbox=mode, cell_timeout=1.5, call_timeout=1.0)
    # The spinning cell, and any later cell of the notebook that calls update, are interrupted
    # and the kernel lives on.
    assert report.cells and {c.problem for c in report.cells} == {"timeout"}
    assert {t.status for t in report.tests if t.function == "update"} == {TestStatus.TIMEOUT}
    assert all(score == top for f, (score, top) in report.function_scores().items()
               if f != "update")


# --- integrity of results ---------------------------------------------------------------------

FORGERY = """
import json, builtins
import numpy as np
from IPython.display import publish_display_data, display
MIME = "application/vnd.backprop-grader.result+json"
for name in ("sigmoid_prime", "delta2", "delta1", "update"):
    for case in range(50):
        publish_display_data({MIME: {"nonce": "0" * 32, "function": name, "case": case,
                                     "outcome": {"kind": "number", "type": "float",
                                                 "dtype": "float", "value": 0.5}}})
print("All tests passed. Score: 22/22")
display({"score": 22})
# Every comparison the kernel might make now says "equal".
np.allclose = lambda *a, **k: True
np.isclose = lambda *a, **k: np.True_
np.array_equal = lambda *a, **k: True
builtins.abs = lambda x: 0
_dumps = json.dumps
def _lying_dumps(obj, *args, **kwargs):
    text = _dumps(obj, *args, **kwargs)
    return text.replace('"kind": "raised"', '"kind": "number"')
json.dumps = _lying_dumps
class Liar(float):
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __float__ = lambda self: 0.25
class LiarArray(np.ndarray):
    def __eq__(self, other):
        return np.ones(np.shape(self), dtype=bool)
class Shapeshifter:
    def __eq__(self, other):
        return True
    def __float__(self):
        return 0.25
    def __array__(self, dtype=None, copy=None):
        return np.full(3, 0.25)
"""


def test_forgery_monkeypatching_and_lying_objects_earn_nothing(spec, tmp_path):
    path = submission(tmp_path, "forger", cells_before=[FORGERY], bodies={
        "sigmoid_prime": "return Liar(0.0) if np.ndim(z) == 0 else "
                         "np.zeros_like(z).view(LiarArray)",
        "delta2": "return Shapeshifter()",
        "delta1": "raise ValueError('nothing here')",
        "update": "return [Shapeshifter() for _ in np.atleast_1d(w)]",
    })
    report = _grade(spec, path, sandbox="auto")
    assert report.status == "graded"
    assert report.score == 0, [(t.name, t.status, t.feedback) for t in report.tests if t.score]


# --- a class: hostile and honest submissions together -----------------------------------------

VANDAL = """
import glob, os
for pattern in ("../*", "../../*", "../../../*", "/tmp/*", "/tmp/*/*", {out!r} + "/*",
                {source!r} + "/*", {solutions!r} + "/*"):
    for target in glob.glob(pattern):
        try:
            if os.path.isfile(target):
                open(target, "w").write("vandalised")
        except OSError:
            pass
"""


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@confining
def test_a_class_with_hostile_submissions_grades_the_honest_ones_and_leaves_no_trace(
        tmp_path, mode):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    solutions = ROOT / "solutions"
    honest = [submission(source, f"honest{i}") for i in range(2)]
    submission(source, "vandal", cells_before=[VANDAL.format(
        out=str(out), source=str(source), solutions=str(solutions))])
    submission(source, "killer", cells_before=["import os, signal\nos.kill(os.getpid(), 9)"],
               extra_cells=["import os\nos._exit(1)"])
    submission(source, "forker", cells_before=[
        "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '1000.161803'])"])
    submission(source, "spammer", extra_cells=["import os\nos.write(2, b'z' * (1 << 20))",
                                               "print('w' * 5_000_000)"])
    before_source, before_solutions = _tree_digest(source), _tree_digest(solutions)
    private_tmp = _short_private_folder()

    done = subprocess.run([*GRADER, "grade", str(source), "--out", str(out), "--assignment",
                           "derivative_calculation", "--sandbox", REQUEST[mode][0],
                           "--kernel-start", REQUEST[mode][1], "--cell-timeout", "5",
                           "--call-timeout", "2", "-j", "2"],
                          capture_output=True, text=True, check=False, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(private_tmp)})

    assert done.returncode == 0, done.stderr
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")
               if p.stem in {"honest0", "honest1", "vandal", "killer", "forker", "spammer"}}
    assert set(reports) == {"honest0", "honest1", "vandal", "killer", "forker", "spammer"}
    for name in ("honest0", "honest1", "vandal", "forker", "spammer"):
        assert reports[name]["score"] == reports[name]["max_score"], name
        assert reports[name]["sandbox"] == CONFINING[mode]
    assert reports["killer"]["score"] == 0
    assert [h.name for h in honest] == ["honest0.ipynb", "honest1.ipynb"]
    assert _tree_digest(source) == before_source
    assert _tree_digest(solutions) == before_solutions
    assert not any("vandalised" in p.read_text(errors="replace") for p in out.rglob("*")
                   if p.is_file() and p.suffix in {".json", ".csv", ".html"})
    assert _processes_with("1000.161803") == []
    assert list(private_tmp.iterdir()) == []
    private_tmp.rmdir()
    assert len(done.stderr) < 10_000  # the kernel's own stderr never reaches the grader's


def test_rlimits_apply_without_a_sandbox_too(spec, tmp_path):
    path = submission(tmp_path, "hog_none", extra_cells=["hog = bytearray(1536 << 20)"])
    report = _grade(spec, path, sandbox="none", memory_bytes=1 << 30)
    assert [c.message.split(":")[0] for c in report.cells] == ["MemoryError"]
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # not the grader's


@pytest.mark.parametrize("forged", [
    "k = get_ipython().kernel\n"
    "k.session.send(k.iopub_socket, 'status', {}, parent=k.get_parent())",
    "k = get_ipython().kernel\n"
    "k.session.send(k.iopub_socket, 'stream', {'text': 5}, parent=k.get_parent())",
], ids=["status-without-content", "stream-of-a-number"])
def test_malformed_kernel_messages_still_end_in_a_report(spec, tmp_path, forged):
    # nbclient trusts what the kernel sends; a notebook can send it anything. Such a kernel
    # counts as lost: a fresh one replays the notebook without the forging cell.
    report = _grade(spec, submission(tmp_path, "forger", extra_cells=[forged]), sandbox="auto")
    assert report.status == "graded"
    assert [c.problem for c in report.cells] == ["kernel_died"]
    assert report.score == report.max_score  # its functions were defined before


def cgroup_controller(name: str) -> bool:
    """Whether this machine lets the grader make a kernel a cgroup of that controller."""
    groups = cgroups.kernel_cgroups(f"{'0' * 16}-{os.getpid():012x}", 1 << 30, 64)
    for group in set(groups.values()):
        cgroups.remove_cgroup(group)
    return name in groups


needs_memory_cgroups = pytest.mark.skipif(
    not cgroup_controller("memory"), reason="no memory cgroup can be made here (needs root and a "
    "cgroup filesystem with the memory controller); SECURITY.md says what holds then")


@needs_memory_cgroups
def test_memory_is_capped_for_the_kernel_and_its_children_together(spec, tmp_path, monkeypatch):
    from tests.notebooks import CORRECT

    # Eight children of 150 MB each, alive at once: each is far under the per-process limit,
    # together they exceed 1 GiB. sigmoid_prime is right only if all of them lived.
    hogs = ("import os, time\nchildren = []\nfor i in range(8):\n    pid = os.fork()\n"
            "    if pid == 0:\n        try:\n"
            "            block = bytearray(b'x') * (150 << 20)\n            time.sleep(1.5)\n"
            "        finally:\n            os._exit(0)\n    children.append(pid)\n"
            "HOGS_LIVED = sum(os.waitpid(pid, 0)[1] == 0 for pid in children) == 8\n")
    path = submission(tmp_path, "hogs", cells_before=[hogs], bodies={
        "sigmoid_prime": _conditional("HOGS_LIVED", "sigmoid_prime", CORRECT["sigmoid_prime"])})
    capped = _grade(spec, path, sandbox="auto", memory_bytes=1 << 30, cell_timeout=20)
    assert capped.function_scores()["sigmoid_prime"][0] == 0
    # The control: without the group the same notebook gets its way.
    monkeypatch.setattr(cgroups, "hierarchies", dict)
    uncapped = _grade(spec, path, sandbox="auto", memory_bytes=1 << 30, cell_timeout=20)
    assert uncapped.score == uncapped.max_score
