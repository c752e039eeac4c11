"""A real Dask cluster for tests: a `dask scheduler` and `dask worker`s, each a process of its
own in its own empty folder, none of them able to read the course the coordinator grades from."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from grader.spec import AssignmentSpec, find_spec
from tests.notebooks import ROOT

if TYPE_CHECKING:
    from distributed import Client

BIN = Path(sys.executable).parent

# Loaded by every worker process (PYTHONPATH): an audit hook that refuses to open anything in
# the coordinator's course folder and notes each attempt, so that a worker can only grade from
# the copy it was sent.
SITECUSTOMIZE = textwrap.dedent("""\
    import os
    import sys

    _FORBIDDEN = os.environ.get("TEST_FORBIDDEN_DIR")
    _LOG = os.environ.get("TEST_FORBIDDEN_LOG")

    def _refuse(event, args):
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        if args[0] is None or isinstance(args[0], int):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if path == _FORBIDDEN or path.startswith(_FORBIDDEN + os.sep):
            with open(_LOG, "a") as log:
                log.write(f"{event} {path}\\n")
            raise PermissionError(f"a worker may not read {path}")

    if _FORBIDDEN:
        sys.addaudithook(_refuse)
    """)


@dataclass
class DaskCluster:
    """A scheduler and its workers, each started as `dask ...` in a process group of its own."""

    root: Path
    course: Path
    scheduler_file: Path
    address: str
    processes: dict[str, subprocess.Popen]

    def start_worker(self, name: str, folder: Path | None = None) -> None:
        """A worker with one kernel slot, its working and local folder empty and its own."""
        folder = folder or self.root / name
        folder.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(self.root / "hook"),
               "TEST_FORBIDDEN_DIR": str(self.course),
               "TEST_FORBIDDEN_LOG": str(self.root / "forbidden.log")}
        self.processes[name] = subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(self.scheduler_file),
             "--name", name, "--nthreads", "1", "--resources", "KERNELS=1",
             "--local-directory", str(folder), "--host", "127.0.0.1", "--no-dashboard"],
            cwd=folder, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=open(self.root / f"{name}.log", "w"))  # noqa: SIM115 - the process owns it

    def client(self) -> Client:
        """A client of the scheduler (imported here: the other tests need no Dask)."""
        from distributed import Client

        return Client(scheduler_file=str(self.scheduler_file), set_as_default=False)

    def wait_for(self, names: set[str]) -> dict[str, str]:
        """Wait until exactly the workers `names` are connected; their addresses by name."""
        with self.client() as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                workers = client.scheduler_info()["workers"]
                found = {w["name"]: address for address, w in workers.items()}
                if set(found) == names:
                    return found
                time.sleep(0.2)
        raise AssertionError(f"workers {sorted(names)} did not join; logs in {self.root}")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def forbidden_reads(self) -> str:
        log = self.root / "forbidden.log"
        return log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the course that only the coordinator reads."""
    folder = tmp_path_factory.mktemp("course")
    for part in ("assignments", "solutions"):
        shutil.copytree(ROOT / part, folder / part)
    return folder


@pytest.fixture(scope="module")
def course_spec(course: Path) -> AssignmentSpec:
    return find_spec("derivative_calculation", course)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory, course: Path
                 ) -> Iterator[DaskCluster]:
    root = tmp_path_factory.mktemp("dask")
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    scheduler_file = root / "scheduler.json"
    (root / "scheduler").mkdir()
    processes = {"scheduler": subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--scheduler-file", str(scheduler_file), "--no-dashboard"],
        cwd=root / "scheduler", start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(root / "scheduler.log", "w"))}  # noqa: SIM115 - the process owns it
    cluster = DaskCluster(root, course, scheduler_file, "", processes)
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in ("w1", "w2"):
            cluster.start_worker(name)
        addresses = cluster.wait_for({"w1", "w2"})
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses.values())
        with cluster.client() as client:
            cluster.address = client.scheduler.address
            # The workers cannot read the coordinator's course: what proves they grade from
            # the copy they were sent.
            tried = client.run(open, str(course / "assignments" / "derivative_calculation.toml"),
                               on_error="return")
        assert sorted(tried) == sorted(addresses.values())
        assert all(isinstance(e, PermissionError) for e in tried.values()), tried
        (root / "forbidden.log").unlink()
        yield cluster
    finally:
        for name in [n for n in cluster.processes if n != "scheduler"] + ["scheduler"]:
            cluster.kill(name)
