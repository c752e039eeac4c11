"""The notebook's cells: run each once, say how it ended, and replay them on a fresh kernel."""

from __future__ import annotations

import asyncio
import time

import nbformat
from nbclient.exceptions import DeadKernelError

from grader.report import CellProblem
from grader.run.messages import KernelLost, malformed
from grader.run.session import TIMEOUT_MARK, KernelSession
from grader.settings import Limits
from grader.wire import MAX_TEXT


def excerpt(nb: nbformat.NotebookNode, index: int) -> str:
    """The first non-blank line of a cell, shortened to fit a report."""
    lines = [line.strip() for line in nb.cells[index].source.splitlines()]
    first = next((line for line in lines if line), "")
    return first if len(first) <= 60 else first[:57] + "..."


async def run_cell(session: KernelSession, index: int, timeout_s: float) -> CellProblem | None:
    """Execute one notebook cell, interrupting it after timeout_s; how it went wrong, if it did.

    Raises KernelLost when the kernel is gone afterwards.
    """
    client = session.client
    client.idle_seen = False
    client.last_reply = None
    client.cell_timeout_s = timeout_s
    try:
        await client.async_execute_cell(session.nb.cells[index], index)
    except DeadKernelError:
        # nbclient reports its own cancellation (a run interrupted, Ctrl-C) as a dead kernel:
        # that must stop the grading, not replay the cells on a fresh kernel.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        raise KernelLost("it killed the kernel") from None
    except Exception as exc:
        raise malformed(exc) from None
    reply = (client.last_reply or {}).get("content", {})
    if reply.get("ename") == TIMEOUT_MARK:
        assert client.km is not None
        if not client.idle_seen or not await client.km.is_alive():
            raise KernelLost(f"it ran past {timeout_s:g} s and did not stop when interrupted")
        return CellProblem(cell=index, problem="timeout", excerpt=excerpt(session.nb, index),
                           message=f"stopped after {timeout_s:g} s")
    if reply.get("status") == "error":
        name = str(reply.get("ename", "Error"))[:MAX_TEXT]
        value = str(reply.get("evalue", ""))[:MAX_TEXT]
        return CellProblem(cell=index, problem="error", message=f"{name}: {value}",
                           excerpt=excerpt(session.nb, index))
    return None


class Cells:
    """The notebook's code cells on one submission's kernels: each run once, in order, and the
    ones that ran replayed on a fresh kernel after a death, all within the notebook's time.

    `restart` is the one way to a fresh kernel, after a cell or a function call lost one.
    """

    def __init__(self, session: KernelSession, limits: Limits,
                 problems: list[CellProblem]) -> None:
        self._session = session
        self._limits = limits
        self._problems = problems
        self._code = [i for i, c in enumerate(session.nb.cells)
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
            problem = await run_cell(self._session, index, timeout_s)
        finally:
            self._used_s += time.monotonic() - started
        cut = (problem is not None and problem.problem == "timeout"
               and timeout_s < self._limits.cell_timeout_s)
        return problem, cut

    def _out_of_time(self, index: int, what: str) -> None:
        self._problems.append(CellProblem(
            cell=index, problem="timeout", excerpt=excerpt(self._session.nb, index),
            message=f"{what}: the notebook's cells used up their "
                    f"{self._limits.notebook_timeout_s:g} s"))

    def _died(self, index: int, message: str) -> None:
        self._problems.append(CellProblem(cell=index, problem="kernel_died", message=message,
                                          excerpt=excerpt(self._session.nb, index)))

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
