"""Credit through a dependency, on counterfactual evidence only; values no check can pass.

A function that calls another student function keeps its points on a case it got wrong only when,
called again in the student's kernel with a correct stand-in for that dependency, it calls the
stand-in on the probe's arguments and returns the right value. The grader decides all of it from
values. Each notebook below is an attack that earned points before, or honest work that must keep
its points.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from grader.judge import judging
from grader.judge.cases import call_args, make_cases
from grader.judge.judging import counterfactuals, first_pass, judge
from grader.judge.reference import reference_namespace
from grader.report import Report, TestKind, TestStatus
from grader.wire import Array, Call, Number, StandInCall, changed_arguments
from tests.notebooks import grade_all, submission

CORRECT_SIGMOID_PRIME = "s = sigmoid(z)\nreturn s * (1 - s)"


def _scores(report: Report) -> dict[str, float]:
    return {f: score for f, (score, _top) in report.function_scores().items()}


def _full(report: Report, function: str) -> bool:
    score, top = report.function_scores()[function]
    return score == top


def _tests(report: Report, function: str) -> list:
    return [t for t in report.tests if t.function == function]


# --- attacks that bought points ---------------------------------------------------------------

def test_functions_that_return_zeros_earn_nothing_but_their_correct_update(tmp_path, grade):
    # With a zero sigmoid_prime the right delta formulas are zero too: that once excused both
    # deltas on every case. Called again with a correct sigmoid_prime, they are still zero.
    report = grade(submission(tmp_path, complete=False, bodies={
        "sigmoid_prime": "return 0 * z",
        "delta2": "return 0 * z2",
        "delta1": "return 0 * z1",
        "update": "return w - learning_rate * grad",
    }))
    assert _scores(report) == {"sigmoid_prime": 0, "delta2": 0, "delta1": 0, "update": 5}
    assert report.score == 5
    assert not any("your own sigmoid_prime" in t.feedback for t in report.tests)


@pytest.mark.parametrize("bodies", [
    pytest.param({"sigmoid_prime": "return z * np.nan", "delta2": "return z2 * np.nan",
                  "delta1": "return z1 * np.nan", "update": "return w * np.nan"}, id="nan"),
    # An infinite step against the gradient drives the cost down: the descent property held.
    pytest.param({"sigmoid_prime": "return z * np.inf", "delta2": "return z2 * np.inf",
                  "delta1": "return z1 * np.inf", "update": "return w - np.inf * grad"},
                 id="inf"),
])
def test_nan_and_infinite_results_pass_no_check(tmp_path, grade, bodies):
    report = grade(submission(tmp_path, complete=False, bodies=bodies))
    assert report.score == 0, [(t.name, t.feedback) for t in report.tests if t.score]
    assert not any("every hidden case" in t.feedback for t in report.tests)
    for t in report.tests:
        if t.kind is not TestKind.REFERENCE:
            assert "nan or an infinity" in t.feedback, t


def test_a_delta2_that_raises_the_same_error_as_its_dependency_without_calling_it_is_not_excused(
        tmp_path, grade):
    # sigmoid_prime and delta2 both use math.exp, so both raise the same TypeError on arrays;
    # delta2 never calls sigmoid_prime. delta1 does, and is right: it keeps everything.
    report = grade(submission(tmp_path, bodies={
        "sigmoid_prime": "import math\ns = 1 / (1 + math.exp(-z))\nreturn s * (1 - s)",
        "delta2": "import math\ns = 1 / (1 + math.exp(-z2))\nreturn (y_hat - y) * s * (1 - s)",
    }))
    delta2 = {t.name: t for t in _tests(report, "delta2")}
    assert delta2["delta2: scalar"].status is TestStatus.PASSED
    for name in ("delta2: vector", "delta2: matrix", "delta2: delta2 matches the numerical dC/db2"):
        assert delta2[name].score == 0
        assert "delta2 still did not compute the right value" in delta2[name].feedback
    assert _scores(report)["delta2"] == 1
    assert _full(report, "delta1") and _full(report, "update")
    assert "your own sigmoid_prime" in next(t for t in _tests(report, "delta1")
                                            if t.name == "delta1: matrix").feedback


def test_an_object_equal_to_everything_excuses_nothing(tmp_path, grade):
    # On arrays sigmoid_prime returns an object whose __eq__ always says True; delta2 raises
    # there. Once delta2 was excused for "raising because its dependency gave no number".
    anything = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
                "    def __array__(self, *args, **kwargs):\n        return np.asarray(0.25)\n")
    report = grade(submission(tmp_path, cells_before=[anything], bodies={
        "sigmoid_prime": f"if np.ndim(z):\n    return Anything()\n{CORRECT_SIGMOID_PRIME}",
        "delta2": "if np.ndim(z2):\n    raise RuntimeError('no')\n"
                  "return (y_hat - y) * sigmoid_prime(z2)",
    }))
    assert _scores(report)["delta2"] == 1  # the hidden scalar cases, which it gets right
    # delta1 is right and calls the liar: with a correct sigmoid_prime it gives the right value.
    assert _full(report, "delta1")


def test_a_dependency_called_on_other_values_is_no_evidence(tmp_path, grade):
    # The stand-in answers sigmoid_prime(z2) whatever it is given, so this delta2 returns the
    # right value when called again; but it called sigmoid_prime on y_hat, not on z2.
    report = grade(submission(tmp_path, bodies={
        "sigmoid_prime": "return sigmoid(z)",
        "delta2": "return (y_hat - y) * sigmoid_prime(y_hat)",
    }))
    assert _scores(report)["delta2"] == 0
    assert _full(report, "delta1") and _full(report, "update")


def test_a_dependency_of_exact_looking_values_does_not_loosen_the_tolerance(tmp_path, grade):
    # 0.25 survives a float16 round trip, which once judged delta2 at float16's precision: a
    # delta2 one percent off passed. Precision comes from a dtype, and a wrong delta2 stays
    # wrong with a correct sigmoid_prime.
    report = grade(submission(tmp_path, bodies={
        "sigmoid_prime": "return 0.25 + 0 * z",
        "delta2": "return 1.01 * (y_hat - y) * sigmoid_prime(z2)",
    }))
    assert _scores(report)["delta2"] == 0
    assert _full(report, "delta1")


def test_detecting_the_stand_in_and_keeping_state_earn_nothing(tmp_path, grade):
    # Once it sees a sigmoid_prime that is not its own, delta2 calls it on z2 as it should but
    # answers with what it returned when graded; delta1 answers with the stand-in's own value.
    # Neither is the right value, so neither is excused.
    report = grade(submission(tmp_path, cells_before=["_mine = {}\n_seen = {}"],
                              extra_cells=["_mine['sigmoid_prime'] = sigmoid_prime"], bodies={
        "sigmoid_prime": "return 0 * z",
        "delta2": ("key = repr(np.asarray(z2).tolist())\n"
                   "if sigmoid_prime is not _mine.get('sigmoid_prime'):\n"
                   "    sigmoid_prime(z2)\n"
                   "    return _seen[key]\n"
                   "_seen[key] = 0 * z2\n"
                   "return _seen[key]"),
        "delta1": "return sigmoid_prime(z1)",
    }))
    assert _scores(report) == {"sigmoid_prime": 0, "delta2": 0, "delta1": 0, "update": 5}


def test_an_argument_changed_in_place_is_seen_whatever_the_kernels_numpy_says(tmp_path, grade):
    report = grade(submission(tmp_path, cells_before=["np.array_equal = lambda *a, **k: True"],
                              bodies={"update": "w -= learning_rate * grad\nreturn w"}))
    update = {t.name: t for t in _tests(report, "update")}
    for name in ("update: examples", "update: vector", "update: matrix"):
        assert update[name].status is TestStatus.FAILED
        assert "changed its first argument in place" in update[name].feedback
    assert update["update: scalar"].status is TestStatus.PASSED  # a float cannot change


# --- honest work next to a broken dependency ---------------------------------------------------

BROKEN_SIGMOID_PRIMES = {
    "wrong formula": "return z * (1 - z)",
    "no return": "s = sigmoid(z)\ns * (1 - s)",
    "nan": "return z * np.nan",
    "scalars only": "import math\ns = 1 / (1 + math.exp(-z))\nreturn s * (1 - s)",
    # Right for its first graded calls, wrong from then on: delta2 and delta1 see only wrong
    # values, and sigmoid_prime loses points on its own.
    "stateful": ("sigmoid_prime.calls = getattr(sigmoid_prime, 'calls', 0) + 1\n"
                 "if sigmoid_prime.calls > 3:\n    return 0.9 * z\n" + CORRECT_SIGMOID_PRIME),
}


@pytest.fixture(scope="module")
def broken_dependency(tmp_path_factory) -> dict[str, Report]:
    """A correct delta2, delta1 and update next to each broken sigmoid_prime, and next to a stub."""
    from grader.spec import find_spec

    spec = find_spec("derivative_calculation")
    folder = tmp_path_factory.mktemp("broken")
    paths = {name: submission(folder, name.replace(" ", "_"), bodies={"sigmoid_prime": body})
             for name, body in BROKEN_SIGMOID_PRIMES.items()}
    stub = submission(folder, "stub", complete=False, bodies={
        f: body for f, body in
        {"delta2": "return (y_hat - y) * sigmoid_prime(z2)",
         "delta1": "return delta2 * w2 * sigmoid_prime(z1)",
         "update": "return w - learning_rate * grad"}.items()})
    paths["stub"] = stub
    return dict(zip(paths, grade_all(list(paths.values()), spec, 7), strict=True))


@pytest.mark.parametrize("name", [*BROKEN_SIGMOID_PRIMES, "stub"])
def test_a_correct_delta2_next_to_a_broken_sigmoid_prime_keeps_all_its_points(
        broken_dependency, name):
    report = broken_dependency[name]
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] < scores["sigmoid_prime"][1]
    for function in ("delta2", "delta1", "update"):
        assert scores[function][0] == scores[function][1], (function, _tests(report, function))
    credited = [t for t in report.tests if t.function in ("delta2", "delta1")
                and "called again with a correct sigmoid_prime" in t.feedback]
    assert credited
    assert all("your own sigmoid_prime" in t.feedback for t in credited)


def test_each_function_is_judged_once_before_credit_and_off_the_event_loop(
        tmp_path, grade, spec, monkeypatch):
    # delta2 is excused through its wrong sigmoid_prime: judged once before the second calls
    # are planned, and again only with its excused cases.
    judged: list[tuple[str, bool]] = []
    function_tests = judging._function_tests

    def counted(spec, f, *args):
        judged.append((f.name, threading.current_thread() is threading.main_thread()))
        return function_tests(spec, f, *args)

    monkeypatch.setattr(judging, "_function_tests", counted)
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": "return z * (1 - z)"}))
    assert any("called again" in t.feedback for t in _tests(report, "delta2"))
    names = [name for name, _ in judged]
    assert sorted(names) == sorted([f.name for f in spec.functions] + ["delta2", "delta1"])
    assert not any(on_loop for _, on_loop in judged)


def test_a_self_check_without_the_answer_key_excuses_nothing(tmp_path, grade):
    path = submission(tmp_path, bodies={"sigmoid_prime": "return z * (1 - z)"})
    public = grade(path, public=True)
    assert public.mode == "public"
    delta2 = {t.name: t for t in _tests(public, "delta2")}
    assert delta2["delta2: delta2 matches the numerical dC/db2"].status is TestStatus.FAILED
    assert not any("called again" in t.feedback for t in public.tests)


# --- the judge's decisions, on plain values ----------------------------------------------------

def _number_or_array(value, dtype: str | None = None) -> Number | Array:
    array = np.asarray(value, dtype=np.float64)
    name = dtype or "float64"
    if array.ndim == 0:
        return Number(kind="number", type="float", dtype=name, value=float(array))
    return Array(kind="array", type="ndarray", dtype=name, shape=list(array.shape),
                 data=[float(v) for v in array.ravel()])


@pytest.fixture(scope="module")
def setting(spec):
    """Cases and graded calls where sigmoid_prime and delta2 are wrong (delta2 right on the
    first case), and the plan of delta2's second calls."""
    namespace = reference_namespace(spec)
    cases = make_cases(spec, namespace, 3)
    right = {f.name: namespace[f.name] for f in spec.functions}
    calls = {f.name: [Call(outcome=_number_or_array(right[f.name](
        *call_args(spec, f.name, c)))) for c in cases] for f in spec.functions}
    calls["sigmoid_prime"] = [Call(outcome=_number_or_array(0.5 * c.variables["z1"]))
                              for c in cases]
    # Right on the first case only.
    calls["delta2"] = calls["delta2"][:1] + [
        Call(outcome=_number_or_array(0.5 * c.variables["y_hat"])) for c in cases[1:]]
    plan = next(p for p in counterfactuals(spec, cases, calls, namespace)
                if p.function == "delta2")
    return namespace, cases, calls, plan

class TestEvidence:
    """delta2 is wrong when graded (its sigmoid_prime is); what its second calls must show."""

    def _delta2_score(self, spec, setting, second) -> float:
        namespace, cases, calls, plan = setting
        observed = [second(cases[r.case]) for r in plan.retries]
        tests = judge(spec, cases, calls | {plan.key: observed}, namespace)
        return sum(t.score for t in tests if t.function == "delta2")

    @staticmethod
    def _right(case) -> float:
        v = case.variables
        s = 1 / (1 + np.exp(-v["z2"]))
        return (v["y_hat"] - v["y"]) * s * (1 - s)

    def _called_on(self, case, argument, dtype=None, result=None) -> Call:
        return Call(outcome=_number_or_array(self._right(case) if result is None else result),
                    stand_in_calls=[StandInCall(function="sigmoid_prime", arguments=[
                        _number_or_array(argument, dtype)])])

    def test_every_wrong_case_is_called_again_and_only_those(self, spec, setting):
        _namespace, cases, _calls, plan = setting
        assert [r.case for r in plan.retries] == list(range(1, len(cases)))
        assert plan.dependencies == ("sigmoid_prime",)

    def test_the_right_value_from_the_stand_in_on_the_probes_arguments_is_evidence(
            self, spec, setting):
        full = spec.function("delta2").max_score
        assert self._delta2_score(spec, setting, lambda c: self._called_on(
            c, c.variables["z2"])) == full

    def test_an_argument_passed_on_as_float32_is_the_same_argument(self, spec, setting):
        full = spec.function("delta2").max_score
        assert self._delta2_score(spec, setting, lambda c: self._called_on(
            c, np.float32(c.variables["z2"]), "float32")) == full

    @pytest.mark.parametrize("second", [
        pytest.param(lambda self, c: Call(outcome=_number_or_array(self._right(c))),
                     id="never-called"),
        pytest.param(lambda self, c: self._called_on(c, c.variables["z2"] * (1 + 1e-9)),
                     id="other-values"),
        # float32 rounding claimed for float64 values off by more than float64 rounding.
        pytest.param(lambda self, c: self._called_on(c, c.variables["z2"] * (1 + 1e-7)),
                     id="float64-off"),
        pytest.param(lambda self, c: self._called_on(c, c.variables["z2"],
                                                     result=1.01 * self._right(c)),
                     id="still-wrong"),
        pytest.param(lambda self, c: self._called_on(c, c.variables["z2"],
                                                     result=np.nan * self._right(c)),
                     id="nan"),
        pytest.param(lambda self, c: Call(
            outcome=_number_or_array(self._right(c)), stand_in_overflow=True,
            stand_in_calls=self._called_on(c, c.variables["z2"]).stand_in_calls),
            id="calls-past-the-record"),
        pytest.param(lambda self, c: Call(outcome=_number_or_array(self._right(c)), mutated=[0],
                                          stand_in_calls=self._called_on(
                                              c, c.variables["z2"]).stand_in_calls),
                     id="changed-its-argument"),
    ])
    def test_no_evidence(self, spec, setting, second):
        assert self._delta2_score(spec, setting, lambda c: second(self, c)) == 0

    def test_the_first_pass_given_to_the_judge_changes_nothing(self, spec, setting):
        namespace, cases, calls, plan = setting
        observed = calls | {plan.key: [self._called_on(cases[r.case], cases[r.case].variables[
            "z2"]) for r in plan.retries]}
        first = first_pass(spec, cases, calls, namespace)

        def retried(given):
            return [(p.key, [r.case for r in p.retries])
                    for p in counterfactuals(spec, cases, calls, namespace, given)]

        assert retried(first) == retried(None)
        assert (judge(spec, cases, observed, namespace, first=first)
                == judge(spec, cases, observed, namespace))

    def test_without_second_calls_nothing_is_excused(self, spec, setting):
        namespace, cases, calls, _plan = setting
        tests = judge(spec, cases, calls, namespace)
        assert sum(t.score for t in tests if t.function == "delta2") == 0

    def test_a_dependency_that_lost_no_points_is_never_replaced(self, spec, setting):
        namespace, cases, calls, _plan = setting
        right = {f.name: namespace[f.name] for f in spec.functions}
        honest = calls | {"sigmoid_prime": [Call(outcome=_number_or_array(
            right["sigmoid_prime"](c.variables["z1"]))) for c in cases]}
        assert counterfactuals(spec, cases, honest, namespace) == []


def test_the_grader_decides_which_arguments_changed():
    w = np.array([0.5, -1.0])
    params = {"W": np.array([[1.0, 2.0]]), "n": 3}
    same = [_number_or_array(w), None, None]
    assert changed_arguments([w, 0.1, 0.2], same) == []
    assert changed_arguments([w, 0.1, 0.2], [_number_or_array(w - 0.1), None, None]) == [0]
    assert changed_arguments([w, 0.1, 0.2], []) == [0]  # not sent back: changed
    assert changed_arguments([w], [_number_or_array(w.reshape(2, 1))]) == [0]
    from grader.wire import DictValue

    back = DictValue(kind="dict", type="dict", entries={
        "W": _number_or_array(params["W"]), "n": _number_or_array(3.0)})
    assert changed_arguments([params], [back]) == []
    grown = DictValue(kind="dict", type="dict", entries={**back.entries,
                                                         "extra": _number_or_array(1.0)})
    assert changed_arguments([params], [grown]) == [0]
