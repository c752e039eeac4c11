"""Grade one submission: load, run, judge, report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from grader import __version__
from grader.course import secret_paths
from grader.judge.cases import Case, call_args, make_cases
from grader.judge.credit import Counterfactual
from grader.judge.expressions import evaluate_spec
from grader.judge.judging import counterfactuals, first_pass, judge
from grader.judge.reference import handout_namespace, reference_namespace, require_answer_key
from grader.judge.speccheck import verify
from grader.report import Report, TestResult
from grader.run.notebook import UnreadableNotebook, load_notebook
from grader.run.observe import CallPlan, observe
from grader.run.pool import Kernel, KernelPool, discard, start_kernel
from grader.run.sandbox import choose_sandbox
from grader.run.session import KernelManagerFactory
from grader.settings import Limits
from grader.spec import AssignmentSpec, CaseSet, ContrastCheck, FunctionSpec, Timeouts
from grader.wire import Call


def limits_for(spec: AssignmentSpec, cell_timeout_s: float | None = None,
               call_timeout_s: float | None = None, **overrides: Any) -> Limits:
    """The spec's timeouts, unless the command line overrides them; other limits likewise
    from `overrides` (Limits fields; None keeps the default). Raises ValidationError for a
    value Limits refuses."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Limits(cell_timeout_s=cell_timeout_s or spec.timeouts.cell_s,
                  call_timeout_s=call_timeout_s or spec.timeouts.call_s, **given)


def _notes(nb: NotebookNode, spec: AssignmentSpec) -> list[str]:
    """Warnings for the instructor: a notebook made for another assignment, say."""
    meta = nb.metadata.get("grader")
    named = meta.get("assignment") if isinstance(meta, dict) else None
    if isinstance(named, str) and named != spec.name:
        return [f"This notebook was handed out for the assignment {named[:100]!r}, but it was "
                f"graded as {spec.name!r}: was the right file submitted?"]
    return []


def _hidden_key(function: str) -> str:
    """Where the calls of a function on the hidden cases are filed until they join the rest."""
    return f"{function}#hidden"


def _changed(spec: AssignmentSpec, f: FunctionSpec, contrast: ContrastCheck, case: Case,
             namespace: dict[str, Any]) -> list[Any]:
    """The arguments of a contrast check's second call: the case's, with some changed."""
    return [evaluate_spec(spec, f"{f.name}: contrast {contrast.name!r}: change {a}",
                          contrast.change[a], namespace, **case.variables)
            if a in contrast.change else case.variables[a] for a in f.args]


async def grade_notebook(path: Path, spec: AssignmentSpec, seed: int, limits: Limits,
                         km_factory: KernelManagerFactory | None = None,
                         sandbox: str = "none", public: bool = False,
                         kernels: KernelPool | None = None) -> Report:
    """The report for one notebook file; an unreadable file gets an `invalid` report.

    Kernels start in the sandbox `limits.sandbox` asks for, chosen here (choose_sandbox), and
    the report names the one used; a caller that chose it already, or brings kernels of its
    own, passes its `km_factory` and names its sandbox in `sandbox`.

    `public` grades without the answer key (a student's self-check); a full grade where the
    course has no answer key is a SpecError, never a public grade in silence.

    `kernels` hands out kernels started ahead (grader.run.pool), made by its own factory;
    without it, the kernel starts here, while the cases are made.
    """
    started = time.monotonic()
    if not public:
        # Before anything starts: without its answer key a full grade has no report at all.
        require_answer_key(spec)
    if km_factory is None:
        box = choose_sandbox(limits.sandbox, hide=secret_paths(spec),
                             kernel_start=limits.kernel_start)
        km_factory, sandbox = box.factory(limits), box.name
    common = dict(assignment=spec.name, submission=path.name, seed=seed,
                  grader_version=__version__, max_score=spec.max_score, sandbox=sandbox,
                  mode="public" if public else "full")
    try:
        # Off the event loop, where the kernels graded beside this one keep their deadlines:
        # validating a notebook of tens of thousands of cells takes about a second.
        nb = await asyncio.to_thread(load_notebook, path)
    except UnreadableNotebook as exc:
        return Report(**common, status="invalid", reason=str(exc), score=0,
                      duration_s=time.monotonic() - started)
    # The kernel starts (or comes from the pool) now, while the cases are made and the
    # reference is read, in a thread so that the kernel's start goes on meanwhile.
    ready = asyncio.create_task(kernels.take() if kernels is not None
                                else start_kernel(limits, km_factory, path))
    try:
        return await _grade(nb, path, spec, seed, limits, km_factory, public, common, started,
                            ready, kernels.give_back if kernels is not None else Kernel.close)
    finally:
        await discard(ready)  # shut down unless the grading got to it (an error before)


def _prepare(spec: AssignmentSpec, seed: int, public: bool
             ) -> tuple[dict[str, Any], list[Case]]:
    """The namespace spec expressions run in, and the cases; the spec's own slips stop here,
    named as the spec's (a variable that fails raises a SpecError naming it: the spec's
    mistake, or a handout that cannot compute it without the answer key)."""
    namespace = handout_namespace(spec) if public else reference_namespace(spec)
    verify(spec, public)
    return namespace, make_cases(spec, namespace, seed)


async def _grade(nb: NotebookNode, path: Path, spec: AssignmentSpec, seed: int, limits: Limits,
                 km_factory: KernelManagerFactory, public: bool, common: dict[str, Any],
                 started: float, ready: asyncio.Task[Kernel],
                 give_back: Callable[[Kernel], Awaitable[None]]) -> Report:
    """The report of a loaded notebook, graded in the kernel `ready` gives, which then goes to
    `give_back`."""
    namespace, cases = await asyncio.to_thread(_prepare, spec, seed, public)
    # Feedback quotes the timeouts that applied, which the command line may have changed.
    applied = spec.model_copy(update={"timeouts": Timeouts(cell_s=limits.cell_timeout_s,
                                                           call_s=limits.call_timeout_s)})
    # Every function meets its worked examples before any function meets a hidden case: a
    # notebook could otherwise keep the hidden inputs one function was given and have the next
    # one return them, or quote them in an exception, on a worked example, whose feedback shows
    # both.
    visible = [i for i, c in enumerate(cases) if c.case_set is CaseSet.EXAMPLES]
    hidden = [i for i, c in enumerate(cases) if c.case_set is not CaseSet.EXAMPLES]
    plans = [CallPlan(f.name, f.name, [call_args(spec, f.name, cases[i]) for i in visible])
             for f in spec.functions]
    for f in spec.functions:
        arguments = [call_args(spec, f.name, c) for c in cases]
        plans.append(CallPlan(_hidden_key(f.name), f.name, [arguments[i] for i in hidden]))
        if f.repeat is not None:
            plans.append(CallPlan(f.repeat_key, f.name, arguments))
        for i, contrast in enumerate(f.contrasts):
            plans.append(CallPlan(f.contrast_key(i), f.name,
                                  [_changed(spec, f, contrast, c, namespace) for c in cases]))

    hidden_keys = {_hidden_key(f.name) for f in spec.functions}

    def in_case_order(calls: dict[str, list[Call]]) -> dict[str, list[Call]]:
        # The judge reads each function's calls under its name, one per case in case order.
        merged = {k: v for k, v in calls.items() if k not in hidden_keys}
        for f in spec.functions:
            shown, rest = iter(calls[f.name]), iter(calls[_hidden_key(f.name)])
            merged[f.name] = [next(shown) if c.case_set is CaseSet.EXAMPLES else next(rest)
                              for c in cases]
        return merged

    first: dict[str, list[TestResult]] | None = None

    def planned(graded: dict[str, list[Call]]) -> list[Counterfactual]:
        nonlocal first
        first = first_pass(applied, cases, graded, namespace)
        return counterfactuals(applied, cases, graded, namespace, first)

    async def second_calls(calls: dict[str, list[Call]]) -> list[CallPlan]:
        # After every graded call, in the same kernel: a function wrong through a dependency
        # that lost points is called again with a stand-in for it (see grader.judge.credit).
        # Planned off the event loop, like the judging below, which starts from the same tests.
        if public:
            return []
        return [CallPlan(c.key, c.function, [call_args(spec, c.function, cases[r.case])
                                             for r in c.retries], c.stand_ins())
                for c in await asyncio.to_thread(planned, in_case_order(calls))]

    observations = await observe(nb, plans, limits, km_factory, submission=path,
                                 then=second_calls, ready=ready,
                                 give_back=give_back)
    calls = in_case_order(observations.calls)
    # Off the event loop: judging one notebook (finite differences over every weight of a large
    # network, say) must not hold up the deadlines of the kernels graded beside it.
    tests = await asyncio.to_thread(judge, applied, cases, calls, namespace, public=public,
                                    first=first)
    if public:
        common["max_score"] = sum(t.max_score for t in tests)
    return Report(**common, status="graded", score=sum(t.score for t in tests), tests=tests,
                  notes=_notes(nb, spec),
                  cells=observations.cells, output_dropped_bytes=observations.output_dropped_bytes,
                  duration_s=time.monotonic() - started)
