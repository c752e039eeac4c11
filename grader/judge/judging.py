"""Every test of an assignment from the values its calls returned: the verdicts of each
function, the credit its dependencies' second calls earn back, and the diagnosis of what is left."""

from __future__ import annotations

from typing import Any

from grader.judge.cases import Case
from grader.judge.credit import Counterfactual, Excuse, credit, credit_note, plan_counterfactuals
from grader.judge.diagnose import diagnosed, sentences
from grader.judge.verdicts import (
    SET_WORDS,
    contrast_test,
    gradient_test,
    hidden_words,
    property_test,
    reference_test,
    repeat_test,
)
from grader.report import TestResult, TestStatus
from grader.spec import AssignmentSpec, CaseSet, FunctionSpec
from grader.wire import Call


def first_pass(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
               namespace: dict[str, Any], public: bool = False) -> dict[str, list[TestResult]]:
    """Every function's tests on its graded calls, nothing excused yet: what `counterfactuals`
    plans from and `judge` starts from, by function name."""
    return {f.name: _function_tests(spec, f, cases, calls, namespace, public, {})
            for f in spec.functions}


def counterfactuals(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
                    namespace: dict[str, Any],
                    first: dict[str, list[TestResult]] | None = None) -> list[Counterfactual]:
    """The second calls that could show a function wrong only through a dependency: for each
    function whose probed dependency lost points, its wrong cases, with the reference's values
    for the stand-ins (grader.judge.credit). The same values always give the same plans, so
    `judge` finds them again. `first` is `first_pass` of the same values, if already made.
    """
    if first is None:
        first = first_pass(spec, cases, calls, namespace)
    return plan_counterfactuals(spec, cases, calls, namespace, _failing(first))


def judge(spec: AssignmentSpec, cases: list[Case], calls: dict[str, list[Call]],
          namespace: dict[str, Any], public: bool = False,
          first: dict[str, list[TestResult]] | None = None) -> list[TestResult]:
    """Every test of the assignment, in spec order.

    `calls` holds the graded calls and, under the keys `counterfactuals` names, the second calls
    that can excuse a function's wrong cases (grader.judge.credit). `public` judges without the
    answer key (`namespace` is then the student handout's): only the worked examples, against
    the spec's published answers, and the finite-difference and property checks run; nothing
    is excused. `first`, the `first_pass` the second calls were planned from, spares making it
    again; a public judgement has none.
    """
    if first is None:
        first = first_pass(spec, cases, calls, namespace, public)
    tests = dict(first)
    # Functions that, called again with correct dependencies, still went wrong somewhere.
    wrong_anyway: set[str] = set()
    if not public:
        for plan in plan_counterfactuals(spec, cases, calls, namespace, _failing(tests)):
            f = spec.function(plan.function)
            found = credit(spec, f, cases, calls, namespace, plan)
            if found.excused:
                tests[f.name] = _function_tests(spec, f, cases, calls, namespace, False,
                                                found.excused)
            if found.still_wrong:
                wrong_anyway.add(f.name)
    failing = _failing(tests)
    return [t for f in spec.functions
            for t in _after_failing_calls(f, tests[f.name], failing, f.name in wrong_anyway)]


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
        f_tests.append(_with_note(t, credit_note(f, excused, scope, SET_WORDS[case_set])))
    hidden = [i for i, c in enumerate(cases) if not c.visible]
    note = credit_note(f, excused, hidden, hidden_words(spec))
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
    return diagnosed(spec, f, f_tests, [cases[i] for i in kept],
                      [calls[f.name][i] for i in kept], namespace)


def _failing(tests: dict[str, list[TestResult]]) -> set[str]:
    return {name for name, ts in tests.items() if any(t.status is not TestStatus.PASSED
                                                      for t in ts)}


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
            else t.model_copy(update={"feedback": sentences(t.feedback, note)})
            for t in f_tests]


def _with_note(t: TestResult, note: str) -> TestResult:
    if not note or t.status is not TestStatus.PASSED:
        return t
    return t.model_copy(update={"feedback": f"{t.feedback}{note}"})
