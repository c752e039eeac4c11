"""Credit through a dependency: which wrong cases a second call, with correct stand-ins for the
functions they call, shows right after all; and the note that says so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.judge.cases import Case
from grader.judge.closeness import compare, finite, plain, precision
from grader.judge.expressions import evaluate_spec
from grader.judge.verdicts import call_verdict, plural
from grader.spec import AssignmentSpec, FunctionSpec, Probe
from grader.wire import (
    Call,
    KernelDied,
    Missing,
    Plain,
    Timeout,
    same_value,
)

# A function (delta2) that calls another student function (sigmoid_prime) keeps its points on a
# case it got wrong only on counterfactual evidence: called again in the student's kernel, after
# every graded call, with the dependency replaced by a stand-in that answers with the reference's
# value at the probe's arguments, it calls the stand-in on exactly those arguments and returns
# the right value. The stand-in carries values, never the answer key's code, and everything is
# decided here from what came back. A function that never calls the dependency, calls it on
# other values, or is still wrong with a correct dependency is not excused; neither is a case
# whose right answer or stand-in value is zero or not finite, which a function could hit without
# computing anything. Only a dependency that lost points on its own tests can excuse, so a
# mistake is charged once, never zero times; public mode, without an answer key, excuses nothing.
# The second call can only ever show that a function computes the right value from a correct
# dependency: whatever a notebook does in it (detect the stand-in, keep state from the graded
# calls), it earns no point that a correct function would not earn.


@dataclass(frozen=True)
class Retry:
    """One case called again: its index in the case list, and the reference's value that each
    dependency's stand-in answers with there."""

    case: int
    answers: dict[str, Plain]


@dataclass(frozen=True)
class Counterfactual:
    """A second call of `function` on some of its wrong cases, with each of `dependencies`
    replaced by a stand-in answering the reference's value; its calls are filed under `key`."""

    function: str
    key: str
    dependencies: tuple[str, ...]
    retries: tuple[Retry, ...]

    def stand_ins(self) -> dict[str, list[Plain]]:
        """Each dependency's answers, one per retried case: the form the kernel session takes."""
        return {d: [r.answers[d] for r in self.retries] for d in self.dependencies}


@dataclass(frozen=True)
class Excuse:
    """Why a wrong case keeps its points: the dependencies whose correct stand-ins the function
    called, and the right value it returned then."""

    dependencies: tuple[str, ...]
    call: Call


@dataclass(frozen=True)
class Credit:
    """What a counterfactual showed: the cases it excuses (by index in the case list), and
    whether the function was wrong on some answered case even with correct dependencies."""

    excused: dict[int, Excuse]
    still_wrong: bool


def plan_counterfactuals(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
                         namespace: dict[str, Any], failing: set[str]) -> list[Counterfactual]:
    """For each function calling one of the `failing` functions, its wrong cases that a correct
    dependency could put right, with the reference's values for the stand-ins."""
    plans = []
    for f in spec.functions:
        probes = [p for p in f.probes if p.function in failing]
        if not probes or f.name not in calls:
            continue
        retries: list[Retry] = []
        for i, (case, call) in enumerate(zip(cases, calls[f.name], strict=True)):
            if isinstance(call.outcome, Missing):
                continue
            right, expected = _right_value(spec, f, case, call, namespace)
            if right or not _telling(plain(expected), spec.tolerance.atol):
                continue
            answers = {p.function: plain(evaluate_spec(
                spec, f"{f.name}: probe {p.function}", p.expression, namespace,
                **case.variables)) for p in probes}
            # A stand-in answers with a number, an array or a dict of them (what the kernel
            # decodes), and only with a value no function could hit without computing it.
            if all(not isinstance(a, list) and _telling(a, spec.tolerance.atol)
                   for a in answers.values()):
                retries.append(Retry(i, answers))
        if retries:
            dependencies = tuple(p.function for p in probes)
            key = f"{f.name} with a correct {' and '.join(dependencies)}"
            plans.append(Counterfactual(f.name, key, dependencies, tuple(retries)))
    return plans


def credit(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case],
           calls: dict[str, list[Call]], namespace: dict[str, Any], plan: Counterfactual
           ) -> Credit:
    """The cases of `plan` that its second calls show right through a correct dependency, and
    whether any other case it answered (no timeout, no dead kernel) stayed wrong."""
    observed = calls.get(plan.key, [])
    excused = {}
    if len(observed) == len(plan.retries):
        probes = {p.function: p for p in f.probes if p.function in plan.dependencies}
        for retry, call in zip(plan.retries, observed, strict=True):
            if not _right_value(spec, f, cases[retry.case], call, namespace)[0]:
                continue
            called = _dependencies_called(call, probes, cases[retry.case])
            if called:
                excused[retry.case] = Excuse(called, call)
    answered = [r.case for r, c in zip(plan.retries, observed, strict=False)
                if not isinstance(c.outcome, KernelDied | Timeout)]
    return Credit(excused, any(i not in excused for i in answered))


def _telling(value: Plain, atol: float) -> bool:
    """Finite and not all zero: a value a function cannot hit without computing anything."""
    if isinstance(value, dict):
        parts: list[Plain] = list(value.values())
    elif isinstance(value, list):
        parts = value
    else:
        return bool(np.all(np.isfinite(value))) and bool(np.any(np.abs(value) > atol))
    return all(finite(p) for p in parts) and any(_telling(p, atol) for p in parts)


def _right_value(spec: AssignmentSpec, f: FunctionSpec, case: Case, call: Call,
                 namespace: dict[str, Any]) -> tuple[bool, Any]:
    """Whether the call returned the reference's value (unchanged arguments), and that value."""
    expected = evaluate_spec(spec, f"{f.name}: expect", f.expected_expression, namespace,
                             **case.variables)
    verdict = call_verdict(f.name, call, spec.timeouts.call_s)
    ok = (verdict.got is not None
          and compare(expected, verdict.got, spec.tolerance.rtol, spec.tolerance.atol)[0])
    return ok, expected


def _dependencies_called(call: Call, probes: dict[str, Probe], case: Case) -> tuple[str, ...]:
    """The stand-ins a second call used, when it used each one only on its probe's arguments;
    () when it called none, called one on anything else, or called them past the record."""
    if call.stand_in_overflow or not call.stand_in_calls:
        return ()
    for record in call.stand_in_calls:
        p = probes.get(record.function)
        if p is None or len(record.arguments) != len(p.args):
            return ()
        # At the precision of its dtype: a function may pass its argument on as float32.
        if not all(same_value(case.variables[a], got, precision)
                   for a, got in zip(p.args, record.arguments, strict=True)):
            return ()
    return tuple(sorted({r.function for r in call.stand_in_calls}))


def _count(n: int, of: int, word: str) -> str:
    if n == of == 1:
        return f"the {word}"
    return f"{'all ' if n == of else ''}{n} {plural(word, n)}"


def credit_note(f: FunctionSpec, excused: dict[int, Excuse], scope: Sequence[int],
                 word: str) -> str:
    """Which evidence kept which points, for the cases in `scope`."""
    hit = [i for i in scope if i in excused]
    if not hit:
        return ""
    names = sorted({d for i in hit for d in excused[i].dependencies})
    which = " and ".join(names)
    return (f" Where it went wrong, the cause is your own {which}: called again with a correct "
            f"{which} in {'their places' if len(names) > 1 else 'its place'}, {f.name} gave "
            f"the right value on {_count(len(hit), len(scope), word)}, so it keeps these "
            f"points. Fixing {which} fixes both.")
