"""One test's verdict from plain values: a call's outcome, the reference check and the spec's
finite-difference, property, contrast and repeat checks. No kernel, no files, no clock."""

from __future__ import annotations

import builtins
import inspect
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.judge.cases import Case
from grader.judge.closeness import (
    compare,
    describe,
    finite,
    identical,
    known_keys,
    plain,
    relative_difference,
)
from grader.judge.diagnose import gradient_relation
from grader.judge.expressions import evaluate, evaluate_spec, gradient, spec_failure
from grader.report import CaseDetail, TestKind, TestResult, TestStatus, Visibility
from grader.spec import (
    AssignmentSpec,
    BatchCredit,
    CaseSet,
    Code,
    ContrastCheck,
    FunctionSpec,
    GradientCheck,
    PropertyCheck,
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


SET_WORDS = {
    CaseSet.EXAMPLES: "worked example",
    CaseSet.SCALAR: "hidden scalar case",
    CaseSet.VECTOR: "hidden 1-D array case",
    CaseSet.MATRIX: "hidden 2-D array case",
    CaseSet.BATCH: "hidden batch",
}


@dataclass(frozen=True)
class CaseVerdict:
    """How one call fared; `got` is a plain value (float64 arrays, dicts or lists of them)."""

    status: TestStatus
    message: str
    got: Plain | None = None


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
    base = dict(function=f.name, group=case_set.value, kind=TestKind.REFERENCE,
                max_score=points, visibility=Visibility.VISIBLE if visible else Visibility.HIDDEN)
    if not cases:
        return TestResult(**base, score=0, status=TestStatus.FAILED,
                          feedback="No case of this group could be judged, so it awards no "
                          "points.")
    problem = next((v for v in verdicts if v.status is not TestStatus.PASSED), None)
    if problem is not None:
        worst = _first_problem(verdicts)
        assert worst is not None
        if case_set is CaseSet.BATCH and spec.cases.batch_credit is BatchCredit.EACH:
            return _batches_with_problems(spec, f, base, cases, verdicts, worst, namespace,
                                          answers)
        return TestResult(**base, score=0, status=worst.status, feedback=worst.message)
    details: list[CaseDetail] = []
    wrong: list[tuple[int, str]] = []
    max_error = 0.0
    for i, (case, verdict) in enumerate(zip(cases, verdicts, strict=True)):
        assert verdict.got is not None
        expected = (evaluate_spec(spec, f"{f.name}: expect", f.expected_expression, namespace,
                                  **case.variables)
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
                got_words = describe(verdict.got, known_keys(want))
                reason = f"expected {describe(want)} but got {got_words}"
            elif visible:
                reason = f"expected {fmt(expected)} but got {fmt(verdict.got)}"
            wrong.append((i, reason))
    words = SET_WORDS[case_set]
    n = len(cases)
    if not wrong:
        feedback = f"Correct on {'the' if n == 1 else f'all {n}'} {plural(words, n)}."
        return TestResult(**base, score=points, status=TestStatus.PASSED, feedback=feedback,
                          max_error=max_error, details=details)
    score = 0.0
    if case_set is CaseSet.BATCH:
        # Batches are named by their place, so a student can tell them apart between runs of a
        # self-check; each earns its share when the spec says so.
        count = (f"{words} {_ordinal_list([i + 1 for i, _ in wrong])} of {n}" if n > 1
                 else f"the {words}")
        count = count.replace(words, plural(words, len(wrong)), 1)
        if spec.cases.batch_credit is BatchCredit.EACH:
            score = points * (n - len(wrong)) / n
    else:
        count = f"{len(wrong)} of {n} {plural(words, n)}" if n > 1 else f"the {words}"
    if wrong[0][1] == "wrong value":  # a hidden case: only the size of the error may show
        feedback = f"Wrong on {count} (largest relative error {max_error:.3g})"
    else:
        feedback = f"Wrong on {count}: {wrong[0][1]}"
    return TestResult(**base, score=score, status=TestStatus.FAILED, feedback=feedback + ".",
                      max_error=max_error, details=details)


def _batches_with_problems(spec: AssignmentSpec, f: FunctionSpec, base: dict[str, Any],
                           cases: list[Case], verdicts: list[CaseVerdict], worst: CaseVerdict,
                           namespace: dict[str, Any], answers: Sequence[Any] | None
                           ) -> TestResult:
    """Batches scored each on its own, some of which gave no value (an exception, a None): those
    cost their share, the right ones earn theirs."""
    right = 0
    for i, (case, verdict) in enumerate(zip(cases, verdicts, strict=True)):
        if verdict.got is None or verdict.status is not TestStatus.PASSED:
            continue
        expected = (evaluate_spec(spec, f"{f.name}: expect", f.expected_expression, namespace,
                                  **case.variables) if answers is None else answers[i])
        right += compare(expected, verdict.got, spec.tolerance.rtol, spec.tolerance.atol)[0]
    failing = [i + 1 for i, v in enumerate(verdicts) if v.status is not TestStatus.PASSED]
    n = len(cases)
    words = plural(SET_WORDS[CaseSet.BATCH], len(failing)).capitalize()
    return TestResult(**base, score=base["max_score"] * right / n, status=worst.status,
                      feedback=f"{worst.message} {words} {_ordinal_list(failing)} of {n} went "
                      "so; each right batch earns its share.")


def plural(words: str, n: int) -> str:
    """'hidden batch' for one, 'hidden batches' for more; likewise for cases."""
    if n == 1:
        return words
    return words + ("es" if words.endswith("batch") else "s")


def hidden_words(spec: AssignmentSpec) -> str:
    """What the spec's hidden cases are called: batches, for a spec that draws batches."""
    return SET_WORDS[CaseSet.BATCH] if spec.cases.batches else "hidden case"


def _ordinal_list(numbers: Sequence[int]) -> str:
    """1, 2 and 3."""
    text = [str(k) for k in numbers]
    return text[0] if len(text) == 1 else f"{', '.join(text[:-1])} and {text[-1]}"


def _graded_values(f: FunctionSpec, cases: list[Case], calls: list[Call], timeout_s: float
                   ) -> tuple[list[tuple[Case, Plain]], CaseVerdict | None]:
    """The hidden cases' values, or the verdict that keeps a check from judging them.

    A nan or an infinity passes no check: compared with anything it is neither close nor far,
    so a cost, a difference or an equality built on it says nothing.
    """
    pairs = []
    for case, call in zip(cases, calls, strict=True):
        if case.visible:
            continue
        verdict = call_verdict(f.name, call, timeout_s)
        if verdict.got is not None and not finite(verdict.got):
            where = "a hidden batch" if case.case_set is CaseSet.BATCH else "a hidden case"
            verdict = CaseVerdict(TestStatus.FAILED, f"{f.name} returned nan or an infinity on "
                                  f"{where}: no check can pass on such a value.")
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
    base = dict(function=f.name, group=check.name,
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

        # The numerical side involves no student value: its errors are the spec's own.
        try:
            numeric = gradient(of, case.variables[check.wrt])
        except Exception as exc:
            raise spec_failure(spec, f"{f.name}: gradient check {check.name!r}: of", check.of,
                               exc) from exc
        try:
            analytic = np.asarray(
                evaluate(check.value, namespace, result=got, **case.variables), dtype=np.float64)
            if numeric.shape != analytic.shape:
                raise ValueError("a gradient has the shape of the variable it is taken against")
        except NameError as exc:  # a name no value can supply: the spec's
            raise spec_failure(spec, f"{f.name}: gradient check {check.name!r}: value",
                               check.value, exc) from exc
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
                          feedback=f"Agrees with a numerical derivative on {_every(spec, values)}.")
    relation = gradient_relation(np.concatenate([np.ravel(a) for a, _ in pairs]),
                                 np.concatenate([np.ravel(n) for _, n in pairs]))
    return TestResult(
        **base, score=0, status=TestStatus.FAILED, max_error=worst,
        feedback=f"Does not agree with a numerical derivative (relative difference up to "
        f"{worst:.3g}; at most {spec.tolerance.fd_rtol:g} is expected)"
        + (f": {relation}." if relation else "."))


def _every(spec: AssignmentSpec, values: Sequence[Any]) -> str:
    """How many hidden cases a passed check judged, in words: never "every" for none."""
    assert values, "a check that judged no case does not pass"
    words = hidden_words(spec)
    return f"the {words}" if len(values) == 1 else f"all {len(values)} {plural(words, 2)}"


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
    base = dict(function=f.name, group=name, kind=TestKind.PROPERTY,
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
        except NameError as exc:  # a name no value can supply: the spec's
            raise spec_failure(spec, f"{f.name}: {name!r}: holds", holds_expr, exc) from exc
        except _DOES_NOT_FIT as exc:
            holds, misfit = False, misfit or exc
        except Exception as exc:  # anything else the value makes the check raise
            return _judging_failed(base, f, got, exc)
        failures += not holds
    if failures == 0:
        return TestResult(**base, score=points, status=TestStatus.PASSED,
                          feedback=f"Holds on {_every(spec, values)}.")
    if misfit is not None:
        # The check could not even be carried out: say so, rather than what failing it means.
        return TestResult(
            **base, score=0, status=TestStatus.FAILED,
            feedback=f"{f.name} returned {describe(values[0][1], ())}, which does not have the "
            f"form the notebook asks for: using it raised {type(misfit).__name__}. Check the "
            "shapes and keys against the notebook's contract.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{explain} (failed on {failures} of {len(values)} cases)")


def repeat_test(spec: AssignmentSpec, f: FunctionSpec, cases: list[Case], calls: list[Call],
                again: list[Call]) -> TestResult:
    """A second call on each hidden case must return exactly what the first one did."""
    assert f.repeat is not None
    base = dict(function=f.name, group=f.repeat.name, kind=TestKind.PROPERTY,
                max_score=f.repeat.points, visibility=Visibility.HIDDEN)
    first, problem = _graded_values(f, cases, calls, spec.timeouts.call_s)
    second, problem_again = _graded_values(f, cases, again, spec.timeouts.call_s)
    problem = problem or problem_again
    if problem is not None:
        return TestResult(**base, score=0, status=problem.status, feedback=problem.message)
    differ = sum(not identical(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    if differ == 0:
        return TestResult(**base, score=f.repeat.points, status=TestStatus.PASSED,
                          feedback=f"Called twice, it returned the same result on "
                          f"{_every(spec, first)}.")
    return TestResult(**base, score=0, status=TestStatus.FAILED,
                      feedback=f"{f.repeat.explain} (differed on {differ} of {len(first)} cases)")
