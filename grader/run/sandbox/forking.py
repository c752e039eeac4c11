"""Kernels forked from a fork server (forkserver.py): the grader's side.

One server per grader process, started with the first forked kernel and ended with the process
(or by shutdown_fork_server): its stdin closed, it kills its children and exits, and killed
with the grader it sees the same end of input. Its folder, like a kernel's, lives in the run's
folder, and its command line names that folder: a later sweep kills what a killed run left.
A forked kernel is a process of the server, not of the grader, so jupyter_client reaches it
through ForkProvisioner, whose process object asks the server to signal it and learns from the
server when it ended.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from jupyter_client.provisioning import LocalProvisioner

from grader.errors import GraderError
from grader.run.processes import kernel_marker, remove_scratch, scratch_dir
from grader.run.sandbox.confinement import LAUNCHER_SOURCE, syscall_numbers

SERVER_SOURCE = (Path(__file__).parent / "forkserver.py").read_text()
_START_TIMEOUT_S = 60.0
_REPLY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


class ForkServerFailed(GraderError):
    """The fork server would not start, or would not fork a kernel."""


class ForkedProcess:
    """A kernel forked by the server, as much of subprocess.Popen as jupyter_client uses."""

    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, ident: int) -> None:
        self._server, self.ident = server, ident
        self.pid = 0  # the first process, in the grader's PID namespace
        self.error: str | None = None
        self.returncode: int | None = None
        self.forked = threading.Event()
        self.ended = threading.Event()

    def poll(self) -> int | None:
        """The exit status once the server saw the process end, else None."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end of the process; its exit status."""
        self.ended.wait(timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """End the kernel and everything it started (SIGKILL, SIGTERM); the process is seen to
        end only once all of them are gone. A forked kernel is interrupted by message, so no
        other signal is passed on."""
        if signum not in (signal.SIGKILL, signal.SIGTERM):
            raise ValueError(f"a forked kernel is interrupted by message, not by signal {signum}")
        if self.returncode is None:
            # To the first process, which kills the kernel's namespace, then waits for its end.
            self._server.signal(self.ident, signal.SIGTERM)

    def kill(self) -> None:
        """End the kernel and everything it started."""
        self.send_signal(signal.SIGTERM)

    def terminate(self) -> None:
        """The same as kill: a kernel has nothing to save."""
        self.kill()

    def _finish(self, returncode: int) -> None:
        self.returncode = returncode
        self.forked.set()
        self.ended.set()


class ForkServer:
    """The trusted process that forks kernels; its requests and answers go through pipes."""

    def __init__(self, environment: Callable[[str], list[str]]) -> None:
        numbers = syscall_numbers()
        if numbers is None:
            raise ForkServerFailed("no system call numbers for this architecture")
        self.folder = scratch_dir("forkserver")
        self.root = self.folder / "root"  # where each child mounts its filesystem's tmpfs
        self.root.mkdir()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._children: dict[int, ForkedProcess] = {}
        self.marker = kernel_marker(self.folder)
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - closed once passed on
        config = json.dumps({"pivot_root": numbers["pivot_root"], "folder": str(self.folder)})
        with log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", SERVER_SOURCE, LAUNCHER_SOURCE, config],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=self.folder,
                env=dict(item.split("=", 1) for item in environment(self.marker)),
                start_new_session=True)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin: IO[bytes] = self._process.stdin
        ready = _readline(self._process.stdout, _START_TIMEOUT_S)
        if not ready.startswith(b'{"ready"'):
            self._process.kill()
            self._process.wait()
            problem = (self.folder / "server.log").read_text(errors="replace").strip()
            remove_scratch(self.folder)
            raise ForkServerFailed("the fork server did not start: "
                                   + (problem.splitlines() or ["no message"])[-1])
        self.pid = self._process.pid
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,),
                                        name="fork-server-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        """Whether the server still answers."""
        return self._process.poll() is None and self._reader.is_alive()

    def spawn(self, request: dict[str, Any]) -> ForkedProcess:
        """Fork one kernel for `request` (forkserver.py); blocks until the server answered."""
        with self._lock:
            ident = next(self._ids)
            child = self._children[ident] = ForkedProcess(self, ident)
            try:
                self._send({**request, "op": "spawn", "id": ident, "root": str(self.root)})
            except (OSError, ValueError) as exc:  # the server is gone
                self._children.pop(ident, None)
                raise ForkServerFailed(f"the fork server stopped: {exc}") from exc
        if not child.forked.wait(_REPLY_TIMEOUT_S):
            raise ForkServerFailed("the fork server did not answer")
        if child.error is not None:
            raise ForkServerFailed(child.error)
        if child.pid == 0:
            raise ForkServerFailed("the fork server stopped")
        return child

    def signal(self, ident: int, signum: int) -> None:
        """Send `signum` to a child that has not ended."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._send({"op": "signal", "id": ident, "signal": signum})

    def _send(self, message: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(message).encode() + b"\n")
        self._stdin.flush()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
                child = self._children[message["id"]]
            except (ValueError, KeyError, TypeError):
                continue
            if "pid" in message:
                child.pid = message["pid"]
                child.forked.set()
            elif "error" in message:
                self._children.pop(child.ident, None)
                child.error = str(message["error"])
                child._finish(-1)
            elif "exit" in message:
                self._children.pop(child.ident, None)
                child._finish(int(message["exit"]))
        # The server is gone, and its children with it (they die with their parent).
        for child in list(self._children.values()):
            child._finish(-9)
        self._children.clear()

    def close(self) -> None:
        """End the server and its kernels, and remove its folder."""
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        try:
            self._process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(_STOP_TIMEOUT_S)
        remove_scratch(self.folder)


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """A line from `stream`, or b"" after `timeout` seconds or at its end."""
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0] if found else b""


_servers: dict[int, ForkServer] = {}
_servers_guard = threading.Lock()


def fork_server(environment: Callable[[str], list[str]]) -> ForkServer:
    """This process's fork server, started (again) when there is none that answers; its
    environment is `environment(marker)`."""
    with _servers_guard:
        server = _servers.get(os.getpid())
        # A server whose folder is gone (removed with a temp folder) can fork nothing.
        if server is None or not server.alive or not server.root.is_dir():
            if server is not None:
                server.close()
            server = _servers[os.getpid()] = ForkServer(environment)
        return server


def shutdown_fork_server() -> None:
    """End this process's fork server, if it has one."""
    with _servers_guard:
        server = _servers.pop(os.getpid(), None)
    if server is not None:
        server.close()


atexit.register(shutdown_fork_server)


class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Starts the kernel by asking the fork server, and reaches it through the server."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """Fork the kernel (the command is the fresh path's; the server's request replaces it)."""
        km = self.parent
        server = await asyncio.to_thread(fork_server, km.server_environment)
        self.process = await asyncio.to_thread(server.spawn, km.fork_request())
        self.pid, self.pgid = self.process.pid, None
        return self.connection_info
