"""The sandbox's layers, one attack at a time: what a confined process can no longer do, that no
submission reaches another's files or kernel, that nothing a kernel leaves breaks a later run,
that a course the kernels could read is refused, and that a kernel gets its fair CPU share.

Both confining sandboxes are tried (bwrap, its kernels started afresh and forked from the fork
server, and landlock, the fallback without user namespaces); a machine that cannot run one of
them fails those tests.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import nbformat
import pytest

from grader.classrun.batch import grade_class
from grader.cli import main
from grader.files import remove_tree
from grader.grade import grade_notebook, limits_for
from grader.report import Report
from grader.run import processes, sandbox
from grader.run.observe import observe
from grader.run.processes import remove_scratch, scratch_dir, sweep_scratch
from grader.run.sandbox import cgroups, choose_sandbox, forking, sweep_leftovers
from grader.run.sandbox.confinement import syscall_numbers
from grader.settings import Limits
from grader.spec import AssignmentSpec, find_spec
from tests.notebooks import CORRECT, ROOT, submission

GRADER = str(Path(sys.executable).parent / "grader")
CONFINING = {"bwrap": "bwrap+landlock+seccomp", "fork": "fork+bwrap+landlock+seccomp",
             "landlock": "landlock+seccomp"}
# What each mode asks for: the sandbox, and how its kernels start.
REQUEST = {"bwrap": ("bwrap", "fresh"), "fork": ("bwrap", "fork"),
           "landlock": ("landlock", "fresh")}
confining = pytest.mark.parametrize("mode", list(CONFINING))


@pytest.fixture
def private_tmp(monkeypatch) -> Iterator[Path]:
    """A short temp folder for this test's grading alone (socket paths must stay short)."""
    folder = Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    forking.shutdown_fork_server()  # were one started, its folder is in this one
    remove_tree(folder)


def _conditional(flag: str, function: str) -> str:
    """A body that is correct only when the attack behind `flag` worked."""
    wrong = {"sigmoid_prime": "return z + 1.0", "delta2": "return z2 + 1.0",
             "delta1": "return z1 + 1.0", "update": "return w + 1.0"}[function]
    return f"if {flag}:\n" + "".join(f"    {line}\n" for line in
                                     CORRECT[function].splitlines()) + wrong


def _stolen(report: Report, functions: Sequence[str]) -> list[str]:
    """The functions among `functions` that earned points (their attack worked)."""
    scores = report.function_scores()
    return [f for f in functions if scores[f][0] > 0]


def _grade_together(paths: Sequence[Path], spec: AssignmentSpec, mode: str,
                    **overrides) -> list[Report]:
    """Grade notebooks at the same time, one kernel each, in the sandbox `mode`."""
    box, start = REQUEST.get(mode, (mode, "fresh"))
    limits = limits_for(spec, overrides.pop("cell_timeout", 20.0), 2.0, sandbox=box,
                        kernel_start=start, **overrides)

    async def run() -> list[Report]:
        return await asyncio.gather(*(grade_notebook(p, spec, 7, limits) for p in paths))

    try:
        return asyncio.run(run())
    finally:
        # The process's fork server (forked kernels) keeps its folder until it ends.
        forking.shutdown_fork_server()


# --- the layers inside the kernel's process ---------------------------------------------------

# Run confined, as a kernel is: what it may still do, as JSON.
PROBE = """
import ctypes, errno, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# A keyring of this process's own, where the layers allow it: a key added below dies with it.
libc.syscall(ctypes.c_long(NUMBERS["keyctl"]), ctypes.c_long(1), None)
def call(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(NUMBERS[name]), *map(ctypes.c_long, args))
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def unix_connect():
    server = socket.socket(socket.AF_UNIX)
    server.bind("\\0grader-probe-" + str(os.getpid()))
    server.listen()
    socket.socket(socket.AF_UNIX).connect("\\0grader-probe-" + str(os.getpid()))
def metadata(path):  # try to change a file's mode, times and attributes: which changed
    before = os.stat(path)
    os.chmod(path, 0o4777)
    os.utime(path, (0, 0))
    try:
        os.setxattr(path, "user.grader", b"1")
        xattr = os.getxattr(path, "user.grader") == b"1"
    except OSError:
        xattr = False
    after = os.stat(path)
    return {"mode": after.st_mode != before.st_mode, "times": after.st_mtime != before.st_mtime,
            "xattr": xattr}
ipc = os.path.dirname(CONNECTION)
seen = {
    "add_key": call("add_key", 0, 0, 0, 0, -3),
    "keyctl": call("keyctl", 0, -3, 0),
    "request_key": call("request_key", 0, 0, 0, 0),
    "unshare": call("unshare", 0x10000000),
    "ptrace": call("ptrace", 16, os.getppid(), 0, 0),
    "bpf": call("bpf", 0, 0, 0),
    "perf_event_open": call("perf_event_open", 0, 0, -1, -1, 0),
    "io_uring_setup": call("io_uring_setup", 1, 0),
    "userfaultfd": call("userfaultfd", 0),
    "shmget": call("shmget", 0, 4096, 0o1600),
    "mount": call("mount", 0, 0, 0, 0, 0),
    "clone3": call("clone3", 0, 0),
    "tcp": attempt(lambda: socket.socket(socket.AF_INET).bind(("127.0.0.1", 0))),
    "udp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "unix_datagram": attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)),
    "unix_connect": attempt(unix_connect),
    "socketpair": attempt(lambda: socket.socketpair()),
    "subprocess": attempt(lambda: subprocess.run(["true"], check=True)),
    "fork": attempt(lambda: os.waitpid(os.fork() or os._exit(0), 0)),
    "signal_grader": attempt(lambda: os.kill(GRADER_PID, 0)),
    "read_system_file": attempt(lambda: open("/etc/passwd").read()),
    "read_course": attempt(lambda: open(SOLUTION).read()),
    "list_root": attempt(lambda: os.listdir("/")),
    "write_home": attempt(lambda: open(os.path.expanduser("~/x"), "w").write("x")),
    "write_tmpdir": attempt(lambda: open(os.environ["TMPDIR"] + "/x", "w").write("x")),
    "metadata": metadata(os.path.expanduser("~/x")),
    "write_tmp": attempt(lambda: open("/tmp/grader-probe-x", "w").write("x")),
    "mkdir_ipc": attempt(lambda: os.mkdir(ipc + "/nested")),
    "file_in_ipc": attempt(lambda: open(ipc + "/planted", "w").write("x")),
    "socket_in_ipc": attempt(lambda: socket.socket(socket.AF_UNIX).bind(ipc + "/sock")),
    "connection_file": attempt(lambda: open(CONNECTION).read()),
}
print(json.dumps(seen))
"""


def _confined_run(mode: str, code: str) -> dict[str, str]:
    """Run `code` the way a kernel of `mode` runs, and return what it printed (JSON)."""
    requested, start = REQUEST.get(mode, (mode, "fresh"))
    box = choose_sandbox(requested, kernel_start=start)
    assert box.name == CONFINING.get(mode, "none")
    runtime = scratch_dir("run")
    try:
        (runtime / "work").mkdir()
        km = box.factory(Limits())(runtime, runtime / "work")
        km.write_connection_file()
        head = (f"NUMBERS = {syscall_numbers()!r}\nGRADER_PID = {os.getpid()}\n"
                f"SOLUTION = {str(ROOT / 'solutions' / 'derivative_calculation.ipynb')!r}\n"
                f"CONNECTION = {km.connection_file!r}\n")
        if isinstance(km, sandbox.ForkedKernelManager):
            returncode, stdout, stderr = sandbox._run_forked(km, head + code, runtime / "out")
        else:
            args = ([*km.python_args[:-2], "-c", head + code] if mode != "none"
                    else ["-c", head + code])
            done = subprocess.run(km.command(*args), capture_output=True, text=True, timeout=60,
                                  check=False)
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        assert returncode == 0, stderr
        return json.loads(stdout.strip().splitlines()[-1])
    finally:
        remove_scratch(runtime)


@confining
def test_a_confined_kernel_keeps_to_its_own_files_and_reaches_no_host_facility(mode,
                                                                              private_tmp):
    seen = _confined_run(mode, PROBE)
    # The keyring, System V IPC, namespaces, tracing, bpf, perf, io_uring, mounts: closed.
    for call in ("add_key", "keyctl", "request_key", "unshare", "ptrace", "bpf",
                 "perf_event_open", "io_uring_setup", "userfaultfd", "shmget", "mount"):
        assert seen[call] == "EPERM", (call, seen[call])
    assert seen["clone3"] == "ENOSYS"  # so that the C library falls back to clone
    # No network of any kind, no datagram to a socket of the machine, no connection at all.
    assert seen["tcp"] == seen["udp"] == seen["unix_datagram"] == errno.errorcode[errno.EOPNOTSUPP]
    assert seen["unix_connect"] == "EPERM"
    # What a notebook needs still works.
    assert seen["socketpair"] == seen["subprocess"] == seen["fork"] == "ok"
    assert seen["write_home"] == seen["write_tmpdir"] == "ok"
    assert seen["connection_file"] == seen["socket_in_ipc"] == "ok"
    # Nothing outside the interpreter's files and its own folders; in its IPC folder, sockets
    # only (no tree of folders or files for the clean-up to choke on).
    assert seen["read_system_file"] in ("EACCES", "ENOENT")
    assert seen["read_course"] in ("EACCES", "ENOENT")
    assert seen["list_root"] == "EACCES"
    assert seen["write_tmp"] in ("EACCES", "EROFS", "ENOENT")
    assert seen["mkdir_ipc"] == seen["file_in_ipc"] == "EACCES"
    # No change to any file's metadata, which Landlock does not govern: as uid 0 (the landlock
    # sandbox where no other uid can run the interpreter) it would reach every root-owned file.
    # The calls seem to succeed (IPython's shutil.copy needs chmod to) and change nothing.
    assert seen["metadata"] == {"mode": False, "times": False, "xattr": False}
    # No signal outside itself (bubblewrap: the grader is not even visible).
    assert seen["signal_grader"] in ("EPERM", "ESRCH")


MOUNTS = """
import json
mounts = {}
with open("/proc/self/mountinfo") as fh:
    for line in fh:
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
print(json.dumps(mounts))
"""


@pytest.mark.parametrize("mode", ["bwrap", "fork"])
def test_no_mount_of_a_kernel_honours_set_user_id_or_devices_but_its_own(mode, private_tmp):
    # A set-user-ID file or a device node on any mount (the writable IPC folder included) would
    # take effect; bubblewrap binds everything nosuid, and nodev but for /dev's devices.
    mounts = _confined_run(mode, MOUNTS)
    assert any(point.endswith("/kernel") or "/ipc-" in point for point in mounts), mounts
    for point, options in mounts.items():
        assert "nosuid" in options, (point, options)
        if not point.startswith("/dev/"):
            assert "nodev" in options, (point, options)


def test_unconfined_the_same_probe_reaches_everything(private_tmp):
    """The control: every call the test above sees refused works without the layers."""
    seen = _confined_run("none", PROBE)
    assert seen["keyctl"] == "ok"
    assert seen["unshare"] == "ok"
    assert seen["tcp"] == seen["udp"] == seen["unix_connect"] == "ok"
    assert seen["read_system_file"] == seen["read_course"] == seen["list_root"] == "ok"
    assert seen["mkdir_ipc"] == seen["file_in_ipc"] == "ok"
    assert seen["metadata"]["mode"] and seen["metadata"]["times"]


KEYRING_WRITER = """
import ctypes, errno, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ctypes.set_errno(0)
made = libc.syscall(ctypes.c_long({add_key}), b"user", b"grader-shared-secret", b"42",
                    ctypes.c_long(2), ctypes.c_long(-3))  # the session keyring
WROTE = made >= 0
ADD_KEY_EPERM = made < 0 and ctypes.get_errno() == errno.EPERM
time.sleep(4)  # the neighbour looks meanwhile
"""
KEYRING_READER = """
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
FOUND = False
for _ in range(40):
    for ring in (-3, -4, -5):  # session, user, user-session keyrings
        if libc.syscall(ctypes.c_long({request_key}), b"user", b"grader-shared-secret", None,
                        ctypes.c_long(ring)) >= 0:
            FOUND = True
    if FOUND:
        break
    time.sleep(0.2)
"""


@confining
def test_two_kernels_graded_at_once_share_no_key(spec, tmp_path, private_tmp, mode):
    numbers = syscall_numbers()
    writer = submission(tmp_path, "writer", cells_before=[KEYRING_WRITER.format(**numbers)],
                        bodies={"sigmoid_prime": _conditional("ADD_KEY_EPERM", "sigmoid_prime"),
                                "delta2": _conditional("WROTE", "delta2")})
    reader = submission(tmp_path, "reader", cells_before=[KEYRING_READER.format(**numbers)],
                        bodies={"delta1": _conditional("FOUND", "delta1")})
    written, read = _grade_together([writer, reader], spec, mode)
    assert written.sandbox == read.sandbox == CONFINING[mode]
    # Both attacks ran to their end: a cell that crashed would also earn nothing.
    assert written.cells == read.cells == []
    assert _stolen(written, ["sigmoid_prime"]) == ["sigmoid_prime"]  # keyctl said EPERM
    assert _stolen(written, ["delta2"]) == []  # no key was written
    assert _stolen(read, ["delta1"]) == []  # nor read by the neighbour
    # Nothing outlives grading in the keyrings this process (the grader) can see.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    for ring in (-3, -4, -5):
        assert libc.syscall(ctypes.c_long(numbers["request_key"]), b"user",
                            b"grader-shared-secret", None, ctypes.c_long(ring)) < 0


# --- one submission never reaches another's ---------------------------------------------------

NEIGHBOUR = """
import glob, os, socket, time
from ipykernel.connect import get_connection_file
own = os.path.realpath(get_connection_file())
def neighbours():
    found = set(glob.glob("/tmp/grader-*/run-*/ipc-*/kernel.json"))
    for pid in os.listdir("/proc"):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        found |= {a.decode() for a in args if a.endswith(b"kernel.json")}
    return {os.path.realpath(f) for f in found} - {own}
found = set()
deadline = time.time() + 12
while not found and time.time() < deadline:
    found = neighbours()
    time.sleep(0.2)
FOUND = bool(found)
READ_CONNECTION = WROTE_CONNECTION = WROTE_COPY = REACHED_KERNEL = False
for connection in found:
    ipc = os.path.dirname(connection)
    work = os.path.join(os.path.dirname(ipc), "work")
    try:
        READ_CONNECTION |= "key" in open(connection).read()
    except OSError:
        pass
    try:
        with open(connection, "w") as fh:
            fh.write("{}")
        WROTE_CONNECTION = True
    except OSError:
        pass
    for copy in [os.path.join(work, "victim.ipynb"), *glob.glob(work + "/*")]:
        try:
            with open(copy, "w") as fh:
                fh.write("vandalised")
            WROTE_COPY = True
        except OSError:
            pass
    for sock in glob.glob(ipc + "/kernel-*") + [os.path.join(ipc, f"kernel-{i}")
                                                  for i in range(1, 6)]:
        try:
            socket.socket(socket.AF_UNIX).connect(sock)
            REACHED_KERNEL = True
        except OSError:
            pass
"""
ATTACKS = {"sigmoid_prime": "READ_CONNECTION", "delta2": "WROTE_CONNECTION",
           "delta1": "WROTE_COPY", "update": "REACHED_KERNEL"}


def _neighbours(folder: Path) -> list[Path]:
    attacker = submission(folder, "attacker", cells_before=[NEIGHBOUR], bodies={
        f: _conditional(flag, f) for f, flag in ATTACKS.items()})
    # The victim stays in its cells long enough to be looked for.
    victim = submission(folder, "victim", cells_before=["import time\ntime.sleep(6)"])
    return [attacker, victim]


@confining
def test_one_submission_never_reaches_anothers_files_or_kernel(spec, tmp_path, private_tmp,
                                                              mode):
    attacker, victim = _grade_together(_neighbours(tmp_path), spec, mode)
    assert attacker.sandbox == victim.sandbox == CONFINING[mode]
    # The attack ran to its end: a cell that crashed would also earn nothing.
    assert attacker.cells == []
    assert _stolen(attacker, list(ATTACKS)) == []
    assert victim.cells == []
    assert victim.score == victim.max_score


def test_without_a_sandbox_a_submission_reaches_its_neighbour(spec, tmp_path, private_tmp):
    """The control: the same pair, unconfined, where the attack works."""
    attacker, _victim = _grade_together(_neighbours(tmp_path), spec, "none")
    assert set(_stolen(attacker, list(ATTACKS))) >= {"sigmoid_prime", "delta2", "delta1"}


# --- nothing a kernel leaves breaks the clean-up or a later run -------------------------------

def _litter(folder: Path, depth: int = 3000, files: int = 100_000) -> None:
    """What a kernel can leave in a folder it may write."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):  # deeper than any path may be long
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    many = folder / "many"
    many.mkdir()
    for i in range(files):
        (many / str(i)).touch()
    (folder / "new\nline").mkdir()
    (folder / "new\nline" / "x\ny").write_text("x")
    (folder / "out").symlink_to("/")
    (folder / "etc-link").symlink_to("/etc")
    os.mkfifo(folder / "fifo")
    locked = folder / "locked"
    locked.mkdir()
    (locked / "inside").write_text("x")
    locked.chmod(0)
    (folder / "readonly").mkdir()
    (folder / "readonly" / "x").write_text("x")
    (folder / "readonly").chmod(0o500)


def test_remove_tree_survives_what_a_kernel_can_leave(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    _litter(target)
    assert remove_tree(target) == []
    assert not target.exists()
    assert Path("/etc/passwd").exists() and Path("/").is_dir()  # no link was followed


LITTER = """
import os
from ipykernel.connect import get_connection_file
def litter(folder):
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(3000):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(fd)
        os.makedirs(os.path.join(folder, "many"))
        for i in range(20000):
            open(os.path.join(folder, "many", str(i)), "w").close()
        os.mkdir(os.path.join(folder, "new\\nline"))
        os.symlink("/", os.path.join(folder, "out"))
        os.mkfifo(os.path.join(folder, "fifo"))
        os.mkdir(os.path.join(folder, "locked"))
        os.chmod(os.path.join(folder, "locked"), 0)
        return True
    except OSError:
        return False
LITTERED = [litter(f) for f in (os.getcwd(), os.environ["TMPDIR"], os.path.expanduser("~"),
                               os.path.dirname(get_connection_file()))]
"""


@confining
def test_thousands_of_nested_folders_break_neither_the_clean_up_nor_the_next_run(
        spec, tmp_path, private_tmp, mode):
    litter = submission(tmp_path, "litter", cells_before=[LITTER])
    report, = _grade_together([litter], spec, mode, cell_timeout=120.0)
    assert report.cells == [] and report.score == report.max_score
    assert list(private_tmp.iterdir()) == []  # everything went with the kernel's folders
    honest, = _grade_together([submission(tmp_path, "honest")], spec, mode)
    assert honest.score == honest.max_score
    assert list(private_tmp.iterdir()) == []


def _dead_run(base: Path) -> Path:
    """The folder of a run that was killed: its lock is free, and a kernel littered it."""
    folder = base / processes.leftover_name(os.urandom(8).hex())
    (folder / "run-x" / "work").mkdir(parents=True)
    (folder / processes.LOCK).touch()
    _litter(folder / "run-x" / "work", files=1000)
    return folder


def test_a_sweep_removes_a_killed_runs_folder_and_never_a_live_ones(private_tmp):
    dead = _dead_run(private_tmp)
    # A live run in another process, which could be in another PID namespace: only its lock
    # says that it lives.
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys, tempfile; tempfile.tempdir = sys.argv[1]\n"
         "from grader.run.processes import scratch_dir\nprint(scratch_dir('run'), flush=True)\n"
         "sys.stdin.read()", str(private_tmp)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        scratch = Path(live.stdout.readline().strip())
        assert scratch.is_dir()
        assert sweep_leftovers() == []
        assert not dead.exists()
        assert scratch.is_dir()  # alive: untouched
    finally:
        live.stdin.close()
        live.wait()
    # Killed or gone, its lock is free: the next sweep takes it.
    assert sweep_leftovers() == []
    assert list(private_tmp.iterdir()) == []


def test_a_folder_that_would_not_go_is_a_warning_not_a_failed_run(
        spec, tmp_path, private_tmp, monkeypatch, capsys):
    dead = _dead_run(private_tmp)
    monkeypatch.setattr(processes, "remove_tree", lambda path: [f"{path}: Device or resource busy"]
                        if path == dead else remove_tree(path))
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "honest")
    assert main(["grade", str(source), "--out", str(tmp_path / "out"), "--assignment",
                 "derivative_calculation", "-q"]) == 0
    assert "warning: cleaning up after an earlier run" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "honest.json").read_text())["score"] == 22


def test_a_lock_is_never_shown_free_while_its_run_lives(private_tmp):
    folder = scratch_dir("run")
    try:
        fd = os.open(folder.parent / processes.LOCK, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        assert sweep_scratch(lambda token: []) == []
        assert folder.is_dir()
    finally:
        remove_scratch(folder)
    assert list(private_tmp.iterdir()) == []


def test_what_would_not_go_at_the_end_of_a_run_is_swept_by_the_next(private_tmp, monkeypatch):
    folder = scratch_dir("run")
    (folder / "stuck").write_text("x")
    with monkeypatch.context() as patch, pytest.warns(RuntimeWarning, match="could not remove"):
        patch.setattr(processes, "remove_tree", lambda path: [f"{path}: Device or resource busy"])
        remove_scratch(folder)
    run = folder.parent
    assert (run / processes.LOCK).exists()  # left for a sweep, which takes it now that it is free
    assert sweep_leftovers() == []
    assert not run.exists()


# --- what the kernels can read must hold nothing of the course --------------------------------

@pytest.fixture
def course_in_the_prefix() -> Iterator[Path]:
    """A copy of the course inside the interpreter's prefix, which every kernel may read."""
    course = Path(tempfile.mkdtemp(prefix="course-", dir=sys.prefix))
    for folder in ("assignments", "solutions"):
        shutil.copytree(ROOT / folder, course / folder)
    yield course
    shutil.rmtree(course)


def test_a_course_the_kernels_could_read_is_refused_before_any_kernel_starts(
        tmp_path, course_in_the_prefix, capsys):
    path = submission(tmp_path, "student")
    assert main(["check", str(path), "--course", str(course_in_the_prefix)]) == 2
    err = capsys.readouterr().err
    assert "lets every kernel read" in err and str(Path(sys.prefix).resolve()) in err
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path), "--out", str(out), "--course",
                 str(course_in_the_prefix), "--assignment", "derivative_calculation"]) == 2
    assert "lets every kernel read" in capsys.readouterr().err
    assert not list(out.glob("*.json"))


def test_an_out_folder_or_gradebook_the_kernels_could_read_is_refused(tmp_path, capsys):
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "student")
    out = Path(tempfile.mkdtemp(prefix="out-", dir=sys.prefix))
    try:
        assert main(["grade", str(source), "--out", str(out), "--assignment",
                     "derivative_calculation"]) == 2
        assert str(out) in capsys.readouterr().err
        assert not list(out.glob("*.json"))
        assert main(["grade", str(source), "--out", str(tmp_path / "out"), "--assignment",
                     "derivative_calculation", "--gradebook", str(out / "book.sqlite")]) == 2
        assert "book.sqlite" in capsys.readouterr().err
    finally:
        shutil.rmtree(out)


def test_the_spec_and_answer_key_of_this_checkout_stay_hidden():
    spec = find_spec("derivative_calculation")
    for mode in CONFINING:
        box = choose_sandbox(REQUEST[mode][0], kernel_start=REQUEST[mode][1])
        box.check_hidden([spec.source, spec.reference_path])
        assert not any(Path(ROOT).resolve() == p or p in Path(ROOT).resolve().parents
                       for p in box.readable())


# --- a fair CPU share for each kernel ---------------------------------------------------------

HOG = """
import subprocess, time
for _ in range(48):
    subprocess.Popen(["setsid", "sh", "-c", "while :; do :; done"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(8)
"""
# About a CPU-second of work, after the hog has started; the functions use its result, so a
# cell stopped by its timeout costs points.
HONEST_WORK = ["import time\ntime.sleep(2)", "total = sum(i * i for i in range(12_000_000))"]


def _hog_and_honest(folder: Path) -> None:
    submission(folder, "hog", cells_before=[HOG])
    submission(folder, "honest", cells_before=HONEST_WORK, bodies={
        "sigmoid_prime": "assert total > 0\n" + CORRECT["sigmoid_prime"]})


def _cpu_cgroups() -> bool:
    return cgroups.cpu_shares()


@pytest.mark.skipif(not _cpu_cgroups(), reason="no cpu cgroup can be made here (needs root and "
                    "the cpu controller); the next test covers that case")
def test_48_busy_processes_cannot_push_a_neighbour_past_its_timeout(tmp_path):
    source, out = tmp_path / "class", tmp_path / "out"
    source.mkdir()
    _hog_and_honest(source)
    done = subprocess.run([GRADER, "grade", str(source), "--out", str(out), "--assignment",
                           "derivative_calculation", "--jobs", "2", "--cell-timeout", "10"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    honest = json.loads((out / "honest.json").read_text())
    assert honest["cells"] == [] and honest["score"] == honest["max_score"]
    assert "bwrap+landlock+seccomp (2)" in done.stdout  # the class summary names the layers


def test_without_a_cpu_controller_what_timed_out_beside_a_neighbour_is_graded_again_alone(
        tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "hierarchies", dict)
    cgroups.cpu_shares.cache_clear()
    try:
        source, out = tmp_path / "class", tmp_path / "out"
        source.mkdir()
        _hog_and_honest(source)
        spec = find_spec("derivative_calculation")
        limits = limits_for(spec, 10.0, 2.0)
        assert grade_class(source, out, spec, limits, jobs=2) == 0
    finally:
        cgroups.cpu_shares.cache_clear()
    honest = json.loads((out / "honest.json").read_text())
    assert honest["cells"] == [] and honest["score"] == honest["max_score"]


def test_a_submission_that_cannot_be_copied_leaves_no_folder_and_no_lock(private_tmp, spec):
    nb = nbformat.read(ROOT / "assignments" / "derivative_calculation.ipynb", as_version=4)
    limits = limits_for(spec)
    with pytest.raises(FileNotFoundError):
        asyncio.run(observe(nb, [], limits, choose_sandbox("none").factory(limits),
                            submission=private_tmp / "gone.ipynb"))
    # No run of this test's temp folder stays open (a fork server of an earlier test may keep
    # one open in another).
    assert (os.getpid(), private_tmp) not in processes._runs
    assert [p.name for p in private_tmp.iterdir()] == []


def test_a_kernels_leftovers_are_killed_off_the_event_loop(monkeypatch):
    threads = []
    monkeypatch.setattr(sandbox, "kill_processes",
                        lambda **_: threads.append(threading.current_thread()) or 0)
    asyncio.run(sandbox.ConfinedKernelManager(marker="m")._release())
    assert threads and threads[0] is not threading.main_thread()
