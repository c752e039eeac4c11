"""Verdicts from plain values: the functional core. No kernel, no files, no clock."""

from __future__ import annotations

import builtins
import inspect
import types
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.judge.cases import Case, Code
from grader.judge.diagnose import UNRECOGNISED, gradient_relation, matching_mistakes
from grader.judge.reference import evaluate, gradient
from grader.report import CaseDetail, TestKind, TestResult, TestStatus, Visibility
from grader.spec import (
    AssignmentSpec,
    CaseSet,
    ContrastCheck,
    Detector,
    FunctionSpec,
    GradientCheck,
    Probe,
    PropertyCheck,
    within,
)
from grader.wire import (
    Array,
    Call,
    DictValue,
    KernelDied,
    Missing,
    NoneValue,
    NotImplementedOutcome,
    Number,
    Plain,
    Raised,
    SequenceValue,
    Timeout,
    TooLarge,
    Unsupported,
    Value,
    as_array,
    as_plain,
)

# What a spec expression raises when a student's value has the wrong shape, misses a dict key or
# is a number where a sequence was expected: the value does not fit, which fails the test.
_DOES_NOT_FIT = (ValueError, KeyError, IndexError, TypeError)

_PROBLEM_ORDER = [
    TestStatus.MISSING,
    TestStatus.KERNEL_DIED,
    TestStatus.NOT_IMPLEMENTED,
    TestStatus.TIMEOUT,
    TestStatus.ERROR,
]

_SET_WORDS = {
    CaseSet.EXAMPLES: "worked example",
    CaseSet.SCALAR: "hidden scalar case",
    CaseSet.VECTOR: "hidden 1-D array case",
    CaseSet.MATRIX: "hidden 2-D array case",
}


@dataclass(frozen=True)
class CaseVerdict:
    """How one call fared; `got` is a plain value (float64 arrays, dicts or lists of them)."""

    status: TestStatus
    message: str
    got: Plain | None = None


def plain(value: Any) -> Plain:
    """A reference value in the form student values take: float64 arrays, dicts, lists."""
    if isinstance(value, dict):
        return {str(k): np.asarray(v, dtype=np.float64) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):
            return [plain(v) for v in value]
        try:
            return np.asarray(value, dtype=np.float64)
        except ValueError:  # parts of different shapes: a sequence, not one array
            return [plain(v) for v in value]
    return np.asarray(value, dtype=np.float64)


def describe(value: Plain, known: Collection[str] | None = None) -> str:
    """What kind of value this is, in words: its shape, or its keys.

    A student's value names only the keys in `known` (the reference's) and counts the others: a
    key is text the notebook chose, and on a hidden case it could spell out the inputs. None
    names every key (a reference value, or a visible case).
    """
    if isinstance(value, dict):
        if known is None:
            return f"a dict with keys {sorted(value)}"
        named = sorted(k for k in value if k in known)
        others = len(value) - len(named)
        plural = "s" if others != 1 else ""
        if not named:
            return f"a dict with {others} key{plural} of the notebook's own"
        return f"a dict with keys {named}" + (f" and {others} other key{plural}" if others else "")
    if isinstance(value, list):
        return f"a sequence of {len(value)} values"
    return _shape_words(value.shape)


def _keys(value: Plain) -> Collection[str]:
    """The keys a student's value may be described by: those of the reference's value."""
    return value.keys() if isinstance(value, dict) else ()


def fmt(value: Any) -> str:
    """A compact, readable rendering of a number, an array, a dict or a sequence of them."""
    if isinstance(value, Code):
        # The constants decide what the function computes: a reader needs them too.
        bound = ", ".join(f"{k}={fmt(v)}" for k, v in value.constants.items())
        return value.source + (f" with {bound}" if bound else "")
    value = plain(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    array = value
    if array.ndim == 0:
        return f"{float(array):.6g}"
    return np.array2string(array, precision=6, threshold=24, separator=", ")


def _ordinals(indices: Sequence[int]) -> str:
    words = ["first", "second", "third", "fourth", "fifth", "sixth"]
    named = [words[i] if i < len(words) else f"#{i + 1}" for i in indices]
    return " and ".join(named)


# The names of the types Python and numpy define. A notebook can make a class of any name, one
# spelling out a hidden case's inputs say, so a type's name is quoted where inputs are hidden only
# when it is one of these.
_KNOWN_TYPES = frozenset(
    v.__name__ for module in (builtins, types, np, np.exceptions, np.linalg)
    for v in vars(module).values() if isinstance(v, type)) | {"unreadable"}


def _type_name(name: str, visible: bool, otherwise: str, prefix: str = "") -> str:
    """`prefix` and `name` (as the harness writes it: "dict", "tuple of str") when the case is
    visible or every type it names is Python's or numpy's own; else `otherwise`."""
    if visible or all(part in _KNOWN_TYPES for part in name.split(" of ")):
        return prefix + name
    return otherwise


def call_verdict(function: str, call: Call, timeout_s: float, visible: bool = False
                 ) -> CaseVerdict:
    """Turn one call's outcome into a plain value or the reason there is none.

    A student's own exception message is quoted for visible cases only, and the name of a class
    the notebook defined likewise: either could spell out a hidden case's inputs.
    """
    o = call.outcome
    match o:
        case Number() | Array() | DictValue() | SequenceValue() if call.mutated:
            return CaseVerdict(
                TestStatus.FAILED,
                f"{function} changed its {_ordinals(call.mutated)} argument in place: the caller's "
                "value must stay as it was, so compute a new value and return that.")
        case Number() | Array() | DictValue() | SequenceValue():
            return CaseVerdict(TestStatus.PASSED, "", as_plain(o))
        case Missing() if o.found is not None:
            return CaseVerdict(
                TestStatus.MISSING,
                f"By the end of the notebook, {function} is not a function but a value of "
                f"{_type_name(o.found, False, 'a type the notebook defines', 'type ')}: a cell "
                "after "
                "its definition, or a call of another function, assigned something else to "
                "the name.")
        case Missing():
            return CaseVerdict(
                TestStatus.MISSING,
                f"No function named {function} was defined: check its name and that its cell "
                "runs without errors.",
            )
        case NotImplementedOutcome():
            return CaseVerdict(
                TestStatus.NOT_IMPLEMENTED,
                f"{function} still raises NotImplementedError: replace the stub with your code.",
            )
        case Timeout():
            return CaseVerdict(
                TestStatus.TIMEOUT,
                f"{function} did not return within {timeout_s:g} s (an endless loop?); "
                "it was not called again.",
            )
        case KernelDied():
            return CaseVerdict(
                TestStatus.KERNEL_DIED, f"The kernel died before {function} could be tested."
            )
        case Raised():
            if not visible:
                raised = _type_name(o.type, False, "an exception of a class the notebook defines")
                return CaseVerdict(TestStatus.ERROR,
                                   f"{function} raised {raised} on a hidden case (messages are "
                                   "shown for the worked examples only).")
            return CaseVerdict(TestStatus.ERROR, f"{function} raised {o.type}: {o.message}")
        case NoneValue():
            return CaseVerdict(
                TestStatus.FAILED,
                f"{function} returned None: it must return its result"
                + (" (it changed its argument in place instead)." if call.mutated else "."),
            )
        case TooLarge():
            return CaseVerdict(
                TestStatus.FAILED, f"{function} returned a "
                f"{_type_name(o.type, visible, 'value of a type the notebook defines')} with "
                f"{o.size} values, far more than the inputs call for.")
        case Unsupported():
            return CaseVerdict(
                TestStatus.FAILED,
                f"{function} returned a "
                f"{_type_name(o.type, visible, 'value of a type the notebook defines')}, not a "
                "number or a numpy array.",
            )
    raise AssertionError(f"unhandled outcome {o!r}")


def _first_problem(verdicts: Sequence[CaseVerdict]) -> CaseVerdict | None:
    for status in _PROBLEM_ORDER:
        for v in verdicts:
            if v.status is status:
                return v
    return next((v for v in verdicts if v.status is TestStatus.FAILED), None)


def compare(expected: Any, got: Plain, rtol: float, atol: float) -> tuple[bool, str, float]:
    """Same shape and values within atol + rtol * |expected|; returns (ok, reason, rel error).

    Dicts match key by key (same keys), sequences item by item (same length).
    """
    exp = plain(expected)
    if isinstance(exp, dict | list) or isinstance(got, dict | list):
        return _compare_parts(exp, got, rtol, atol)
    if exp.shape != got.shape:
        return False, f"expected shape {exp.shape} but got shape {got.shape}", float("inf")
    if not np.all(np.isfinite(got)):
        return False, "the result contains nan or inf", float("inf")
    ok = within(got, exp, rtol, atol)
    rel = float(np.max(np.abs(got - exp) / np.maximum(np.abs(exp), atol), initial=0.0))
    return ok, "" if ok else "wrong value", rel


def _compare_parts(exp: Plain, got: Plain, rtol: float, atol: float) -> tuple[bool, str, float]:
    if type(exp) is not type(got):
        return False, f"expected {describe(exp)} but got {describe(got, _keys(exp))}", float("inf")
    if isinstance(exp, dict):
        assert isinstance(got, dict)
        if exp.keys() != got.keys():
            return False, f"expected {describe(exp)} but got {describe(got, exp)}", float("inf")
        pairs = [(repr(k), exp[k], got[k]) for k in exp]
    else:
        assert isinstance(exp, list) and isinstance(got, list)
        if len(exp) != len(got):
            return False, f"expected {describe(exp)} but got {describe(got, ())}", float("inf")
        pairs = [(f"item {i}", e, g) for i, (e, g) in enumerate(zip(exp, got, strict=True))]
    worst = 0.0
    for name, e, g in pairs:
        ok, reason, rel = compare(e, g, rtol, atol)
        if not ok and reason.startswith("expected shape"):
            assert isinstance(g, np.ndarray)
            reason = f"expected {_shape_words(np.shape(e))} but got {_shape_words(g.shape)}"
        if not ok:
            return False, f"{name}: {reason}", rel
        worst = max(worst, rel)
    return True, "", worst


def _shape_words(shape: tuple[int, ...]) -> str:
    return "a scalar" if shape == () else f"an array of shape {shape}"


def _parameters(f: FunctionSpec, namespace: dict[str, Any]) -> list[str]:
    """The names the notebook gives the function's parameters, as the student knows them."""
    try:
        names = list(inspect.signature(namespace[f.name]).parameters)
    except (KeyError, TypeError, ValueError):
        return f.args
    return names if len(names) == len(f.args) else f.args


def reference_test(spec: AssignmentSpec, f: FunctionSpec, case_set: CaseSet, cases: list[Case],
                   calls: list[Call], namespace: dict[str, Any],
                   answers: Sequence[Any] | None = None) -> TestResult:
    """Judge one group of cases against the reference solution (or the given answers)."""
    points = f.points[case_set]
    visible = case_set is CaseSet.EXAMPLES
    verdicts = [call_verdict(f.name, c, spec.timeouts.call_s, visible) for c in calls]
    base = dict(name=f"{f.name}: {case_set.value}", function=f.name, kind=TestKind.REFERENCE,
                max_score=points, visibility=Visibility.VISIBLE if visible else Visibility.HIDDEN)
    if not cases:
        return TestResult(**base, score=0, status=TestStatus.FAILED,
                          feedback="No case of this group could be judged, so it awards no "
                          "points.")
    problem = next((v for v in verdicts if v.status is not TestStatus.PASSED), None)
    if problem is not None:
        worst = _first_problem(verdicts)
        assert worst is not None
        return TestResult(**base, score=0, status=worst.status, feedback=worst.message)
    details: list[CaseDetail] = []
    wrong: list[str] = []
    max_error = 0.0
    for i, (case, verdict) in enumerate(zip(cases, verdicts, strict=True)):
        assert verdict.got is not None
        expected = (evaluate(f.expected_expression, namespace, **case.variables)
                    if answers is None else answers[i])
        ok, reason, rel = compare(expected, verdict.got, spec.tolerance.rtol, spec.tolerance.atol)
        max_error = max(max_error, rel)
        if visible:
            details.append(CaseDetail(
                inputs={p: fmt(case.variables[a])
                        for p, a in zip(_parameters(f, namespace), f.args, strict=True)},
                expected=fmt(expected), got=fmt(verdict.got)))
        if not ok:
            if reason.startswith("expected shape"):
                want = plain(expected)
                reason = f"expected {describe(want)} but got {describe(verdict.got, _keys(want))}"
            elif visible:
                reason = f"expected {fmt(expected)} but got {fmt(verdict.got)}"
            wrong.append(reason)
    words = _SET_WORDS[case_set]
    n = len(cases)
    if not wrong:
        feedback = f"Correct on {'the' if n == 1 else f'all {n}'} {words}{'s' if n > 1 else ''}."
        return TestResult(**base, score=points, status=TestStatus.PASSED, feedback=feedback,
                          max_error=max_error, details=details)
    count = f"{len(wrong)} of {n} {words}s" if n > 1 else f"the {words}"
    if wrong[0] == "wrong value":  # a hidden case: only the size of the error may show
        feedback = f"Wrong on {count} (largest relative error {max_error:.3g})"
    else:
        feedback = f"Wrong on {count}: {wrong[0]}"
    return TestResult(**base, score=0, status=TestStatus.FAILED, feedback=feedback + ".",
                      max_error=max_error, details=details)


def relative_difference(analytic: np.ndarray, numeric: np.ndarray, atol: float) -> np.ndarray:
    """|a - n| / (|a| + |n|): 1 for a sign error, |r - 1| / (r + 1) for a gradient scaled by r."""
    diff = np.abs(analytic - numeric)
    scale = np.abs(analytic) + np.abs(numeric)
    return np.where(diff <= atol, 0.0, diff / np.where(scale > 0, scale, 1.0))


def _finite(value: Plain) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return bool(np.all(np.isfinite(value)))


def _graded_values(f: FunctionSpec, cases: list[Case], calls: list[Call], timeout_s: float
                   ) -> tuple[list[tuple[Case, Plain]], CaseVerdict | None]:
    """The hidden cases' values, or the verdict that keeps a check from judging them.

    A nan or an infinity passes no check: compared with anything it is neither close nor far,
    so a cost, a difference or an equality built on it says nothing.
    """
    pairs = []
    for case, call in zip(cases, calls, strict=True):
        if case.case_set is CaseSet.EXAMPLES:
            continue
        verdict = call_verdict(f.name, call, timeout_s)
        if verdict.got is not None and not _finite(verdict.got):
            verdict = CaseVerdict(TestStatus.FAILED, f"{f.name} returned nan or an infinity on "
                                  "a hidden case: no check can pass on such a value.")
        pairs.append((case, verdict))
    problem = _first_problem([v for _, v in pairs])
    if problem is None and not pairs:
        problem = CaseVerdict(TestStatus.FAILED, "No hidden case could be judged, so this check "
                              "awards no points.")
    return [(c, v.got) for c, v in pairs if v.got is not None], problem


def _judging_failed(base: dict[str, Any], f: FunctionSpec, got: Plain, exc: Exception
                    ) -> TestResult:
    """The test's error when a spec expression raised on a student's value: the value is to
    blame (a check of well-formed values does not raise), never the grader."""
    return TestResult(**base, score=0, status=TestStatus.ERROR,
                      feedback=f"Checking the value {f.name} returned ({describe(got, ())}) "
                      f"raised {type(exc).__name__}. Check its form against the notebook's "
                      "contract.")


def gradient_test(spec: AssignmentSpec, f: FunctionSpec, check: GradientCheck, cases: list[Case],
                  calls: list[Call], namespace: dict[str, Any]) -> TestResult:
    """The student's values, as a gradient, against central differences of the spec's cost."""
    base = dict(name=f"{f.name}: {check.name}", function=f.name,
                kind=TestKind.FINITE_DIFFERENCE, max_score=check.points,
                visibility=Visibility.HIDDEN)
    values, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    worst = 0.0
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for case, got in values:

        def of(perturbed: np.ndarray, case: Case = case) -> Any:
            return evaluate(check.of, namespace, **(case.variables | {check.wrt: perturbed}))

        # The numerical side involves no student value: its errors are the grader's own.
        numeric = gradient(of, case.variables[check.wrt])
        try:
            analytic = np.asarray(
                evaluate(check.value, namespace, result=got, **case.variables), dtype=np.float64)
            if numeric.shape != analytic.shape:
                raise ValueError("a gradient has the shape of the variable it is taken against")
        except _DOES_NOT_FIT as exc:
            return TestResult(**base, score=0, status=TestStatus.FAILED, max_error=float("inf"),
                              feedback=f"{f.name} returned {describe(got, ())}, which does "
                              f"not fit the shape of its inputs ({type(exc).__name__}).")
        except Exception as exc:  # anything else the value makes the check raise
            return _judging_failed(base, f, got, exc)
        rel = relative_difference(analytic, numeric, spec.tolerance.fd_atol)
        largest = float(np.max(rel, initial=0.0))
        # nan (from an analytic value that overflowed) must not vanish in max().
        worst = max(worst, largest if np.isfinite(largest) else float("inf"))
        pairs.append((analytic, numeric))
    # The finite differences err by about 1e-10 on O(1) costs, far below the float32 noise of a
    # correct student (about 1e-6 relative), so fd_rtol can sit in between: 1e-4 accepts
    # float32 work with a tenfold margin while a real mistake (a missing factor, a wrong sign)
    # is off by percents or more.
    if worst <= spec.tolerance.fd_rtol:
        return TestResult(**base, score=check.points, status=TestStatus.PASSED, max_error=worst,
                          feedback=f"Agrees with a numerical derivative on {_every(values)}.")
    relation = gradient_relation(np.concatenate([np.ravel(a) for a, _ in pairs]),
                                 np.concatenate([np.ravel(n) for _, n in pairs]))
    return TestResult(
        **base, score=0, status=TestStatus.FAILED, max_error=worst,
        feedback=f"Does not agree with a numerical derivative (relative difference up to "
        f"{worst:.3g}; at most {spec.tolerance.fd_rtol:g} is expected)"
        + (f": {relation}." if relation else "."))


def _every(values: Sequence[Any]) -> str:
    """How many hidden cases a passed check judged, in words: never "every" for none."""
    assert values, "a check that judged no case does not pass"
    return "the hidden case" if len(values) == 1 else f"all {len(values)} hidden cases"


def property_test(spec: AssignmentSpec, f: FunctionSpec, prop: PropertyCheck, cases: list[Case],
                  calls: list[Call], namespace: dict[str, Any]) -> TestResult:
    """A condition every correct result satisfies, evaluated on the hidden cases."""
    return _condition_test(spec, f, prop.name, prop.holds, prop.explain, prop.points, cases,
                           calls, namespace)


def contrast_test(spec: AssignmentSpec, f: FunctionSpec, contrast: ContrastCheck,
                  cases: list[Case], calls: list[Call], others: list[Call],
                  namespace: dict[str, Any]) -> TestResult:
    """The function called again with some arguments changed: on every hidden case, `holds`
    relates the first result (`result`) to the second (`other`)."""
    changes = ", ".join(f"{k} = {v}" for k, v in contrast.change.items())
    return _condition_test(spec, f, contrast.name, contrast.holds, contrast.explain,
                           contrast.points, cases, calls, namespace, (others, changes))


def _condition_test(spec: AssignmentSpec, f: FunctionSpec, name: str, holds_expr: str,
                    explain: str, points: float, cases: list[Case], calls: list[Call],
                    namespace: dict[str, Any],
                    second: tuple[list[Call], str] | None = None) -> TestResult:
    """A spec condition of `result` (and of `other`, the result of a second call with the
    arguments `second` changes) on every hidden case."""
    base = dict(name=f"{f.name}: {name}", function=f.name, kind=TestKind.PROPERTY,
                max_score=points, visibility=Visibility.HIDDEN)
    values, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    others: list[Plain | None] = [None] * len(values)
    if second is not None and problem is None:
        again, again_problem = _graded_values(f, cases, second[0], spec.timeouts.call_s)
        if again_problem is not None:
            problem = CaseVerdict(again_problem.status,
                                  f"Called again with {second[1]}: {again_problem.message}")
        others = [other for _, other in again]
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    failures = 0
    misfit: Exception | None = None
    for (case, got), other in zip(values, others, strict=True):
        names = {"result": got} | ({} if other is None else {"other": other})
        try:
            holds = bool(np.all(evaluate(holds_expr, namespace, **names, **case.variables)))
        except _DOES_NOT_FIT as exc:
            holds, misfit = False, misfit or exc
        except Exception as exc:  # anything else the value makes the check raise
            return _judging_failed(base, f, got, exc)
        failures += not holds
    if failures == 0:
        return TestResult(**base, score=points, status=TestStatus.PASSED,
                          feedback=f"Holds on {_every(values)}.")
    if misfit is not None:
        # The check could not even be carried out: say so, rather than what failing it means.
        return TestResult(
            **base, score=0, status=TestStatus.FAILED,
            feedback=f"{f.name} returned {describe(values[0][1], ())}, which does not have the "
            f"form the notebook asks for: using it raised {type(misfit).__name__}. Check the "
            "shapes and keys against the notebook's contract.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{explain} (failed on {failures} of {len(values)} cases)")


def _identical(a: Plain, b: Plain) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return False


def repeat_test(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case], calls: list[Call],
                again: list[Call]) -> TestResult:
    """A second call on each hidden case must return exactly what the first one did."""
    assert f.repeat is not None
    base = dict(name=f"{f.name}: {f.repeat.name}", function=f.name, kind=TestKind.PROPERTY,
                max_score=f.repeat.points, visibility=Visibility.HIDDEN)
    first, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    second, problem_again = _graded_values(f, cases, again, spec.timeouts.call_s)
    problem = problem or problem_again
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    differ = sum(not _identical(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    if differ == 0:
        return TestResult(**base, score=f.repeat.points, status=TestStatus.PASSED,
                          feedback=f"Called twice, it returned the same result on "
                          f"{_every(first)}.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{f.repeat.explain} (differed on {differ} of {len(first)} cases)")


# --- credit through a dependency ----------------------------------------------------------------
#
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
class Counterfactual:
    """A second call of `function` on the cases `cases` (indices into the case list), with each
    dependency in `stand_ins` answering the reference's value there; filed under `key`."""

    function: str
    key: str
    cases: list[int]
    stand_ins: dict[str, list[Plain]]


@dataclass(frozen=True)
class Excuse:
    """Why a wrong case keeps its points: the dependencies whose correct stand-ins the function
    called, and the right value it returned then."""

    dependencies: tuple[str, ...]
    call: Call


def _telling(value: Plain, atol: float) -> bool:
    """Finite and not all zero: a value a function cannot hit without computing anything."""
    if isinstance(value, dict):
        parts: list[Plain] = list(value.values())
    elif isinstance(value, list):
        parts = value
    else:
        return bool(np.all(np.isfinite(value))) and bool(np.any(np.abs(value) > atol))
    return all(_finite(p) for p in parts) and any(_telling(p, atol) for p in parts)


def _right_value(spec: AssignmentSpec, f: FunctionSpec, case: Case, call: Call,
                 namespace: dict[str, Any]) -> tuple[bool, Any]:
    """Whether the call returned the reference's value (unchanged arguments), and that value."""
    expected = evaluate(f.expected_expression, namespace, **case.variables)
    verdict = call_verdict(f.name, call, spec.timeouts.call_s)
    ok = (verdict.got is not None
          and compare(expected, verdict.got, spec.tolerance.rtol, spec.tolerance.atol)[0])
    return ok, expected


def _counterfactuals(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
                     namespace: dict[str, Any], failing: set[str]) -> list[Counterfactual]:
    plans = []
    for f in spec.functions:
        probes = [p for p in f.probes if p.function in failing]
        if not probes or f.name not in calls:
            continue
        chosen: list[int] = []
        stand_ins: dict[str, list[Plain]] = {p.function: [] for p in probes}
        for i, (case, call) in enumerate(zip(cases, calls[f.name], strict=True)):
            if isinstance(call.outcome, Missing):
                continue
            right, expected = _right_value(spec, f, case, call, namespace)
            if right or not _telling(plain(expected), spec.tolerance.atol):
                continue
            answers = {p.function: plain(evaluate(p.expression, namespace, **case.variables))
                       for p in probes}
            # A stand-in answers with a number, an array or a dict of them (what the kernel
            # decodes), and only with a value no function could hit without computing it.
            if all(not isinstance(a, list) and _telling(a, spec.tolerance.atol)
                   for a in answers.values()):
                chosen.append(i)
                for name, answer in answers.items():
                    stand_ins[name].append(answer)
        if chosen:
            key = f"{f.name} with a correct {' and '.join(stand_ins)}"
            plans.append(Counterfactual(f.name, key, chosen, stand_ins))
    return plans


def counterfactuals(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
                    namespace: dict[str, Any]) -> list[Counterfactual]:
    """The second calls that could show a function wrong only through a dependency: for each
    function whose probed dependency lost points, its wrong cases, with the reference's values
    for the stand-ins. The same values always give the same plans, so `judge` finds them again.
    """
    raw = {f.name: _function_tests(spec, f, cases, calls, namespace, False, {})
           for f in spec.functions}
    return _counterfactuals(spec, cases, calls, namespace, _failing(raw))


_HALF = ("float16", "half")
_SINGLE = ("float32", "single")


def _precision(dtype: str) -> float:
    """The relative error that rounding to this dtype may leave, from the dtype's name alone: an
    unknown name gets float64's, the strictest."""
    low = np.float16 if dtype in _HALF else np.float32 if dtype in _SINGLE else np.float64
    return 16 * float(np.finfo(low).eps)


def _same_argument(sent: Any, got: Value) -> bool:
    """Whether a stand-in was given the value the probe names, at the precision of its dtype (a
    function may pass its argument on as float32)."""
    if isinstance(sent, dict):
        return (isinstance(got, DictValue) and got.entries.keys() == sent.keys()
                and all(_same_argument(v, got.entries[k]) for k, v in sent.items()))
    if not isinstance(got, Number | Array):
        return False
    return within(as_array(got), np.asarray(sent, dtype=np.float64), _precision(got.dtype), 0.0)


def _dependencies_called(call: Call, probes: dict[str, Probe], case: Case) -> tuple[str, ...]:
    """The stand-ins a second call used, when it used each one only on its probe's arguments;
    () when it called none, called one on anything else, or called them past the record."""
    if call.stand_in_overflow or not call.stand_in_calls:
        return ()
    for record in call.stand_in_calls:
        p = probes.get(record.function)
        if p is None or len(record.arguments) != len(p.args):
            return ()
        if not all(_same_argument(case.variables[a], got)
                   for a, got in zip(p.args, record.arguments, strict=True)):
            return ()
    return tuple(sorted({r.function for r in call.stand_in_calls}))


def _excused(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case],
             calls: dict[str, list[Call]], namespace: dict[str, Any], plan: Counterfactual
             ) -> dict[int, Excuse]:
    """The cases of `plan` that its second calls show right through a correct dependency."""
    observed = calls.get(plan.key)
    if observed is None or len(observed) != len(plan.cases):
        return {}
    probes = {p.function: p for p in f.probes if p.function in plan.stand_ins}
    found = {}
    for i, call in zip(plan.cases, observed, strict=True):
        if not _right_value(spec, f, cases[i], call, namespace)[0]:
            continue
        called = _dependencies_called(call, probes, cases[i])
        if called:
            found[i] = Excuse(called, call)
    return found


def _count(n: int, of: int, word: str) -> str:
    if n == of == 1:
        return f"the {word}"
    return f"{'all ' if n == of else ''}{n} {word}{'s' if n > 1 else ''}"


def _credit_note(f: FunctionSpec, excused: dict[int, Excuse], scope: Sequence[int],
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


def _sentences(first: str, second: str) -> str:
    return f"{first}{'' if first.rstrip().endswith(('.', '!', '?')) else '.'} {second}"


def _diagnosed(spec: AssignmentSpec, f: FunctionSpec, tests: list[TestResult],
               cases: list[Case], calls: list[Call], namespace: dict[str, Any]
               ) -> list[TestResult]:
    """Failing tests get the known mistake their values show, and its hint; or an honest note."""
    if all(t.status is TestStatus.PASSED for t in tests):
        return tests
    found = matching_mistakes(spec, f, cases, calls, namespace)
    if any(t.name == f"{f.name}: {CaseSet.SCALAR.value}" and t.status is not TestStatus.PASSED
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
                "mistake": found[0][0].id, "feedback": _sentences(t.feedback, found[0][1])}))
        elif t.status is TestStatus.FAILED and values_only:
            out.append(t.model_copy(update={"feedback": _sentences(t.feedback, UNRECOGNISED)}))
        else:
            out.append(t)
    return out




def _function_tests(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case],
                    calls: dict[str, list[Call]], namespace: dict[str, Any], public: bool,
                    excused: dict[int, Excuse]) -> list[TestResult]:
    """Every test of one function; an excused case is judged on the value its second call gave.
    """
    f_calls = [excused[i].call if i in excused else c for i, c in enumerate(calls[f.name])]
    f_tests: list[TestResult] = []
    for case_set in CaseSet:
        if case_set not in f.points:
            continue
        if public and (case_set is not CaseSet.EXAMPLES or f.name not in spec.example_answers):
            continue
        scope = [i for i, c in enumerate(cases) if c.case_set is case_set]
        answers = ([spec.example_answers[f.name][cases[i].index] for i in scope]
                   if public else None)
        t = reference_test(spec, f, case_set, [cases[i] for i in scope],
                           [f_calls[i] for i in scope], namespace, answers)
        f_tests.append(_with_note(t, _credit_note(f, excused, scope, _SET_WORDS[case_set])))
    hidden = [i for i, c in enumerate(cases) if c.case_set is not CaseSet.EXAMPLES]
    note = _credit_note(f, excused, hidden, "hidden case")
    for check in f.gradient_checks:
        f_tests.append(_with_note(gradient_test(spec, f, check, cases, f_calls, namespace), note))
    for prop in f.properties:
        f_tests.append(_with_note(property_test(spec, f, prop, cases, f_calls, namespace), note))
    if f.repeat is not None:
        # Whether a function repeats itself is about its own calls, never the second ones.
        f_tests.append(repeat_test(spec, f, cases, calls[f.name], calls[f.repeat_key]))
    for n, contrast in enumerate(f.contrasts):
        # Like the repeat check, about the function's own calls.
        f_tests.append(contrast_test(spec, f, contrast, cases, calls[f.name],
                                     calls[f.contrast_key(n)], namespace))
    kept = [i for i in range(len(cases)) if i not in excused]
    return _diagnosed(spec, f, f_tests, [cases[i] for i in kept],
                      [calls[f.name][i] for i in kept], namespace)


def _failing(tests: dict[str, list[TestResult]]) -> set[str]:
    return {name for name, ts in tests.items() if any(t.status is not TestStatus.PASSED
                                                      for t in ts)}


def judge(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
          namespace: dict[str, Any], public: bool = False) -> list[TestResult]:
    """Every test of the assignment, in spec order.

    `calls` holds the graded calls and, under the keys `counterfactuals` names, the second calls
    that can excuse a function's wrong cases (see above). `public` judges without the answer
    key (`namespace` is then the student handout's): only the worked examples, against the
    spec's published answers, and the finite-difference and property checks run; nothing is
    excused.
    """
    tests = {f.name: _function_tests(spec, f, cases, calls, namespace, public, {})
             for f in spec.functions}
    # Functions that, called again with correct dependencies, still went wrong somewhere.
    wrong_anyway: set[str] = set()
    if not public:
        for plan in _counterfactuals(spec, cases, calls, namespace, _failing(tests)):
            f = spec.function(plan.function)
            excused = _excused(spec, f, cases, calls, namespace, plan)
            if excused:
                tests[f.name] = _function_tests(spec, f, cases, calls, namespace, False, excused)
            answered = [i for i, c in zip(plan.cases, calls.get(plan.key, []), strict=False)
                        if not isinstance(c.outcome, KernelDied | Timeout)]
            if any(i not in excused for i in answered):
                wrong_anyway.add(f.name)
    failing = _failing(tests)
    return [t for f in spec.functions
            for t in _after_failing_calls(f, tests[f.name], failing, f.name in wrong_anyway)]


def _after_failing_calls(f: FunctionSpec, f_tests: list[TestResult], failing: set[str],
                         wrong_anyway: bool) -> list[TestResult]:
    """Point a failing function at a failing function it calls: that one is the place to start,
    unless the function went wrong even with a correct one."""
    broken = sorted({p.function for p in f.probes} & failing)
    if not broken:
        return f_tests
    which = " and ".join(broken)
    if wrong_anyway:
        note = (f"{f.name} calls your {which}, which fails its own tests; but called again with "
                f"a correct {which} in {'their places' if len(broken) > 1 else 'its place'}, "
                f"{f.name} still did not compute the right value from "
                f"{'them' if len(broken) > 1 else 'it'}, so the mistake is in "
                f"{f.name} too.")
    else:
        note = (f"{f.name} calls your {which}, which fails its own tests: fix {which} first, "
                f"then check {f.name} again.")
    return [t if t.status is TestStatus.PASSED
            else t.model_copy(update={"feedback": _sentences(t.feedback, note)})
            for t in f_tests]


def _with_note(t: TestResult, note: str) -> TestResult:
    if not note or t.status is not TestStatus.PASSED:
        return t
    return t.model_copy(update={"feedback": f"{t.feedback}{note}"})
