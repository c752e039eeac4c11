"""Kernels forked from the fork server: nothing of one reaches the next, the server forks with
one thread and no socket, a dead or hung kernel is ended and cleaned up, the server ends with
its run (killed or not), and the kernel start is chosen, never silently weaker.

The attacks on the sandbox itself run against forked kernels in tests/test_sandbox.py and
tests/test_security.py (their `fork` mode).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.cli import main
from grader.files import remove_tree
from grader.run import sandbox
from grader.run.processes import remove_scratch, scratch_dir
from grader.run.sandbox import SandboxUnavailable, choose_sandbox, forking, sweep_leftovers
from grader.settings import Limits
from tests.notebooks import submission

GRADER = str(Path(sys.executable).parent / "grader")


@pytest.fixture
def private_tmp(monkeypatch) -> Iterator[Path]:
    """A short temp folder for this test alone (socket paths must stay short)."""
    folder = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    forking.shutdown_fork_server()  # its folder lives in this temp folder
    remove_tree(folder)


@pytest.fixture
def forked() -> sandbox.Sandbox:
    box = choose_sandbox("bwrap", kernel_start="fork")
    assert box.name == "fork+bwrap+landlock+seccomp"
    return box


class Kernel:
    """A forked kernel of its own submission folder, and a client that runs code in it."""

    def __init__(self, box: sandbox.Sandbox) -> None:
        self.runtime = scratch_dir("kernel")
        (self.runtime / "work").mkdir()
        self.km = box.factory(Limits())(self.runtime, self.runtime / "work")

    async def __aenter__(self) -> Kernel:
        await self.km.start_kernel()
        self.client = self.km.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=60)
        return self

    async def run(self, code: str) -> str:
        """Run `code`; what it printed."""
        printed: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                printed.append("\n".join(msg["content"]["traceback"]))

        await self.client.execute_interactive(code, output_hook=hook, timeout=60)
        return "".join(printed)

    async def __aexit__(self, *exc: object) -> None:
        self.client.stop_channels()
        await self.km.shutdown_kernel(now=True)
        remove_scratch(self.runtime)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


FIRST = """
import json, math, os, subprocess, sys
import numpy
for folder in (os.environ["HOME"], os.environ["TMPDIR"]):
    with open(os.path.join(folder, "left-behind"), "w") as fh:
        fh.write("secret")
os.environ["LEFT_BEHIND"] = "1"
numpy.add = lambda *a, **k: "poisoned"
math.pi = 3.0
sys.modules["planted"] = object()
sleeper = subprocess.Popen(["setsid", "sleep", "1000.314159"])
print(json.loads("[1]"), numpy.add(1, 2), math.pi, "planted" in sys.modules,
      all("left-behind" in os.listdir(os.environ[f]) for f in ("HOME", "TMPDIR")),
      os.getuid())
"""
SECOND = """
import json, math, os, signal, subprocess, sys
import numpy
print(json.dumps({
    "files": [f for f in os.listdir(os.environ["HOME"]) + os.listdir(os.environ["TMPDIR"])
              if f == "left-behind"],
    "env": "LEFT_BEHIND" in os.environ,
    "numpy_add": str(numpy.add(1, 2)),
    "pi": math.pi,
    "planted": "planted" in sys.modules,
    "pid": os.getpid(),
    "sigpipe": str(signal.getsignal(signal.SIGPIPE)),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "sleepers": subprocess.run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\\\0' ' '"],
                               capture_output=True, text=True).stdout.count("1000.314159"),
}))
"""


def test_nothing_of_one_forked_kernel_reaches_the_next(forked, private_tmp):
    # The second kernel sees only its own PID namespace (its PID 1, itself as PID 2, as under
    # bubblewrap), and none of the first kernel's files, variables, modules or processes.
    async def run() -> tuple[str, dict[str, Any], int]:
        async with Kernel(forked) as first:
            uid = first.km.kernel_uid
            did = await first.run(FIRST)
            assert _processes_of(uid), "the first kernel's processes run under its uid"
        assert not _processes_of(uid), "a process of the first kernel outlived it"
        async with Kernel(forked) as second:
            seen = json.loads((await second.run(SECOND)).strip().splitlines()[-1])
        return did, seen, uid

    did, seen, uid = asyncio.run(run())
    # The first kernel did change all of it (else the second's view would prove nothing).
    assert did.split()[:5] == ["[1]", "poisoned", "3.0", "True", "True"]
    assert int(did.split()[-1]) == uid != 0
    assert seen == {"files": [], "env": False, "numpy_add": "3", "pi": math.pi,
                    "planted": False, "pid": 2, "sigpipe": str(signal.SIG_IGN),
                    "processes": [1, 2], "sleepers": 0}


def test_the_server_forks_with_one_thread_and_no_socket(forked, private_tmp):
    async def run() -> tuple[int, list[str], list[str]]:
        async with Kernel(forked), Kernel(forked):
            server = forking.fork_server(sandbox.ForkedKernelManager.server_environment)
            threads = os.listdir(f"/proc/{server.pid}/task")
            fds = [os.readlink(f"/proc/{server.pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{server.pid}/fd")]
            return server.pid, threads, fds

    pid, threads, fds = asyncio.run(run())
    # Two kernels run, each with its threads and sockets; the server that forked them has none.
    assert threads == [str(pid)]
    assert fds and not [fd for fd in fds if fd.startswith("socket:")]
    assert all(fd.startswith("pipe:") or fd.endswith("server.log") for fd in fds), fds


def test_a_server_with_a_second_thread_refuses_to_fork(private_tmp):
    # numpy's BLAS starts a thread pool on import when allowed more than one thread.
    def threaded(marker: str) -> list[str]:
        return [*sandbox.ForkedKernelManager.server_environment(marker),
                "OPENBLAS_NUM_THREADS=4", "OMP_NUM_THREADS=4"]

    server = forking.ForkServer(threaded)
    try:
        assert len(os.listdir(f"/proc/{server.pid}/task")) > 1
        with pytest.raises(forking.ForkServerFailed, match=r"would fork with \d+ threads"):
            server.spawn({"argv": ["-c", "pass"]})
    finally:
        server.close()


def test_a_forked_kernel_that_dies_or_hangs_is_ended_and_cleaned_up(forked, private_tmp):
    async def run() -> tuple[int | None, bool, list[int]]:
        async with Kernel(forked) as dying:
            dying.client.execute("import os\nos._exit(3)")
            for _ in range(200):
                if not await dying.km.is_alive():
                    break
                await asyncio.sleep(0.05)
            status = dying.km.provisioner.process.poll()
        async with Kernel(forked) as hung:
            uid = hung.km.kernel_uid
            hung.client.execute("import signal, subprocess\n"
                                "subprocess.Popen(['setsid', 'sleep', '1000.271828'])\n"
                                "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                "while True:\n    pass")
            await asyncio.sleep(1.0)
            alive = await hung.km.is_alive()
        return status, alive, _processes_of(uid)

    status, alive, left = asyncio.run(run())
    assert status == 3
    assert alive
    assert left == []


def _server_processes(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (the fork server and what it forked)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(folder).encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def test_the_fork_server_ends_with_its_run(tmp_path, private_tmp):
    path = submission(tmp_path, "student")
    done = subprocess.run([GRADER, "check", str(path), "--kernel-start", "fork", "--json"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "TMPDIR": str(private_tmp)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sandbox"] == "fork+bwrap+landlock+seccomp"
    assert not _server_processes(private_tmp)
    assert not list(private_tmp.iterdir())


def test_a_killed_runs_fork_server_and_kernels_end_and_the_next_run_sweeps_them(
        tmp_path, private_tmp):
    source = tmp_path / "class"
    source.mkdir()
    for i in range(2):
        submission(source, f"slow{i}", cells_before=["import time\ntime.sleep(1000)"])
    run = subprocess.Popen([GRADER, "grade", str(source), "--out", str(tmp_path / "out"),
                            "--assignment", "derivative_calculation", "--kernel-start", "fork",
                            "--cell-timeout", "900", "-q"],
                           env={**os.environ, "TMPDIR": str(private_tmp)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Until the server forked a kernel for each submission (its first processes and the
        # kernels they wait for).
        for _ in range(1200):
            if len(_server_processes(private_tmp)) >= 5 or run.poll() is not None:
                break
            time.sleep(0.05)
        assert len(_server_processes(private_tmp)) >= 5, "the kernels never started"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    # The server saw its input end: it killed its kernels and left.
    for _ in range(600):
        if not _server_processes(private_tmp):
            break
        time.sleep(0.05)
    assert not _server_processes(private_tmp)
    left = list(private_tmp.iterdir())
    assert left, "a killed run leaves its folder (else the sweep below is moot)"
    assert sweep_leftovers() == []
    assert not list(private_tmp.iterdir())


def test_fork_is_chosen_only_where_it_confines_and_asking_for_it_elsewhere_fails(
        monkeypatch, tmp_path, capsys):
    assert choose_sandbox("auto").name == "fork+bwrap+landlock+seccomp"
    assert choose_sandbox("auto", kernel_start="fresh").name == "bwrap+landlock+seccomp"
    assert choose_sandbox("landlock").name == "landlock+seccomp"
    with pytest.raises(SandboxUnavailable, match="only the bwrap sandbox forks"):
        choose_sandbox("landlock", kernel_start="fork")
    with pytest.raises(SandboxUnavailable, match="bwrap sandbox only"):
        choose_sandbox("none", kernel_start="fork")
    # A forked kernel that fails its probe: auto starts kernels afresh and says so; fork stops.
    sandbox._forked.cache_clear()
    probe = sandbox._probe
    monkeypatch.setattr(sandbox, "_probe",
                        lambda box: "no mount namespace" if box.fork else probe(box))
    try:
        assert choose_sandbox("auto").name == "bwrap+landlock+seccomp"
        with pytest.raises(SandboxUnavailable, match="no mount namespace"):
            choose_sandbox("bwrap", kernel_start="fork")
        path = submission(tmp_path, "student")
        assert main(["check", str(path), "--kernel-start", "fork"]) == 2
        assert "--kernel-start fork cannot be used here" in capsys.readouterr().err
        assert main(["check", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["sandbox"] == "bwrap+landlock+seccomp"
    finally:
        sandbox._forked.cache_clear()


# Every string shaped like a connection key in the kernel's readable memory, by its digest (the
# keys themselves never enter the kernel with the code).
SCAN = """
import hashlib, re
shape = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{24}")
found = set()
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if not perms.startswith("r"):
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(start)
            data = mem.read(end - start)
        except (OSError, OverflowError, ValueError):
            continue
        found.update(hashlib.sha256(m).hexdigest() for m in shape.findall(data))
print(" ".join(sorted(found)))
"""


def test_a_forked_kernel_finds_no_connection_key_of_another_in_its_memory(forked, private_tmp):
    # A forked kernel starts as a copy of the server's memory, which it may read whole. The key
    # that signs another kernel's messages (one started ahead, one running) must not be in it:
    # each kernel reads its key from its own file, never from the server.
    async def run() -> tuple[set[str], bytes, bytes]:
        async with Kernel(forked) as first, Kernel(forked) as second:
            keys = [first.km.session.key, second.km.session.key]
            assert all(keys) and keys[0] != keys[1]
            seen = await second.run(SCAN)
            return set(seen.split()), *keys

    seen, other, own = asyncio.run(run())
    digest = {key: hashlib.sha256(key).hexdigest() for key in (other, own)}
    # Its own key it finds (so the scan reads what it should); the other kernel's, nowhere.
    assert digest[own] in seen
    assert digest[other] not in seen
