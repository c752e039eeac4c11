"""Observe a submission: run its cells in a fresh kernel, then call its functions as planned."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from grader.report import CellProblem
from grader.run.cells import Cells
from grader.run.channel import HarnessChannel
from grader.run.messages import KernelLost
from grader.run.pool import Kernel, start_kernel
from grader.run.session import KernelManagerFactory
from grader.settings import Limits
from grader.wire import Call, KernelDied


@dataclass(frozen=True)
class CallPlan:
    """Call `function` on each argument list; the outcomes are filed under `key`.

    `stand_ins` maps the name of another function to one value per argument list: during each
    call that name answers with that value (see HarnessChannel.call).
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


async def observe(nb: nbformat.NotebookNode, plans: Sequence[CallPlan], limits: Limits,
                  km_factory: KernelManagerFactory,
                  submission: Path | None = None,
                  then: Callable[[dict[str, list[Call]]], Awaitable[Sequence[CallPlan]]]
                  | None = None,
                  ready: Awaitable[Kernel] | None = None,
                  give_back: Callable[[Kernel], Awaitable[None]] = Kernel.close
                  ) -> Observations:
    """Run the notebook's code cells, then carry out each call plan in order.

    A kernel lost on the way is replaced (Limits.restarts times) by a fresh one that has run
    the cells that ran. `km_factory` makes each kernel's manager: grader.run.sandbox chooses one
    with the limits and confinement the machine allows. `then`, awaited with the outcomes of
    every plan, returns more plans to carry out in the same kernel after them. `ready` gives
    the first kernel, started ahead (grader.run.pool), which this submission alone then uses;
    without it, the first kernel starts here. The kernel goes to `give_back` at the end (by
    default: shut down now).
    """
    observations = Observations()
    kernel = await (ready if ready is not None else start_kernel(limits, km_factory, submission))
    try:
        await kernel.assign(nb, submission)
        session = kernel.session
        cells = Cells(session, limits, observations.cells)
        channel = HarnessChannel(session)
        alive = await _carry_out(plans, observations, channel, cells, await cells.run())
        if then is not None:
            await _carry_out(await then(dict(observations.calls)), observations, channel,
                             cells, alive)
        observations.output_dropped_bytes = session.dropped_bytes
    finally:
        await give_back(kernel)
    return observations


async def _carry_out(plans: Sequence[CallPlan], observations: Observations,
                     channel: HarnessChannel, cells: Cells, alive: bool) -> bool:
    """Carry out each plan, filing its outcomes; whether a kernel is alive after the last."""
    for plan in plans:
        if not alive:
            observations.calls[plan.key] = [Call(outcome=KernelDied(kind="kernel_died"))
                                            for _ in plan.arguments]
            continue
        try:
            observations.calls[plan.key] = await channel.call(plan.function, plan.arguments,
                                                              plan.stand_ins)
        except KernelLost as lost:
            observations.calls[plan.key] = lost.calls or [
                Call(outcome=KernelDied(kind="kernel_died")) for _ in plan.arguments]
            alive = await cells.restart()
    return alive
