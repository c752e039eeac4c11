"""Recognise known misconceptions in a student's values and name them in failing tests.

Each catalogue entry of the spec names a detector. Most compare the student's results, case by
case, with what the mistaken variant would return; the built-in kinds cover what one expression
cannot say (code that only works on scalars, an in-place update returning None, wrong shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grader.judge.cases import Case
from grader.judge.expressions import evaluate, evaluate_spec, spec_failure
from grader.report import TestResult, TestStatus
from grader.spec import AssignmentSpec, CaseSet, Detector, FunctionSpec, Mistake, Tolerance
from grader.wire import (
    Array,
    Call,
    DictValue,
    NoneValue,
    Number,
    Raised,
    SequenceValue,
    as_array,
    as_plain,
)

UNRECOGNISED = ("This answer matches none of the mistakes the grader knows about; compare each "
                "factor of your formula with the derivation in the notebook.")


def expected_shape(f: FunctionSpec, case: Case) -> tuple[int, ...]:
    """The shape a correct result has: that of the function's arguments broadcast together."""
    return tuple(np.broadcast_shapes(*(np.shape(case.variables[a]) for a in f.args)))


def _values(calls: Sequence[Call]) -> list[np.ndarray] | None:
    """Every result as an array, or None when some call did not return a number or array."""
    if not all(isinstance(c.outcome, Number | Array) for c in calls):
        return None
    return [as_array(c.outcome) for c in calls]  # type: ignore[arg-type]


def _matches_entries(spec: AssignmentSpec, m: Mistake, cases: Sequence[Case],
                     calls: Sequence[Call], namespace: dict[str, Any], tol: Tolerance) -> bool:
    """For dict results: the variant is a dict of the entries the mistake gets wrong; the
    entries it leaves out are not examined, so one slip is recognised whatever the rest is."""
    if not all(isinstance(c.outcome, DictValue) for c in calls):
        return False
    for case, call in zip(cases, calls, strict=True):
        got = as_plain(call.outcome)  # type: ignore[arg-type]
        assert m.value is not None and isinstance(got, dict)
        try:
            variant = evaluate_spec(spec, f"mistake {m.id}: value", m.value, namespace,
                                    **case.variables)
        except NotImplementedError:  # a stub of the public handout: cannot run here
            return False
        if not isinstance(variant, dict):  # a dict where the mistake returns no dict
            return False
        entries = {k: np.asarray(v, dtype=np.float64) for k, v in variant.items()}
        if not all(k in got and tol.accepts(got[k], v) for k, v in entries.items()):
            return False
    return True


def _matches_value(spec: AssignmentSpec, m: Mistake, cases: Sequence[Case], calls: Sequence[Call],
                   namespace: dict[str, Any], tol: Tolerance) -> bool:
    values = _values(calls)
    if not values:
        return bool(calls) and _matches_entries(spec, m, cases, calls, namespace, tol)
    for case, got in zip(cases, values, strict=True):
        assert m.value is not None
        try:
            raw = evaluate_spec(spec, f"mistake {m.id}: value", m.value, namespace,
                                **case.variables)
        except NotImplementedError:  # a stub of the public handout: cannot run here
            return False
        try:
            variant = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):  # a dict of entries, say, where the result is an array
            return False
        if not tol.accepts(got, variant):
            return False
    return True


def _split_by_shape(f: FunctionSpec, cases: Sequence[Case], calls: Sequence[Call]
                    ) -> tuple[list[Call], list[tuple[tuple[int, ...], Call]]]:
    scalar: list[Call] = []
    array: list[tuple[tuple[int, ...], Call]] = []
    for case, call in zip(cases, calls, strict=True):
        shape = expected_shape(f, case)
        if shape == ():
            scalar.append(call)
        else:
            array.append((shape, call))
    return scalar, array


def _constant(spec: AssignmentSpec, m: Mistake, cases: Sequence[Case], calls: Sequence[Call],
              namespace: dict[str, Any]) -> float | None:
    """The one number `m.value` takes on every case, if it takes only one."""
    values = _values(calls)
    if not values:
        return None
    seen: list[np.ndarray] = []
    for case, got in zip(cases, values, strict=True):
        assert m.value is not None
        try:
            seen.append(np.ravel(np.asarray(
                evaluate(m.value, namespace, result=got, **case.variables), dtype=np.float64)))
        except NameError as exc:  # a name no result can supply: the spec's
            raise spec_failure(spec, f"mistake {m.id}: value", m.value, exc) from exc
        except Exception:  # a result that does not fit the expression shows no constant
            return None
    every = np.concatenate(seen)
    if every.size < 2 or not np.all(np.isfinite(every)):
        return None
    first = float(every[0])
    return first if np.allclose(every, first, rtol=1e-6, atol=1e-12) else None


def _non_finite_where(spec: AssignmentSpec, m: Mistake, cases: Sequence[Case],
                      calls: Sequence[Call], namespace: dict[str, Any]) -> bool:
    """nan or infinities exactly where `m.where` holds, on some case, and finite values
    everywhere else."""
    values = _values(calls)
    if not values:
        return False
    seen = False
    for case, got in zip(cases, values, strict=True):
        assert m.where is not None
        try:
            where = np.asarray(evaluate_spec(spec, f"mistake {m.id}: where", m.where,
                                             namespace, **case.variables), dtype=bool)
        except NotImplementedError:  # a stub of the public handout: cannot run here
            return False
        try:
            where = np.broadcast_to(where, got.shape)
        except ValueError:  # a result of another shape is not this mistake
            return False
        if not np.array_equal(~np.isfinite(got), where):
            return False
        seen = seen or bool(np.any(where))
    return seen


def recognise(spec: AssignmentSpec, m: Mistake, f: FunctionSpec, cases: Sequence[Case],
              calls: Sequence[Call], namespace: dict[str, Any]) -> str | None:
    """The hint for mistake `m` when the calls show it, else None."""
    if m.detector is Detector.CONSTANT:
        value = _constant(spec, m, cases, calls, namespace) if cases else None
        if value is None or (m.unless is not None and np.isclose(value, m.unless, rtol=1e-6)):
            return None
        return m.hint.format(value=value)
    return m.hint if detect(spec, m, f, cases, calls, namespace) else None


def detect(spec: AssignmentSpec, m: Mistake, f: FunctionSpec, cases: Sequence[Case],
           calls: Sequence[Call], namespace: dict[str, Any]) -> bool:
    """Whether the student's calls on `cases` show mistake `m`."""
    if not cases:
        return False
    if m.detector is Detector.VALUE:
        return _matches_value(spec, m, cases, calls, namespace, spec.tolerance)
    if m.detector is Detector.NON_FINITE:
        return _non_finite_where(spec, m, cases, calls, namespace)
    if m.detector is Detector.RETURNS_NONE_MUTATED:
        return (all(isinstance(c.outcome, NoneValue) for c in calls)
                and any(c.mutated for c in calls))
    if m.detector is Detector.MUTATES_ARGUMENTS:
        return any(c.mutated and not isinstance(c.outcome, NoneValue) for c in calls)
    scalar, array = _split_by_shape(f, cases, calls)
    if not array:
        return False
    if m.detector is Detector.SCALAR_ONLY:
        return (bool(scalar) and _values(scalar) is not None
                and all(isinstance(c.outcome, Raised)
                        and (m.error is None or c.outcome.type == m.error) for _, c in array))
    got = _values([c for _, c in array])
    if got is None:
        return False
    shapes = [shape for shape, _ in array]
    if m.detector is Detector.COLUMN_SHAPE:
        # A column where a batch was expected: (n, 1), or (n, n) once broadcast against (n,).
        return all(g.shape != s and g.size > 1 and (g.ndim > len(s) or 1 in g.shape)
                   for g, s in zip(got, shapes, strict=True))
    if m.detector is Detector.BATCH_SUMMED:
        return all(g.size == 1 and int(np.prod(s)) > 1 for g, s in zip(got, shapes, strict=True))
    raise AssertionError(f"unhandled detector {m.detector!r}")


def matching_mistakes(spec: AssignmentSpec, f: FunctionSpec, cases: Sequence[Case],
                      calls: Sequence[Call], namespace: dict[str, Any]
                      ) -> list[tuple[Mistake, str]]:
    """Every catalogue entry of `f` that the calls show, with its hint, in catalogue order."""
    found = []
    for m in spec.mistakes_for(f.name):
        hint = recognise(spec, m, f, cases, calls, namespace)
        if hint is not None:
            found.append((m, hint))
    return found


def gradient_relation(analytic: np.ndarray, numeric: np.ndarray) -> str | None:
    """How a wrong gradient relates to the true one, when it is that simple: sign or scale.

    A sign error gives a relative difference |a-n|/(|a|+|n|) of exactly 1; a gradient scaled by
    r gives |r-1|/(r+1) everywhere. Saying which reads better than the bare number.
    """
    a = np.ravel(np.asarray(analytic, dtype=np.float64))
    n = np.ravel(np.asarray(numeric, dtype=np.float64))
    usable = np.abs(n) > 1e-6 * max(1.0, float(np.max(np.abs(n), initial=0.0)))
    if not np.any(usable):
        return None
    ratio = a[usable] / n[usable]
    spread = float(np.max(ratio) - np.min(ratio))
    r = float(np.median(ratio))
    if spread > 1e-3 * max(1.0, abs(r)) or abs(r - 1.0) <= 1e-3:
        return None
    if abs(r + 1.0) <= 1e-3:
        return "it has the opposite sign of the true derivative"
    if abs(r) <= 1e-3:
        return "it is zero where the true derivative is not"
    return f"it is {r:.3g} times the true derivative"


def sentences(first: str, second: str) -> str:
    """Two texts as two sentences: a full stop after the first unless it ends one already."""
    return f"{first}{'' if first.rstrip().endswith(('.', '!', '?')) else '.'} {second}"


def diagnosed(spec: AssignmentSpec, f: FunctionSpec, tests: list[TestResult],
               cases: list[Case], calls: list[Call], namespace: dict[str, Any]
               ) -> list[TestResult]:
    """Failing tests get the known mistake their values show, and its hint; or an honest note."""
    if all(t.status is TestStatus.PASSED for t in tests):
        return tests
    found = matching_mistakes(spec, f, cases, calls, namespace)
    if any(t.group == CaseSet.SCALAR.value and t.status is not TestStatus.PASSED
           for t in tests):
        # A batch summed to one number leaves scalar cases right; wrong scalars mean something
        # else, a hard-coded number say.
        found = [(m, hint) for m, hint in found if m.detector is not Detector.BATCH_SUMMED]
    # "Matches no known mistake" is about wrong values; a None or a changed argument has its
    # own explanation already.
    values_only = all(isinstance(c.outcome, Number | Array | DictValue | SequenceValue)
                      and not c.mutated for c in calls)
    out = []
    for t in tests:
        if t.status not in (TestStatus.FAILED, TestStatus.ERROR):
            out.append(t)
        elif found:
            out.append(t.model_copy(update={
                "mistake": found[0][0].id, "feedback": sentences(t.feedback, found[0][1])}))
        elif t.status is TestStatus.FAILED and values_only:
            out.append(t.model_copy(update={"feedback": sentences(t.feedback, UNRECOGNISED)}))
        else:
            out.append(t)
    return out
