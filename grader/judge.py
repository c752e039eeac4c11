"""Verdicts from plain values: the functional core. No kernel, no files, no clock."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.cases import Case, Code
from grader.diagnose import UNRECOGNISED, gradient_relation, matching_mistakes
from grader.reference import evaluate, gradient, with_substitutes
from grader.report import CaseDetail, TestKind, TestResult, TestStatus, Visibility
from grader.spec import (
    AssignmentSpec,
    CaseSet,
    ContrastCheck,
    Detector,
    FunctionSpec,
    GradientCheck,
    PropertyCheck,
    within,
)
from grader.values import (
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


def describe(value: Plain) -> str:
    """What kind of value this is, in words: its shape, or its keys."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, list):
        return f"a sequence of {len(value)} values"
    return _shape_words(value.shape)


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


def call_verdict(function: str, call: Call, timeout_s: float, visible: bool = False
                 ) -> CaseVerdict:
    """Turn one call's outcome into a plain value or the reason there is none.

    A student's own exception message is quoted for visible cases only: it could spell out a
    hidden case's inputs.
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
                f"By the end of the notebook, {function} is not a function but a value of type "
                f"{o.found}: a cell after its definition assigned something else to the name.")
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
                return CaseVerdict(TestStatus.ERROR,
                                   f"{function} raised {o.type} on a hidden case (messages are "
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
                TestStatus.FAILED, f"{function} returned a {o.type} with {o.size} values, far "
                "more than the inputs call for.")
        case Unsupported():
            return CaseVerdict(
                TestStatus.FAILED,
                f"{function} returned a {o.type}, not a number or a numpy array.",
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
        return False, f"expected {describe(exp)} but got {describe(got)}", float("inf")
    if isinstance(exp, dict):
        assert isinstance(got, dict)
        if exp.keys() != got.keys():
            return False, f"expected {describe(exp)} but got {describe(got)}", float("inf")
        pairs = [(repr(k), exp[k], got[k]) for k in exp]
    else:
        assert isinstance(exp, list) and isinstance(got, list)
        if len(exp) != len(got):
            return False, f"expected {describe(exp)} but got {describe(got)}", float("inf")
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
                reason = f"expected {describe(plain(expected))} but got {describe(verdict.got)}"
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


def _graded_values(f: FunctionSpec, cases: list[Case], calls: list[Call], timeout_s: float
                   ) -> tuple[list[tuple[Case, np.ndarray]], CaseVerdict | None]:
    pairs = [(case, call_verdict(f.name, call, timeout_s))
             for case, call in zip(cases, calls, strict=True) if case.case_set != CaseSet.EXAMPLES]
    problem = _first_problem([v for _, v in pairs])
    return [(c, v.got) for c, v in pairs if v.got is not None], problem


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

        try:
            analytic = np.asarray(
                evaluate(check.value, namespace, result=got, **case.variables), dtype=np.float64)
            numeric = gradient(of, case.variables[check.wrt])
            if numeric.shape != analytic.shape:
                raise ValueError("a gradient has the shape of the variable it is taken against")
        except _DOES_NOT_FIT as exc:
            return TestResult(**base, score=0, status=TestStatus.FAILED, max_error=float("inf"),
                              feedback=f"{f.name} returned {describe(got)}, which does "
                              f"not fit the shape of its inputs ({type(exc).__name__}: "
                              f"{str(exc)[:200]}).")
        rel = relative_difference(analytic, numeric, spec.tolerance.fd_atol)
        worst = max(worst, float(np.max(rel, initial=0.0)))
        pairs.append((analytic, numeric))
    # The finite differences err by about 1e-10 on O(1) costs, far below the float32 noise of a
    # correct student (about 1e-6 relative), so fd_rtol can sit in between: 1e-4 accepts
    # float32 work with a tenfold margin while a real mistake (a missing factor, a wrong sign)
    # is off by percents or more.
    if worst <= spec.tolerance.fd_rtol:
        return TestResult(**base, score=check.points, status=TestStatus.PASSED, max_error=worst,
                          feedback="Agrees with a numerical derivative on every hidden case.")
    relation = gradient_relation(np.concatenate([np.ravel(a) for a, _ in pairs]),
                                 np.concatenate([np.ravel(n) for _, n in pairs]))
    return TestResult(
        **base, score=0, status=TestStatus.FAILED, max_error=worst,
        feedback=f"Does not agree with a numerical derivative (relative difference up to "
        f"{worst:.3g}; at most {spec.tolerance.fd_rtol:g} is expected)"
        + (f": {relation}." if relation else "."))


def property_test(spec: AssignmentSpec, f: FunctionSpec, prop: PropertyCheck, cases: list[Case],
                  calls: list[Call], namespace: dict[str, Any]) -> TestResult:
    """A condition every correct result satisfies, evaluated on the hidden cases."""
    base = dict(name=f"{f.name}: {prop.name}", function=f.name, kind=TestKind.PROPERTY,
                max_score=prop.points, visibility=Visibility.HIDDEN)
    values, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    failures = 0
    misfit: Exception | None = None
    for case, got in values:
        try:
            holds = bool(np.all(evaluate(prop.holds, namespace, result=got, **case.variables)))
        except _DOES_NOT_FIT as exc:
            holds, misfit = False, misfit or exc
        failures += not holds
    if failures == 0:
        return TestResult(**base, score=prop.points, status=TestStatus.PASSED,
                          feedback="Holds on every hidden case.")
    if misfit is not None:
        # The check could not even be carried out: say so, rather than what failing it means.
        return TestResult(
            **base, score=0, status=TestStatus.FAILED,
            feedback=f"{f.name} returned {describe(values[0][1])}, which does not have the "
            f"form the notebook asks for: using it raised {type(misfit).__name__}: "
            f"{str(misfit)[:300]}. Check the shapes and keys against the notebook's contract.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{prop.explain} (failed on {failures} of {len(values)} cases)")


def _identical(a: Plain, b: Plain) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
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
                          feedback="Called twice, it returned the same result on every hidden "
                          "case.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{f.repeat.explain} (differed on {differ} of {len(first)} cases)")


def _finite(value: Plain) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return bool(np.all(np.isfinite(value)))


def contrast_test(spec: AssignmentSpec, f: FunctionSpec, contrast: ContrastCheck,
                  cases: list[Case], calls: list[Call], others: list[Call],
                  namespace: dict[str, Any]) -> TestResult:
    """The function called again with some arguments changed: on every hidden case, `holds`
    relates the first result (`result`) to the second (`other`)."""
    base = dict(name=f"{f.name}: {contrast.name}", function=f.name, kind=TestKind.PROPERTY,
                max_score=contrast.points, visibility=Visibility.HIDDEN)
    first, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    second, again = _graded_values(f, cases, others, spec.timeouts.call_s)
    if problem is None and again is not None:
        changes = ", ".join(f"{k} = {v}" for k, v in contrast.change.items())
        problem = CaseVerdict(again.status, f"Called again with {changes}: {again.message}")
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    if not first:
        return TestResult(**base, score=0, status=TestStatus.FAILED,
                          feedback="No hidden case could be judged.")
    failures = 0
    misfit: Exception | None = None
    for (case, got), (_, other) in zip(first, second, strict=True):
        if not (_finite(got) and _finite(other)):
            failures += 1  # nan and inf satisfy no relation, whatever the expression says
            continue
        try:
            holds = bool(np.all(evaluate(contrast.holds, namespace, result=got, other=other,
                                         **case.variables)))
        except _DOES_NOT_FIT as exc:
            holds, misfit = False, misfit or exc
        failures += not holds
    if failures == 0:
        return TestResult(**base, score=contrast.points, status=TestStatus.PASSED,
                          feedback="Holds on every hidden case.")
    if misfit is not None:
        return TestResult(
            **base, score=0, status=TestStatus.FAILED,
            feedback=f"{f.name} returned {describe(first[0][1])}, which does not have the "
            f"form the notebook asks for: using it raised {type(misfit).__name__}: "
            f"{str(misfit)[:300]}. Check the shapes and keys against the notebook's contract.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{contrast.explain} (failed on {failures} of {len(first)} cases)")


def _broken_by(call: Call, dependency: Call) -> bool:
    """`call` raised because the function it depends on failed it: the dependency raised the
    very same error, or gave back no number at all (None, say) for `call` to compute with."""
    if not isinstance(call.outcome, Raised):
        return False
    d = dependency.outcome
    if isinstance(d, Raised):
        return (call.outcome.type, call.outcome.message) == (d.type, d.message)
    return isinstance(d, NoneValue | Unsupported | TooLarge)


def _precision(outcome: Number | Array, rtol: float) -> float:
    """The relative tolerance a value of this precision deserves: a function computed from a
    float16 or float32 value inherits that precision, not float64's. Read from the values
    themselves (do they survive a round trip?), not from the dtype the kernel names."""
    values = as_array(outcome)
    for low in (np.float16, np.float32):
        with np.errstate(all="ignore"):
            if np.array_equal(values.astype(low).astype(np.float64), values):
                return max(rtol, 16 * float(np.finfo(low).eps))
    return rtol


def _stand_in(args: Sequence[Any], value: np.ndarray) -> Callable[..., Any]:
    """A function that answers with a student's observed value when called on `args`."""

    def stand_in(*given: Any) -> np.ndarray:
        if len(given) != len(args) or not all(
                np.array_equal(np.asarray(g, dtype=np.float64), np.asarray(a, dtype=np.float64))
                for g, a in zip(given, args, strict=True)):
            raise LookupError("the reference calls it on values that were not observed")
        return value

    return stand_in


def inherited_cases(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case],
                    calls: dict[str, list[Call]], namespace: dict[str, Any] | None,
                    failing: set[str] | frozenset[str] = frozenset()) -> dict[int, str]:
    """Cases where `f` is wrong only through another student function it calls.

    Case index -> the name of that function. Given the answer key's namespace: `f` is wrong but
    equals the reference formula evaluated with the student's own values of that function,
    observed by the spec's probes; or `f` raised because that function raised the same error or
    returned no number, and `f` is right on some other case where that function did return
    values. Only a function in `failing` (it lost points on its own tests) can be the cause, and
    only a hidden case is evidence (the worked examples' answers are public). Without such
    evidence a failure is not excused (else a student could trade one function's points for
    another's by making both fail), so public mode, which has no answer key, excuses nothing.
    Such a mistake is charged once, to the function that makes it.
    """
    found: dict[int, str] = {}
    if namespace is None:
        return found
    probes = [(p, calls[p.key(f.name)]) for p in f.probes
              if p.key(f.name) in calls and p.function in failing]
    tol = spec.tolerance
    broken: dict[int, str] = {}
    evidence = False  # f is right on a case where its dependencies gave values
    for i, (case, call) in enumerate(zip(cases, calls[f.name], strict=True)):
        same = [p.function for p, observed in probes if _broken_by(call, observed[i])]
        if same:
            broken[i] = same[0]
            continue
        if not probes or not isinstance(call.outcome, Number | Array) or call.mutated:
            continue
        got = as_array(call.outcome)
        expected = evaluate(f.expected_expression, namespace, **case.variables)
        if compare(expected, got, tol.rtol, tol.atol)[0]:
            evidence = evidence or (not case.visible and all(
                isinstance(o[i].outcome, Number | Array) for _, o in probes))
            continue
        substitutes = {}
        rtol = tol.rtol
        for p, observed in probes:
            outcome = observed[i].outcome
            if isinstance(outcome, Number | Array):
                args = [case.variables[a] for a in p.args]
                substitutes[p.function] = _stand_in(args, as_array(outcome))
                rtol = max(rtol, _precision(outcome, tol.rtol))
        if not substitutes:
            continue
        try:
            own = evaluate(f.expected_expression, with_substitutes(namespace, substitutes),
                           **case.variables)
        except (LookupError, ValueError):
            continue
        if compare(own, got, rtol, tol.atol)[0]:
            found[i] = next(iter(substitutes))
            evidence = evidence or not case.visible
    return found | broken if evidence else found


def _credit_note(f: FunctionSpec, inherited: dict[int, str], scope: Sequence[int]) -> str:
    names = sorted({inherited[i] for i in scope if i in inherited})
    if not names:
        return ""
    which = " and ".join(names)
    return (f" Where {f.name} goes wrong, the cause is your own {which}: from what "
            f"{'they' if len(names) > 1 else 'it'} returned (or raised), {f.name} does the "
            f"right thing, so it keeps these points. Fixing {which} fixes both.")


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


def judge(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
          namespace: dict[str, Any], public: bool = False) -> list[TestResult]:
    """Every test of the assignment, in spec order.

    `public` judges without the answer key (`namespace` is then the student handout's): only the
    worked examples, against the spec's published answers, and the finite-difference and
    property checks run.
    """
    tests: list[TestResult] = []
    for f in spec.functions:
        failing = {t.function for t in tests if t.status is not TestStatus.PASSED}
        inherited = inherited_cases(spec, f, cases, calls, None if public else namespace,
                                    failing)
        keep = [i for i in range(len(cases)) if i not in inherited]
        kept_cases = [cases[i] for i in keep]
        f_calls = [calls[f.name][i] for i in keep]
        f_tests: list[TestResult] = []
        for case_set in CaseSet:
            if case_set not in f.points:
                continue
            if public and (case_set is not CaseSet.EXAMPLES or f.name not in spec.example_answers):
                continue
            scope = [i for i, c in enumerate(cases) if c.case_set is case_set]
            idx = [k for k, i in enumerate(keep) if i in scope]
            note = _credit_note(f, inherited, scope)
            if not idx:
                f_tests.append(TestResult(
                    name=f"{f.name}: {case_set.value}", function=f.name, kind=TestKind.REFERENCE,
                    score=f.points[case_set], max_score=f.points[case_set],
                    status=TestStatus.PASSED, feedback=note.strip(),
                    visibility=Visibility.VISIBLE if case_set is CaseSet.EXAMPLES
                    else Visibility.HIDDEN))
                continue
            answers = ([spec.example_answers[f.name][kept_cases[k].index] for k in idx]
                       if public else None)
            t = reference_test(spec, f, case_set, [kept_cases[k] for k in idx],
                               [f_calls[k] for k in idx], namespace, answers)
            f_tests.append(_with_note(t, note))
        hidden = [i for i, c in enumerate(cases) if c.case_set is not CaseSet.EXAMPLES]
        note = _credit_note(f, inherited, hidden)
        for check in f.gradient_checks:
            t = gradient_test(spec, f, check, kept_cases, f_calls, namespace)
            f_tests.append(_with_note(t, note))
        for prop in f.properties:
            t = property_test(spec, f, prop, kept_cases, f_calls, namespace)
            f_tests.append(_with_note(t, note))
        if f.repeat is not None:
            again = [calls[f.repeat_key][i] for i in keep]
            f_tests.append(_with_note(repeat_test(spec, f, kept_cases, f_calls, again), note))
        for n, contrast in enumerate(f.contrasts):
            others = [calls[f.contrast_key(n)][i] for i in keep]
            t = contrast_test(spec, f, contrast, kept_cases, f_calls, others, namespace)
            f_tests.append(_with_note(t, note))
        tests += _after_failing_calls(f, _diagnosed(spec, f, f_tests, kept_cases, f_calls,
                                                      namespace), tests)
    return tests


def _after_failing_calls(f: FunctionSpec, f_tests: list[TestResult],
                         earlier: list[TestResult]) -> list[TestResult]:
    """Point a failing function at a failing function it calls: that one is the place to start."""
    failing = {t.function for t in earlier if t.status is not TestStatus.PASSED}
    broken = sorted({p.function for p in f.probes} & failing)
    if not broken:
        return f_tests
    which = " and ".join(broken)
    note = (f"{f.name} calls your {which}, which fails its own tests: fix {which} first, then "
            f"check {f.name} again.")
    return [t if t.status is TestStatus.PASSED
            else t.model_copy(update={"feedback": _sentences(t.feedback, note)})
            for t in f_tests]


def _with_note(t: TestResult, note: str) -> TestResult:
    if not note or t.status is not TestStatus.PASSED:
        return t
    return t.model_copy(update={"feedback": f"{t.feedback}{note}"})
