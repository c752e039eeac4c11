"""A real `grader serve` on a loopback port, and a client that uses it as a browser does."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from grader.service.store import Store

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def course_toml(**assignments: str) -> str:
    """course.toml with short limits and the given [assignments.NAME] bodies."""
    text = "kernels = 2\ncell_timeout = 20\ncall_timeout = 5\n"
    for name, body in assignments.items():
        text += f"\n[assignments.{name}]\n{body}\n"
    return text


class _PortTaken(Exception):
    """Another process bound the server's port before it did."""


class Server:
    """`grader serve` in a process of its own, started and stopped by the test."""

    def __init__(self, data: Path, config: str) -> None:
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        (data / "course.toml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def add(self, user_id: str, *, name: str | None = None, instructor: bool = False) -> str:
        """Put someone on the roster with `grader roster add`; returns their token."""
        argv = [sys.executable, "-m", "grader.cli", "roster", "--data", str(self.data), "add",
                user_id, *(["--name", name] if name else []),
                *(["--instructor"] if instructor else [])]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        return out.rsplit(": ", 1)[1].strip()

    def start(self) -> Server:
        """Start the server and wait until it answers. The port was free when chosen, but a
        process started meanwhile (a Dask worker of the server's own local cluster, say) may
        take it first: then the server starts again on another."""
        for _ in range(5):
            try:
                return self._start()
            except _PortTaken:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"no free port for the server: {self.log()}")

    def _start(self) -> Server:
        log = (self.data / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grader.cli", "serve", "--data", str(self.data),
             "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if f"('127.0.0.1', {self.port}): address already in use" in self.log():
                    raise _PortTaken
                raise RuntimeError(f"the server stopped: {self.log()}")
            try:
                httpx.get(f"{self.url}/login", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not answer: {self.log()}")

    def log(self) -> str:
        return (self.data / "server.log").read_text(errors="replace")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM; SIGKILL of its whole group with `kill`, as a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def store(self) -> Store:
        """The server's records, read beside it."""
        return Store(self.data / "server.sqlite")

    def uploads(self) -> list[Path]:
        """Every file under uploads/."""
        return sorted(p for p in (self.data / "uploads").rglob("*") if p.is_file())


class Client:
    """One person's browser: cookies kept, CSRF tokens read from the pages."""

    def __init__(self, server: Server, token: str | None = None) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.csrf = ""
        if token is not None:
            response = self.sign_in(token)
            assert response.status_code == 303, response.text

    def sign_in(self, token: str) -> httpx.Response:
        csrf = _CSRF.search(self.http.get("/login").text)
        assert csrf is not None
        response = self.http.post("/login", data={"csrf": csrf.group(1), "token": token})
        page = self.http.get("/")
        if page.status_code == 303:
            found = _CSRF.search(self.http.get(page.headers["location"]).text)
            self.csrf = found.group(1) if found else ""
        return response

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, **data: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **data})

    def upload(self, assignment: str, content: bytes, filename: str = "hw.ipynb"
               ) -> httpx.Response:
        return self.http.post(f"/assignments/{assignment}/submit", data={"csrf": self.csrf},
                              files={"notebook": (filename, content, "application/json")})

    def submit(self, assignment: str, notebook: Path, filename: str = "hw.ipynb") -> int:
        """Upload a notebook; the id of the queued submission."""
        response = self.upload(assignment, notebook.read_bytes(), filename)
        assert response.status_code == 303, response.text
        return int(response.headers["location"].rsplit("/", 1)[1])

    def wait(self, submission: int, timeout: float = 300) -> dict:
        """The submission's status once it is graded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/submissions/{submission}/status").json()
            if status["state"] == "done":
                return status
            time.sleep(0.3)
        raise AssertionError(f"submission {submission} was not graded in {timeout} s")
