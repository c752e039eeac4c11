"""Grade on a Dask cluster: the course goes to each worker once, a submission's bytes travel with
its task, and its report comes back as JSON text, validated on the coordinator.

Workers share no filesystem with the coordinator. A worker plugin (`CoursePlugin`) writes the
course (spec, reference notebook, handout) into the worker's private folder and chooses the
sandbox there, hiding that folder from the kernels; a worker whose sandbox cannot hide it grades
nothing, and a run does not start while such a worker is connected. Each task asks for one unit
of the workers' KERNELS resource, so a worker never runs more kernels than it declared
(`dask worker ... --resources KERNELS=2`).

Keys and seeds are computed on the coordinator exactly as for a local run
(`grader.classrun.batch`); every task carries the grader build and settings they were computed
under, and a worker whose own differ refuses the task. `ClusterRun` commits each report as it
arrives and releases its task at once, so a task that Dask runs twice (its worker lost) still
gives one report, and a re-run grades nothing the gradebook holds.

`Cluster.open(...).grade(...)` grades one notebook's bytes on the cluster and returns its Report:
the entry point for a service that sends its grading jobs to the same cluster.

A Dask scheduler runs code sent by any client that connects to it: run it with TLS or on a
private network. `local:N` listens on the loopback interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from grader.classrun.batch import grader_failure, not_one_notebook
from grader.classrun.gradebook import GradingKey, utc_now
from grader.classrun.keys import grader_build, grading_settings, spec_hash
from grader.classrun.sources import Submission
from grader.errors import GraderError, UsageError
from grader.grade import grade_notebook
from grader.judge.reference import reference_namespace
from grader.report import Report
from grader.run.sandbox import choose_sandbox, sweep_leftovers
from grader.run.session import KernelManagerFactory
from grader.settings import Limits
from grader.spec import AssignmentSpec, load_spec
from grader.wire import safe_text

try:
    from distributed import Client, Future, LocalCluster, get_worker
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.security import Security
except ImportError:  # an optional dependency: say which extra brings it
    raise UsageError("grading on a cluster needs Dask's distributed package: "
                     "pip install 'backprop-grader[dask]'") from None

# The worker resource a task takes one unit of: one sandboxed kernel at a time.
RESOURCE = "KERNELS"
_CONNECT_TIMEOUT_S = 30.0
# How long a run waits for a first worker to join a scheduler that has none.
_WORKERS_TIMEOUT_S = 60.0


class ClusterError(GraderError):
    """A cluster that cannot be reached, or whose workers cannot grade this course safely."""


@dataclass(frozen=True)
class CourseFiles:
    """The course files a worker needs, by path relative to their common folder."""

    spec_file: str
    files: dict[str, bytes]

    @classmethod
    def of(cls, spec: AssignmentSpec) -> CourseFiles:
        """The spec file, the reference notebook and the handout (when there is one) of `spec`."""
        paths = [spec.source.resolve(), spec.reference_path]
        if spec.notebook_path.is_file():
            paths.append(spec.notebook_path)
        root = Path(os.path.commonpath([p.parent for p in paths]))
        try:
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}
        except OSError as exc:
            raise ClusterError(f"cannot read the course: {exc}") from None
        return cls(spec.source.resolve().relative_to(root).as_posix(), files)

    def install(self, folder: Path) -> AssignmentSpec:
        """Write the files under `folder` (which must not exist) and load the spec from there."""
        for name, data in self.files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ClusterError(f"a course file outside the course: {name}")
            path = folder.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return load_spec(folder.joinpath(*PurePosixPath(self.spec_file).parts))


class WorkerState(BaseModel):
    """What a worker tells the coordinator about the course it installed."""

    model_config = ConfigDict(extra="forbid")

    sandbox: str | None
    build: str
    settings: str | None
    spec_hash: str | None
    error: str | None
    warnings: list[str]


class Outcome(BaseModel):
    """What a grading task sends back: the report, or why the worker could not grade."""

    model_config = ConfigDict(extra="forbid")

    worker: str
    report: Report | None = None
    failure: str | None = None


@dataclass
class _Installed:
    """The course as a worker grades it."""

    spec: AssignmentSpec
    limits: Limits
    sandbox: str
    factory: KernelManagerFactory
    submissions: Path


class CoursePlugin(WorkerPlugin):
    """Install the course in a worker's private folder and choose the sandbox that hides it.

    `setup` never raises: a worker whose plugin fails to set up would not start. What went
    wrong is kept, told to the coordinator (`describe`) and refuses every task instead.
    """

    def __init__(self, course: CourseFiles, limits: Limits, hide: Iterable[Path]) -> None:
        self.course = course
        self.limits_json = limits.model_dump_json()
        self.hide = [str(p) for p in hide]
        self.folder: Path | None = None
        self.installed: _Installed | None = None
        self.error: str | None = None
        self.warnings: list[str] = []

    async def setup(self, worker: Any) -> None:
        """Off the worker's event loop: choosing a sandbox starts a process."""
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="course-", dir=worker.local_directory))
            self.installed = await asyncio.to_thread(self._install,
                                                     Path(worker.local_directory))
        except Exception as exc:  # reported to the coordinator, and refuses every task
            self.error = _describe_error(exc)

    def _install(self, private: Path) -> _Installed:
        assert self.folder is not None
        limits = Limits.model_validate_json(self.limits_json)
        spec = self.course.install(self.folder / "course")
        reference_namespace(spec)  # a broken copy fails here, not once per student
        # The worker's own folder holds the course and the submissions; the coordinator's
        # paths are hidden too, for a worker that shares its machine.
        box = choose_sandbox(limits.sandbox, hide=(private, *map(Path, self.hide)),
                             kernel_start=limits.kernel_start)
        self.warnings = sweep_leftovers()
        submissions = self.folder / "submissions"
        submissions.mkdir()
        return _Installed(spec, limits, box.name, box.factory(limits), submissions)

    def teardown(self, worker: Any) -> None:
        """Remove the worker's copy of the course."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self) -> str:
        """This worker's state, as JSON text (WorkerState)."""
        done = self.installed
        return WorkerState(
            sandbox=done and done.sandbox, build=grader_build(),
            settings=done and grading_settings(done.limits, done.sandbox),
            spec_hash=done and spec_hash(done.spec), error=self.error,
            warnings=self.warnings).model_dump_json()

    def grade(self, filename: str, notebook: bytes, seed: int, build: str, settings: str
              ) -> Report:
        """The report of one notebook, graded in this worker's sandbox; refused when the worker
        cannot hide the course or grades under another build or other settings."""
        if self.installed is None:
            raise ClusterError(f"cannot grade here: {self.error or 'the course is not installed'}")
        done = self.installed
        if build != grader_build():
            raise ClusterError(f"this worker runs grader {grader_build()}, the run {build}: "
                               "install the same grader everywhere")
        if settings != grading_settings(done.limits, done.sandbox):
            raise ClusterError("this worker's sandbox or library versions differ from the "
                               f"run's: {grading_settings(done.limits, done.sandbox)}")
        if filename != Path(filename).name or filename.startswith("."):
            raise ClusterError(f"not a file name: {filename!r}")
        folder = Path(tempfile.mkdtemp(dir=done.submissions))
        try:
            path = folder / filename
            path.write_bytes(notebook)
            return asyncio.run(grade_notebook(path, done.spec, seed, done.limits,
                                              km_factory=done.factory, sandbox=done.sandbox))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _describe_error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, GraderError) else f"{type(exc).__name__}: {exc}"


def _describe(plugin: str, dask_worker: Any) -> str:
    """Run on a worker: the state of the course `plugin` installed there (WorkerState JSON)."""
    course = dask_worker.plugins.get(plugin)
    if not isinstance(course, CoursePlugin):
        return WorkerState(sandbox=None, build=grader_build(), settings=None, spec_hash=None,
                           error="the course is not installed", warnings=[]).model_dump_json()
    return course.describe()


def grade_task(plugin: str, filename: str, notebook: bytes, seed: int, build: str,
               settings: str) -> str:
    """Run on a worker: grade one notebook's bytes; the Outcome as JSON text."""
    worker = get_worker()
    try:
        course = worker.plugins.get(plugin)
        if not isinstance(course, CoursePlugin):
            raise ClusterError("the course is not installed on this worker")
        report = course.grade(filename, notebook, seed, build, settings)
    except Exception as exc:  # told to the coordinator, which names this worker
        return Outcome(worker=worker.address, failure=_describe_error(exc)).model_dump_json()
    return Outcome(worker=worker.address, report=report).model_dump_json()


def parse_cluster(text: str) -> str | int:
    """A scheduler's address (tcp://HOST:PORT, tls://...), or N for `local:N`; raises
    ValueError for anything else."""
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"local:N takes a number of workers of at least 1, not {count!r}")
        return int(count)
    if "://" not in text:
        raise ValueError(f"not a scheduler address (tcp://HOST:PORT) nor local:N: {text!r}")
    return text


class Cluster:
    """A client of a Dask cluster whose workers hold one course, ready to grade its notebooks."""

    def __init__(self, client: Client, plugin: str, spec: AssignmentSpec, limits: Limits,
                 sandbox: str, slots: int, warnings: list[str]) -> None:
        self.client = client
        self.plugin = plugin
        self.spec = spec
        self.limits = limits
        self.sandbox = sandbox
        self.slots = slots
        self.warnings = warnings
        self.build = grader_build()
        self.settings = grading_settings(limits, sandbox)

    @classmethod
    @contextlib.contextmanager
    def open(cls, address: str, spec: AssignmentSpec, limits: Limits,
             hide: Iterable[Path] = (), security: Security | None = None) -> Iterator[Cluster]:
        """Connect to `address` (or start `local:N`), install the course on every worker and
        check that each can grade it in the same sandbox; the course is removed at the end.
        `security` (TLS certificates) defaults to Dask's configuration (distributed.comm.tls).

        Raises UsageError for an address that is none, ClusterError for a cluster that cannot
        be reached or whose workers cannot all grade safely.
        """
        try:
            target = parse_cluster(address)
        except ValueError as exc:
            raise UsageError(f"--cluster: {exc}") from None
        with contextlib.ExitStack() as stack:
            if isinstance(target, int):
                # Loopback only: a scheduler runs code from whoever connects.
                # Errors only: a worker stopped at the end of a run is no news.
                local = stack.enter_context(LocalCluster(
                    n_workers=target, threads_per_worker=1, processes=True, host="127.0.0.1",
                    resources={RESOURCE: 1}, silence_logs=logging.ERROR,
                    # No dashboard; the scheduler's health and metrics pages on a free port.
                    dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}))
                target = local.scheduler_address
            try:
                client = stack.enter_context(Client(target, timeout=_CONNECT_TIMEOUT_S,
                                                    set_as_default=False, security=security))
            except (OSError, TimeoutError, RuntimeError, TypeError, ValueError) as exc:
                # Refused, unreachable, or TLS asked for on one side only.
                raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}"
                                   ) from None
            try:
                client.wait_for_workers(1, timeout=_WORKERS_TIMEOUT_S)
            except TimeoutError:
                raise ClusterError(f"no worker joined the Dask scheduler at {address} within "
                                   f"{_WORKERS_TIMEOUT_S:g} s") from None
            plugin = f"backprop-grader-course-{secrets.token_hex(8)}"
            client.register_plugin(CoursePlugin(CourseFiles.of(spec), limits, hide), name=plugin)
            stack.callback(_unregister, client, plugin)
            yield cls(client, plugin, spec, limits, *_agree(client, plugin, spec))

    def submit(self, filename: str, notebook: bytes, seed: int, key: GradingKey | None = None
               ) -> Future:
        """Queue one notebook's grading; the future's result is Outcome JSON text."""
        build, settings = (key.grader_version, key.settings) if key else (self.build,
                                                                           self.settings)
        return self.client.submit(grade_task, self.plugin, filename, notebook, seed, build,
                                  settings, resources={RESOURCE: 1}, pure=False)

    def grade(self, notebook: bytes, filename: str, seed: int) -> Report:
        """Grade one notebook's bytes on the cluster and return its report (blocks; a service
        calls it from a thread). Raises ClusterError when the cluster could not grade it."""
        future = self.submit(filename, notebook, seed)
        try:
            result = future.result()
        except Exception as exc:
            raise ClusterError(f"the cluster could not grade {filename}: "
                               f"{_task_failure(exc)}") from None
        finally:
            future.release()
        return read_report(result)


def read_report(result: object) -> Report:
    """The report a grading task sent back, validated; raises ClusterError, naming the worker,
    when the task sent back no report (JSON text is the only thing read from a worker)."""
    if not isinstance(result, str):
        raise ClusterError(f"a worker sent back {type(result).__name__}, not a report")
    try:
        outcome = Outcome.model_validate_json(result)
    except ValidationError as exc:
        raise ClusterError(f"a worker sent back a malformed report: "
                           f"{exc.errors()[0]['msg']}") from None
    if outcome.failure is not None or outcome.report is None:
        raise ClusterError(f"worker {outcome.worker}: {outcome.failure or 'no report'}")
    return outcome.report


def _unregister(client: Client, plugin: str) -> None:
    # Best effort: a worker gone meanwhile took its copy with it.
    with contextlib.suppress(Exception):
        client.unregister_worker_plugin(plugin)


def _agree(client: Client, plugin: str, spec: AssignmentSpec
           ) -> tuple[str, int, list[str]]:
    """The sandbox every worker grades in, the KERNELS slots of the cluster and the workers'
    warnings; raises ClusterError unless every worker can grade the course the same way."""
    states = {address: WorkerState.model_validate_json(text)
              for address, text in client.run(_describe, plugin).items()}
    expected = spec_hash(spec)
    problems = []
    for address, state in sorted(states.items()):
        if state.error is not None:
            problems.append(f"worker {address} cannot grade: {state.error}")
        elif state.build != grader_build():
            problems.append(f"worker {address} runs grader {state.build}, this one "
                            f"{grader_build()}: install the same grader everywhere")
        elif state.spec_hash != expected:
            problems.append(f"worker {address} holds a course that differs from this one")
    sandboxes = {s.sandbox for s in states.values()}
    if not problems and len(sandboxes) > 1:
        problems.append("the workers grade in different sandboxes (" + "; ".join(
            f"{a}: {s.sandbox}" for a, s in sorted(states.items())) + ")")
    settings = {s.settings for s in states.values()}
    if not problems and len(settings) > 1:
        problems.append("the workers run different library versions: "
                        + "; ".join(f"{a}: {s.settings}" for a, s in sorted(states.items())))
    if problems:
        raise ClusterError("; ".join(problems))
    workers = client.scheduler_info()["workers"]
    slots = sum(int(w.get("resources", {}).get(RESOURCE, 0)) for w in workers.values())
    if slots < 1:
        raise ClusterError(f"no worker offers the {RESOURCE} resource: start the workers with "
                           f"`dask worker ... --resources {RESOURCE}=2`")
    warnings = [f"worker {a}: {w}" for a, s in sorted(states.items()) for w in s.warnings]
    (sandbox,) = sandboxes
    assert sandbox is not None
    return sandbox, slots, warnings


def _task_failure(exc: BaseException) -> str:
    """A failed task in words, naming the last worker it ran on where Dask tells it."""
    worker = getattr(getattr(exc, "last_worker", None), "address", None)
    where = f" (last on worker {worker})" if worker else ""
    return f"{type(exc).__name__}: {exc}{where}"


@dataclass
class ClusterRun:
    """A class run's grading on a cluster: the Dask counterpart of batch.ClassRun."""

    cluster: Cluster
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def spec(self) -> AssignmentSpec:
        """The assignment graded."""
        return self.cluster.spec

    @property
    def limits(self) -> Limits:
        """The limits every kernel grades under."""
        return self.cluster.limits

    @property
    def sandbox(self) -> str:
        """The sandbox every worker grades in."""
        return self.cluster.sandbox

    @classmethod
    @contextlib.contextmanager
    def connect(cls, address: str, spec: AssignmentSpec, limits: Limits,
                hide: Iterable[Path] = ()) -> Iterator[ClusterRun]:
        """A run on the cluster at `address` (or `local:N`); see Cluster.open."""
        with Cluster.open(address, spec, limits, hide) as cluster:
            yield cls(cluster, warnings=list(cluster.warnings))

    def failed(self, student: str, submission: str, seed: int, reason: str,
               duration_s: float = 0.0) -> Report:
        """The report of a student the grader failed; not kept, retried by the next run."""
        report = grader_failure(self.spec, self.sandbox, submission, seed, reason, duration_s)
        self.failures.append(f"{safe_text(student)}: {report.reason}")
        return report

    async def grade_all(self, todo: list[tuple[Submission, GradingKey]],
                        done: Callable[[Submission, GradingKey, Report, str, bool], None]
                        ) -> None:
        """Grade `todo` on the cluster; `done` is called here, as each report arrives.

        At most a few tasks per kernel slot are queued at once, so that neither the scheduler
        nor this process holds every notebook of a large class.
        """
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[tuple[Future, object]] = asyncio.Queue()
        waiting: dict[str, tuple[Submission, GradingKey, str]] = {}
        pending = iter(todo)
        window = max(4 * self.cluster.slots, 16)

        def arrive(future: Future) -> None:
            # In Dask's callback thread: fetching the result may wait on the network.
            try:
                result: object = future.result()
            except BaseException as exc:
                result = exc
            with contextlib.suppress(RuntimeError):  # the run was interrupted meanwhile
                loop.call_soon_threadsafe(arrived.put_nowait, (future, result))

        def top_up() -> None:
            while len(waiting) < window and (item := next(pending, None)) is not None:
                submission, key = item
                # The time it was queued: the coordinator's clock, not a worker's.
                started_at = utc_now()
                if submission.notebook is None:
                    done(submission, key, not_one_notebook(submission, self.spec, key.seed),
                         started_at, True)
                    continue
                try:
                    notebook = submission.notebook.read_bytes()
                except OSError as exc:
                    done(submission, key, self.failed(submission.student,
                                                      submission.notebook.name, key.seed,
                                                      f"cannot read it: {exc}"),
                         started_at, False)
                    continue
                future = self.cluster.submit(submission.notebook.name, notebook, key.seed, key)
                waiting[future.key] = (submission, key, started_at)
                future.add_done_callback(arrive)

        top_up()
        while waiting:
            future, result = await arrived.get()
            entry = waiting.pop(future.key, None)
            if entry is None:  # told twice: the first one counted
                continue
            submission, key, started_at = entry
            report, keep = self._report(submission, key, result)
            done(submission, key, report, started_at, keep)
            # Committed: the result may go, so that no lost worker makes Dask compute it again.
            future.release()
            top_up()

    def _report(self, submission: Submission, key: GradingKey, result: object
                ) -> tuple[Report, bool]:
        """The report a task sent back, and whether it may be kept."""
        assert submission.notebook is not None
        name = submission.notebook.name
        if isinstance(result, BaseException):
            return self.failed(submission.student, name, key.seed,
                               f"its task failed on the cluster: {_task_failure(result)}"
                               ), False
        try:
            report = read_report(result)
        except ClusterError as exc:
            return self.failed(submission.student, name, key.seed, str(exc)), False
        if (report.seed, report.assignment, report.submission) != (key.seed, self.spec.name,
                                                                   name):
            return self.failed(submission.student, name, key.seed,
                               "a worker sent back the report of another submission"), False
        return report, True

