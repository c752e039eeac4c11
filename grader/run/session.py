"""Run a submission in a fresh kernel and observe its functions: the imperative shell.

Student cells run through nbclient. Then the harness (harness.py) calls each student
function on the cases; its outcomes come back as JSON on a display channel keyed by a nonce
that is drawn after the student's cells have run. Everything else the kernel says is ignored.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
import numpy as np
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from pydantic import ValidationError

from grader.files import remove_scratch, scratch_dir
from grader.judge.cases import Code
from grader.report import CellProblem
from grader.wire import (
    MAX_ENTRIES,
    MAX_ITEMS,
    MAX_STAND_IN_CALLS,
    Call,
    CallMessage,
    KernelDied,
    Missing,
    Raised,
    Timeout,
    changed_arguments,
    safe_strings,
)

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
# Runs before the student's first cell. ipykernel sends one print as one iopub message, which
# the grader must decode whole before its output cap can drop it; writes cut into pieces keep
# every message small, so an accidental 50 MB print costs the grader no memory. (A notebook can
# undo this, but then it only wastes the grader's time on its own grade.)
STREAM_CHUNKS = """
def __grader_chunk_streams__(size):
    import sys
    for stream in (sys.stdout, sys.stderr):
        base = type(stream)
        write = base.write
        def chunked(self, text, write=write):
            if not isinstance(text, str) or len(text) <= size:
                return write(self, text)
            for start in range(0, len(text), size):
                write(self, text[start:start + size])
                self.flush()
            return len(text)
        # IPython wraps `stream.write` around every cell and then restores the plain method it
        # found; a property on the stream's class keeps the chunking under both.
        def get(self, chunked=chunked):
            return self.__dict__.get("_outer_write") or chunked.__get__(self)
        def put(self, value, write=write):
            plain = getattr(value, "__func__", None) is write
            self.__dict__["_outer_write"] = None if plain else value
        stream.__dict__.pop("write", None)
        stream.__class__ = type(base.__name__, (base,), {"write": property(get, put)})
__grader_chunk_streams__(1 << 12)
del __grader_chunk_streams__
"""
MIME = "application/vnd.backprop-grader.result+json"
_TIMEOUT_MARK = "GraderCellTimeout"


@dataclass(frozen=True)
class Limits:
    """Per-submission limits; the defaults suit the bundled assignments."""

    cell_timeout_s: float = 30.0
    call_timeout_s: float = 5.0
    # The time all of a notebook's cells may take together, replays after a dead kernel
    # included (starting kernels is not counted): a notebook of many slow cells must not hold
    # a kernel for an hour.
    notebook_timeout_s: float = 300.0
    output_bytes: int = 1_000_000
    startup_timeout_s: float = 60.0
    # After an interrupt, how long a kernel may take to become idle before it counts as hung.
    interrupt_grace_s: float = 3.0
    # Fresh kernels started after the first one dies or hangs; one more death ends the run.
    restarts: int = 1
    max_items: int = MAX_ITEMS
    max_text: int = 500
    # Where the kernel runs: auto, bwrap, landlock or none (grader/run/sandbox).
    sandbox: str = "auto"
    # Resource limits of the kernel process (rlimits), and the size of its private folders.
    memory_bytes: int = 2 << 30
    cpu_s: float = 300.0
    file_bytes: int = 64 << 20
    processes: int = 64
    disk_bytes: int = 128 << 20

    def __post_init__(self) -> None:
        # Zero or less would not mean "no limit": a kernel without time or memory fails in ways
        # that look like the student's fault. Only `restarts` may be 0.
        for name, value in asdict(self).items():
            if isinstance(value, str):
                continue
            may_be_zero = name == "restarts"
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0 or (value == 0 and not may_be_zero)):
                least = "at least 0" if may_be_zero else "greater than 0"
                raise ValueError(f"limit {name} must be a finite number {least}, not {value!r}")


@dataclass(frozen=True)
class CallPlan:
    """Call `function` on each argument list; the outcomes are filed under `key`.

    `stand_ins` maps the name of another function to one value per argument list: during each
    call that name answers with that value (see KernelSession.call).
    """

    key: str
    function: str
    arguments: list[list[Any]]
    stand_ins: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class Observations:
    """Everything the judge learns from the kernel: plain values and what went wrong where."""

    calls: dict[str, list[Call]] = field(default_factory=dict)
    cells: list[CellProblem] = field(default_factory=list)
    output_dropped_bytes: int = 0


KernelManagerFactory = Callable[[Path, Path], AsyncKernelManager]


class GraderKernelManager(AsyncKernelManager):
    """A kernel manager that keeps the kernel's own stdio away from the grader."""

    async def start_kernel(self, **kw: Any) -> None:
        """Start the kernel with its stdout and stderr discarded.

        Those streams are the student's to fill (os.write(2, ...) bypasses the output cap), so
        they must not reach the grader's terminal or logs.
        """
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        await super().start_kernel(**kw)


class KernelLost(Exception):
    """The kernel died or stopped answering; its state is gone.

    `calls` holds what a function call had answered before that, case by case.
    """

    def __init__(self, message: str, calls: list[Call] | None = None) -> None:
        super().__init__(message)
        self.calls = calls


@dataclass
class _OutputBudget:
    """Output text kept for one submission, across all its kernels, and what was dropped."""

    limit: int
    kept: int = 0
    dropped: int = 0

    def admit(self, content: Any) -> bool:
        """Count one output message; True when it may be kept."""
        size = _text_size(content)
        if self.kept + size > self.limit:
            self.dropped += size
            return False
        self.kept += size
        return True


# The messages whose content nbclient keeps in the notebook, as a new output or in place of an
# old one (an update of a display).
_KEPT_OUTPUT = frozenset({"stream", "display_data", "execute_result", "error",
                          "update_display_data"})


class _Client(NotebookClient):
    """nbclient with a cap on kept output and a record of how each cell ended."""

    def __init__(self, nb: nbformat.NotebookNode, km: AsyncKernelManager, limits: Limits,
                 workdir: Path, budget: _OutputBudget) -> None:
        super().__init__(
            nb,
            km=km,
            timeout_func=lambda _cell: self.cell_timeout_s,
            interrupt_on_timeout=True,
            error_on_timeout={"ename": _TIMEOUT_MARK, "evalue": "", "traceback": []},
            allow_errors=True,
            iopub_timeout=limits.interrupt_grace_s,
            raise_on_iopub_timeout=False,
            startup_timeout=limits.startup_timeout_s,
            shutdown_kernel="immediate",
            record_timing=False,
            store_widget_state=False,
            resources={"metadata": {"path": str(workdir)}},
        )
        self._budget = budget
        # Set before each cell: the cell's own limit, or less when the notebook's time runs out.
        self.cell_timeout_s = limits.cell_timeout_s
        self.idle_seen = False
        self.last_reply: dict[str, Any] | None = None
        self.on_cell_executed = self._remember_reply

    def _remember_reply(self, execute_reply: dict[str, Any] | None = None, **_: Any) -> None:
        self.last_reply = execute_reply

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        msg_type = msg["msg_type"]
        if msg_type == "status" and msg["content"].get("execution_state") == "idle":
            self.idle_seen = True
        # Charged here, once per message: nbclient hands a display that carries a display id
        # both to the update of the outputs shown under that id and to a new output.
        if msg_type in _KEPT_OUTPUT and not self._budget.admit(msg.get("content", {})):
            return None
        return super().process_message(msg, cell, cell_index)


def _text_size(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, dict):
        return sum(_text_size(v) for v in content.values())
    if isinstance(content, list):
        return sum(_text_size(v) for v in content)
    return 0


def _malformed(exc: Exception) -> KernelLost:
    """What a message the grader cannot read means: the kernel is lost.

    nbclient and jupyter_client trust the kernel's messages, and a notebook can send any it
    likes (a status without content, content that is not JSON). A fresh kernel replays the
    notebook's cells that ran, as after a death.
    """
    return KernelLost(f"the kernel sent a malformed message ({type(exc).__name__})")


def _from_request(msg: Any, msg_id: str) -> bool:
    """Whether an iopub message answers our request and has the shape the loop relies on."""
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), dict):
        return False
    parent = msg.get("parent_header")
    return (isinstance(parent, dict) and parent.get("msg_id") == msg_id
            and isinstance(msg.get("msg_type"), str))


def _literal(value: Any) -> str:
    """Source text of one argument, which the harness decodes: an int or a float, nested lists
    for an array, a dict with string keys of those, or ("code", source, constants) for a
    function the spec defines."""
    if isinstance(value, Code):
        constants = ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.constants.items())
        return f"('code', {value.source!r}, {{{constants}}})"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("dict arguments must have string keys")
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(int(value))
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("case arguments must be finite")
    return repr(float(array)) if array.ndim == 0 else repr(array.tolist())


class KernelSession:
    """One kernel: start it, run cells, call functions, and always clean up after itself."""

    def __init__(self, nb: nbformat.NotebookNode, limits: Limits,
                 km_factory: KernelManagerFactory, runtime: Path, workdir: Path) -> None:
        self._nb = nb
        self._limits = limits
        self._km_factory = km_factory
        self._runtime = runtime
        self._workdir = workdir
        self._client: _Client | None = None
        self._run: str | None = None
        # One budget for every kernel of this submission, the restarted ones included.
        self._budget = _OutputBudget(limits.output_bytes)

    async def start(self) -> None:
        km = self._km_factory(self._runtime, self._workdir)
        # The one place where text from the kernel enters the grader: every message, to nbclient
        # and to the harness's reader alike, is decoded by this session.
        unpack = km.session.unpack
        km.session.unpack = lambda data: safe_strings(unpack(data))
        client = _Client(self._nb, km, self._limits, self._workdir, self._budget)
        self._client = client
        await client.async_start_new_kernel()
        await client.async_start_new_kernel_client()
        self._run = None
        await self._execute(STREAM_CHUNKS, lambda _msg: None,
                            deadline_s=self._limits.startup_timeout_s)

    @property
    def dropped_bytes(self) -> int:
        """Output text this submission's kernels produced beyond the limit."""
        return self._budget.dropped

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.km is not None:
            with contextlib.suppress(Exception):
                await client._async_cleanup_kernel()

    @property
    def client(self) -> _Client:
        assert self._client is not None, "kernel not started"
        return self._client

    async def run_cell(self, index: int, timeout_s: float) -> CellProblem | None:
        """Execute one notebook cell, interrupting it after timeout_s; raise KernelLost when the
        kernel is gone afterwards."""
        client = self.client
        client.idle_seen = False
        client.last_reply = None
        client.cell_timeout_s = timeout_s
        try:
            await client.async_execute_cell(self._nb.cells[index], index)
        except DeadKernelError:
            raise KernelLost("it killed the kernel") from None
        except Exception as exc:
            raise _malformed(exc) from None
        reply = (client.last_reply or {}).get("content", {})
        if reply.get("ename") == _TIMEOUT_MARK:
            if not client.idle_seen or not await client.km.is_alive():
                raise KernelLost(f"it ran past {timeout_s:g} s and did not stop when interrupted")
            return CellProblem(cell=index, problem="timeout", excerpt=self.excerpt(index),
                               message=f"stopped after {timeout_s:g} s")
        if reply.get("status") == "error":
            name = str(reply.get("ename", "Error"))[:200]
            value = str(reply.get("evalue", ""))[: self._limits.max_text]
            return CellProblem(cell=index, problem="error", message=f"{name}: {value}",
                               excerpt=self.excerpt(index))
        return None

    def excerpt(self, index: int) -> str:
        """The first non-blank line of a cell, shortened to fit a report."""
        lines = [line.strip() for line in self._nb.cells[index].source.splitlines()]
        first = next((line for line in lines if line), "")
        return first if len(first) <= 60 else first[:57] + "..."

    async def _install_harness(self) -> str:
        run = f"_grader_run_{secrets.token_hex(8)}"
        nonce = secrets.token_hex(16)
        code = (f"{HARNESS_SOURCE}\n{run} = __grader_install__({nonce!r}, {MIME!r}, "
                f"{self._limits.max_items}, {self._limits.max_text}, {MAX_ENTRIES}, "
                f"{MAX_STAND_IN_CALLS})\n"
                "del __grader_install__\n")
        await self._execute(code, lambda _msg: None, deadline_s=self._limits.startup_timeout_s)
        self._nonce = nonce
        return run

    async def call(self, function: str, arguments: Sequence[Sequence[Any]],
                   stand_ins: Mapping[str, Sequence[Any]] | None = None) -> list[Call]:
        """Call one student function on each case's arguments; stop at its first timeout.

        With `stand_ins` (a function name -> one value per case), that name is bound during
        each call to a stand-in that answers with the case's value and records what it was
        given. Whether an argument was changed in place is decided here, from the values the
        kernel sends back, never by code in the kernel.
        """
        if self._run is None:
            self._run = await self._install_harness()
        outcomes: dict[int, Call] = {}
        missing: Missing | None = None

        def receive(msg: dict[str, Any]) -> None:
            nonlocal missing
            if msg["msg_type"] != "display_data":
                return
            data = msg["content"].get("data")
            payload = data.get(MIME) if isinstance(data, dict) else None
            # The nonce first: a payload without it is not worth validating, however large.
            if not isinstance(payload, dict) or payload.get("nonce") != self._nonce:
                return
            try:
                message = CallMessage.model_validate(payload)
            except ValidationError:
                return
            if message.nonce != self._nonce or message.function != function:
                return
            if message.case == -1 and isinstance(message.outcome, Missing):
                missing = message.outcome
            elif 0 <= message.case < len(arguments) and message.case not in outcomes:
                outcomes[message.case] = Call(
                    outcome=message.outcome,
                    mutated=changed_arguments(arguments[message.case], message.after),
                    stand_in_calls=message.stand_in_calls,
                    stand_in_overflow=message.stand_in_overflow)

        answers = {name: "[" + ", ".join(map(_literal, values)) + "]"
                   for name, values in (stand_ins or {}).items()}
        code = "{}({!r}, [{}], {{{}}})".format(
            self._run, function, ", ".join("[" + ", ".join(map(_literal, args)) + "]"
                                           for args in arguments),
            ", ".join(f"{name!r}: {values}" for name, values in answers.items()))
        try:
            timed_out = await self._execute(code, receive, deadline_s=self._limits.call_timeout_s,
                                            progress=lambda: len(outcomes))
        except KernelLost as lost:
            # The cases answered before the kernel went keep their outcomes.
            died = Call(outcome=KernelDied(kind="kernel_died"))
            raise KernelLost(str(lost), [outcomes.get(i, died) for i in range(len(arguments))]
                             ) from None
        if missing is not None:
            return [Call(outcome=missing) for _ in arguments]
        calls = []
        for index in range(len(arguments)):
            if index in outcomes:
                calls.append(outcomes[index])
            elif timed_out or any(isinstance(c.outcome, Timeout) for c in outcomes.values()):
                calls.append(Call(outcome=Timeout(kind="timeout")))
            else:
                calls.append(Call(outcome=Raised(kind="raised", type="NoResult",
                                                 message="the call returned no result")))
        return calls

    async def _execute(self, code: str, receive: Callable[[dict[str, Any]], None],
                       deadline_s: float, progress: Callable[[], int] = lambda: 0) -> bool:
        """Run grader code, interrupting it after deadline_s without progress; True if it was."""
        client = self.client
        kc = client.kc
        assert kc is not None
        msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False)
        last_progress, seen = time.monotonic(), progress()
        interrupted_at: float | None = None
        while True:
            now = time.monotonic()
            if progress() != seen:
                last_progress, seen = now, progress()
            if interrupted_at is None:
                wait = last_progress + deadline_s - now
            else:
                wait = interrupted_at + self._limits.interrupt_grace_s - now
            if wait <= 0:
                if interrupted_at is not None:
                    raise KernelLost("the kernel did not stop when interrupted")
                if not await client.km.is_alive():
                    raise KernelLost("the kernel died")
                await client.km.interrupt_kernel()
                interrupted_at = time.monotonic()
                continue
            try:
                msg = await kc.get_iopub_msg(timeout=min(wait, 1.0))
            except Empty:
                if not await client.km.is_alive():
                    raise KernelLost("the kernel died") from None
                continue
            except Exception as exc:  # content that is not JSON, a header without an id, ...
                raise _malformed(exc) from None
            if not _from_request(msg, msg_id):
                continue
            try:
                if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                    with contextlib.suppress(Empty):
                        await kc.get_shell_msg(timeout=self._limits.interrupt_grace_s)
                    return interrupted_at is not None
                receive(msg)
            except Exception as exc:
                raise _malformed(exc) from None


class _Cells:
    """The notebook's code cells on one submission's kernels: each run once, in order, and the
    ones that ran replayed on a fresh kernel after a death, all within the notebook's time."""

    def __init__(self, nb: nbformat.NotebookNode, session: KernelSession, limits: Limits,
                 problems: list[CellProblem]) -> None:
        self._session = session
        self._limits = limits
        self._problems = problems
        self._code = [i for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and c.source.strip()]
        # The cells that ran to their end, errors included: what a replay runs again. Cells
        # that killed the kernel, ran out of time or were never reached stay out.
        self._ran: list[int] = []
        # Time spent in cells, replays included; starting kernels does not count.
        self._used_s = 0.0
        self._restarts = limits.restarts

    def _left_s(self) -> float:
        return self._limits.notebook_timeout_s - self._used_s

    async def _run(self, index: int) -> tuple[CellProblem | None, bool]:
        """Run one cell within its own limit and what is left of the notebook's time; its
        problem, and whether it was the notebook's time that stopped it."""
        timeout_s = min(self._limits.cell_timeout_s, self._left_s())
        started = time.monotonic()
        try:
            problem = await self._session.run_cell(index, timeout_s)
        finally:
            self._used_s += time.monotonic() - started
        cut = (problem is not None and problem.problem == "timeout"
               and timeout_s < self._limits.cell_timeout_s)
        return problem, cut

    def _out_of_time(self, index: int, what: str) -> None:
        self._problems.append(CellProblem(
            cell=index, problem="timeout", excerpt=self._session.excerpt(index),
            message=f"{what}: the notebook's cells used up their "
                    f"{self._limits.notebook_timeout_s:g} s"))

    def _died(self, index: int, message: str) -> None:
        self._problems.append(CellProblem(cell=index, problem="kernel_died", message=message,
                                          excerpt=self._session.excerpt(index)))

    async def run(self) -> bool:
        """Run every code cell once, in order; False when the kernel is lost for good."""
        for index in self._code:
            if self._left_s() <= 0:
                self._out_of_time(index, "not run, nor any cell after it")
                return True
            try:
                problem, cut = await self._run(index)
            except KernelLost as lost:
                self._died(index, str(lost))
                if not await self.restart():
                    return False
                continue
            if cut:
                self._out_of_time(index, "stopped, and no cell after it run")
                return True
            if problem is None or problem.problem == "error":
                self._ran.append(index)
            if problem is not None:
                self._problems.append(problem)
        return True

    async def restart(self) -> bool:
        """A fresh kernel that has run exactly the cells that ran, again, within what is left
        of the notebook's time. False when none can be had: no restart or no time is left, or
        each fresh kernel died too."""
        while self._restarts > 0:
            if self._ran and self._left_s() <= 0:
                self._out_of_time(self._ran[0],
                                  "not run again after the kernel died, nor any cell after it")
                return False
            self._restarts -= 1
            await self._session.stop()
            try:
                await self._session.start()
                await self._replay()
            except Exception:  # it died again, or never came up: as good as dead
                continue
            return True
        return False

    async def _replay(self) -> None:
        """Run the cells that ran again, until the notebook's time runs out. Their problems
        were reported the first time; only a cut or a death is news."""
        for index in self._ran:
            if self._left_s() <= 0:
                self._out_of_time(
                    index, "not run again after the kernel restarted, nor any cell after it")
                return
            try:
                _, cut = await self._run(index)
            except KernelLost as lost:
                self._died(index, f"run again after the kernel restarted, {lost}")
                self._ran.remove(index)  # not on the next fresh kernel, if there is one
                raise
            if cut:
                self._out_of_time(index, "stopped when run again after the kernel restarted, "
                                         "and no cell after it run")
                return


def _plans_then(plans: Sequence[CallPlan],
                then: Callable[[dict[str, list[Call]]], Sequence[CallPlan]] | None,
                observations: Observations) -> Iterator[CallPlan]:
    """`plans`, then the plans `then` makes of their outcomes once every one of them is in."""
    yield from plans
    if then is not None:
        yield from then(dict(observations.calls))


async def observe(nb: nbformat.NotebookNode, plans: Sequence[CallPlan], limits: Limits,
                  km_factory: KernelManagerFactory,
                  submission: Path | None = None,
                  then: Callable[[dict[str, list[Call]]], Sequence[CallPlan]] | None = None
                  ) -> Observations:
    """Run the notebook's code cells, then carry out each call plan in order.

    A kernel lost on the way is replaced (Limits.restarts times) by a fresh one that has run
    the cells that ran. `km_factory` makes each kernel's manager: grader.run.sandbox chooses one
    with the limits and confinement the machine allows. `then`, given the outcomes of every
    plan, returns more plans to carry out in the same kernel after them.
    """
    observations = Observations()
    runtime = scratch_dir("run")
    workdir = runtime / "work"
    workdir.mkdir()
    if submission is not None:
        shutil.copy2(submission, workdir / submission.name)
    session = KernelSession(nb, limits, km_factory, runtime, workdir)
    cells = _Cells(nb, session, limits, observations.cells)
    try:
        await session.start()
        alive = await cells.run()
        for plan in _plans_then(plans, then, observations):
            if not alive:
                observations.calls[plan.key] = [Call(outcome=KernelDied(kind="kernel_died"))
                                                for _ in plan.arguments]
                continue
            try:
                observations.calls[plan.key] = await session.call(plan.function, plan.arguments,
                                                                  plan.stand_ins)
            except KernelLost as lost:
                observations.calls[plan.key] = lost.calls or [
                    Call(outcome=KernelDied(kind="kernel_died")) for _ in plan.arguments]
                alive = await cells.restart()
    finally:
        await session.stop()
        remove_scratch(runtime)
    observations.output_dropped_bytes = session.dropped_bytes
    return observations
