"""The grading queue: a bounded number of workers on the server's own event loop, each taking
the next waiting submission from the store and grading it with the engine of `grader grade`,
in the same sandbox, which hides the course, the uploads and the records from every kernel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__
from grader.classrun.batch import _ran_out_of_time as ran_out_of_time
from grader.classrun.gradebook import Gradebook, GradingKey
from grader.classrun.keys import grader_build, grading_settings, spec_hash, student_seed
from grader.course import secret_paths
from grader.grade import grade_notebook, limits_for
from grader.judge.reference import reference_namespace
from grader.report import Report
from grader.run.pool import KernelPool
from grader.run.sandbox import choose_sandbox, sweep_leftovers
from grader.run.session import KernelManagerFactory
from grader.service.config import ServerConfig
from grader.service.store import Store, Submission
from grader.settings import Limits
from grader.spec import AssignmentSpec

if TYPE_CHECKING:
    from grader.classrun.cluster import Cluster

log = logging.getLogger("grader.serve")
# A failure of the grader itself (a kernel that would not start on a loaded machine) is tried
# again after a pause, this many times in all, before the student gets a report saying so.
ATTEMPTS = 3
RETRY_PAUSE_S = 5.0


class GradingQueue:
    """Grades what the store holds as queued, `config.kernels` submissions at once, or as many
    as the cluster's kernel slots with `config.cluster`."""

    def __init__(self, config: ServerConfig, specs: dict[str, AssignmentSpec], data: Path,
                 store: Store, book: Gradebook) -> None:
        self.config, self.specs, self.data, self.store, self.book = (
            config, specs, data, store, book)
        hidden: list[Path] = [data]
        for spec in specs.values():
            # A server grades against the answer key: a course without it (or with a broken
            # one) would fail or half-grade every student, so it stops before serving.
            reference_namespace(spec)
            hidden += secret_paths(spec)
        self.limits: dict[str, Limits] = {
            name: limits_for(spec, config.cell_timeout, config.call_timeout,
                             sandbox=config.sandbox) for name, spec in specs.items()}
        self._factories: dict[str, KernelManagerFactory] = {}
        self._clusters: dict[str, Cluster] = {}
        self._closing = contextlib.ExitStack()
        if config.cluster is not None:
            self.sandbox, self.kernels = self._open_clusters(config.cluster, hidden)
            self._shared = False
        else:
            # Chosen once, before the first upload is taken: a server that cannot confine
            # student code stops at start (SandboxUnavailable), never grades unconfined in
            # silence.
            box = choose_sandbox(config.sandbox, hide=hidden)
            self.sandbox, self.kernels = box.name, config.kernels
            # As in a class run: without a CPU share per kernel, a neighbour can push a
            # notebook past its timeouts, so what timed out while sharing is graded again,
            # alone.
            self._shared = not box.fair_shares and config.kernels > 1
            self._factories = {name: box.factory(limits) for name, limits in self.limits.items()}
        self._slots = asyncio.Semaphore(self.kernels)
        self._alone = asyncio.Lock()
        self._spec_keys = {name: spec_hash(spec) for name, spec in specs.items()}
        self._failures: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Kernels kept started for each assignment, so that a student's feedback waits on the
        # grading, not on an interpreter starting; each serves one submission, then goes.
        self._pools: dict[str, KernelPool] = {}
        self._pools_open = contextlib.AsyncExitStack()

    def _open_clusters(self, address: str, hidden: list[Path]) -> tuple[str, int]:
        """Install each assignment's course on the cluster at `address` (a `local:N` one is
        started once, for every assignment); the workers' sandbox and their kernel slots.
        Raises ClusterError (or UsageError) before anything is served when a worker cannot
        grade safely or the cluster cannot be reached."""
        from grader.classrun.cluster import Cluster

        # Dask's news of every client and worker that comes and goes would drown the server's
        # log; its warnings and errors stay.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        with contextlib.ExitStack() as stack:
            for name, spec in self.specs.items():
                # Each assignment a client of its own, all on one cluster: the first one
                # starts a local cluster, the others join it.
                cluster = stack.enter_context(Cluster.open(address, spec, self.limits[name],
                                                           hide=hidden))
                address = cluster.client.scheduler.address
                self._clusters[name] = cluster
                log.info("%s: the course is on the %d worker(s) of the cluster at %s", name,
                         len(cluster.client.scheduler_info()["workers"]), address)
            first = next(iter(self._clusters.values()))
            self._closing = stack.pop_all()
        for cluster in self._clusters.values():
            for warning in cluster.warnings:
                log.warning("%s", warning)
        if "kernels" in self.config.model_fields_set:
            log.warning("kernels = %d does not apply with a cluster: its workers' KERNELS "
                        "slots decide", self.config.kernels)
        log.info("grading on the Dask cluster at %s: %d kernel slot(s), sandbox %s",
                 self.config.cluster, first.slots, first.sandbox)
        return first.sandbox, first.slots

    def close(self) -> None:
        """Disconnect from the cluster, removing the course from its workers (a local one
        stops)."""
        self._closing.close()

    def upload_path(self, submission: Submission) -> Path:
        """Where a submission's notebook lies."""
        return self.data / "uploads" / submission.folder / submission.filename

    def wake(self) -> None:
        """Tell idle workers that something was queued."""
        self._wake.set()

    async def start(self) -> None:
        """Queue again what a stopped server was grading, start kernels ahead, then start the
        workers."""
        for warning in sweep_leftovers():
            log.warning("cleaning up after an earlier run: %s", warning)
        for name, factory in self._factories.items():
            self._pools[name] = await self._pools_open.enter_async_context(
                KernelPool(self.limits[name], factory, size=self.kernels))
        again = self.store.requeue_running()
        if again:
            log.warning("%d submission(s) being graded when the server stopped: queued again",
                        again)
        self._tasks = [asyncio.create_task(self._worker(), name=f"grader-{i}")
                       for i in range(self.kernels)]

    async def stop(self) -> None:
        """Stop the workers; what they were grading stays `running`, queued again at start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Kernels started ahead are shut down and their folders removed.
        await self._pools_open.aclose()
        self._pools.clear()

    async def grade(self, path: Path, spec: AssignmentSpec, seed: int) -> Report:
        """The one place a notebook is graded: every submission and regrade comes here."""
        cluster = self._clusters.get(spec.name)
        if cluster is not None:
            from grader.classrun.cluster import ClusterError

            # The notebook's bytes travel with the task; the call blocks on the cluster.
            report = await asyncio.to_thread(cluster.grade, path.read_bytes(), path.name, seed)
            if (report.seed, report.assignment, report.submission) != (seed, spec.name,
                                                                       path.name):
                raise ClusterError("a worker sent back the report of another submission")
            return report
        return await grade_notebook(path, spec, seed, self.limits[spec.name],
                                    km_factory=self._factories[spec.name],
                                    sandbox=self.sandbox, kernels=self._pools.get(spec.name))

    async def _grade_alone(self, path: Path, spec: AssignmentSpec, seed: int) -> Report:
        """Grade with every kernel slot held: nothing else runs beside it."""
        async with self._alone:
            for _ in range(self.kernels):
                await self._slots.acquire()
        try:
            return await self.grade(path, spec, seed)
        finally:
            for _ in range(self.kernels):
                self._slots.release()

    async def _worker(self) -> None:
        while True:
            submission = self.store.claim()
            if submission is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # The timeout is a safety net: a wake-up is never needed for correctness.
                    await asyncio.wait_for(self._wake.wait(), 5)
                continue
            try:
                await self._grade_one(submission)
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk, say: left running, queued again at the next start
                log.exception("could not record the report of submission %d", submission.id)
                await asyncio.sleep(1)

    async def _grade_one(self, submission: Submission) -> None:
        spec = self.specs.get(submission.assignment)
        if spec is None:
            # Queued before course.toml stopped serving its assignment: it still ends with a
            # report, which says so; serving the assignment again and a regrade grade it.
            self.store.finish(submission.id, Report(
                assignment=submission.assignment, submission=submission.filename,
                status="invalid", score=0, max_score=0, seed=0, grader_version=__version__,
                duration_s=0, reason="the course no longer serves this assignment; your "
                "instructor can grade it again"))
            return
        seed = student_seed(spec, submission.student, self.book.secret)
        started = time.monotonic()
        try:
            async with self._slots:
                report = await self.grade(self.upload_path(submission), spec, seed)
            if self._shared and ran_out_of_time(report):
                report = await self._grade_alone(self.upload_path(submission), spec, seed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a kernel that cannot start: no verdict on the student
            failures = self._failures[submission.id] = self._failures.get(submission.id, 0) + 1
            log.exception("grading submission %d failed (attempt %d of %d)", submission.id,
                          failures, ATTEMPTS)
            if failures < ATTEMPTS:
                # Still `running` during the pause, so that no other worker takes it at once.
                await asyncio.sleep(RETRY_PAUSE_S)
                self.store.requeue(submission.id)
                return
            report = Report(assignment=spec.name, submission=submission.filename,
                            status="invalid", reason=f"the grader failed: "
                            f"{type(exc).__name__}: {exc}; your instructor can grade it again",
                            score=0, max_score=spec.max_score, seed=seed,
                            grader_version=__version__, duration_s=time.monotonic() - started,
                            sandbox=self.sandbox)
        self._failures.pop(submission.id, None)
        if not self.store.finish(submission.id, report):
            return
        policy = self.config.assignments[spec.name]
        if report.status != "graded" and not submission.regrade:
            self.store.refund_token(spec.name, submission.student, policy.submissions)
        self._record_counting(spec, submission.student)
        log.info("submission %d (%s, %s): %s %g/%g", submission.id, spec.name,
                 submission.student, report.status, report.score, report.max_score)

    def _record_counting(self, spec: AssignmentSpec, student: str) -> None:
        """Keep the gradebook's row of the student, the one the class run keeps, on the
        submission that counts: their latest graded one."""
        counting = counting_submission(self.store.history(spec.name, student))
        report = counting.report() if counting else None
        if counting is None or report is None:
            return
        key = GradingKey(counting.content_hash, grader_build(), self._spec_keys[spec.name],
                         report.seed, grading_settings(self.limits[spec.name], self.sandbox))
        self.book.record(student, key, report, counting.started_at or counting.submitted_at)


def counting_submission(history: list[Submission]) -> Submission | None:
    """The submission whose score counts: the latest graded one (history is newest first)."""
    return next((s for s in history if s.status == "graded"), None)
