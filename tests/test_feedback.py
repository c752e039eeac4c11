"""Feedback that teaches: named misconceptions, no double penalty, a self-check without the key."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from grader.cli import main
from grader.judge.cases import make_cases
from grader.judge.expressions import evaluate
from grader.judge.reference import handout_namespace, reference_namespace
from grader.report import Report, TestStatus
from tests.notebooks import ROOT, submission

# One submission per catalogue entry, written the way a student who holds the misconception
# would write it; every other function is correct.
TRIGGERS: dict[str, dict[str, str]] = {
    "sigmoid_prime.activation_form": {"sigmoid_prime": "return z * (1 - z)"},
    "sigmoid_prime.sigmoid_not_derivative": {"sigmoid_prime": "return sigmoid(z)"},
    "sigmoid_prime.scalar_only": {
        "sigmoid_prime": "import math\ns = 1 / (1 + math.exp(-z))\nreturn s * (1 - s)"},
    "delta2.sign_flipped": {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"},
    "delta2.sigmoid_prime_missing": {"delta2": "return y_hat - y"},
    "delta2.sigmoid_prime_of_y_hat": {"delta2": "return (y_hat - y) * sigmoid_prime(y_hat)"},
    "delta1.w2_missing": {"delta1": "return delta2 * sigmoid_prime(z1)"},
    "delta1.sigmoid_not_derivative": {"delta1": "return delta2 * w2 * sigmoid(z1)"},
    "delta1.slope_of_wrong_quantity": {
        "delta1": "a1 = sigmoid(z1)\nreturn delta2 * w2 * sigmoid_prime(a1)"},
    "update.gradient_ascent": {"update": "return w + learning_rate * grad"},
    "update.learning_rate_ignored": {"update": "return w - grad"},
    "update.fixed_step_size": {"update": "lr = 0.05\nreturn w - lr * grad"},
    "update.scaled_learning_rate": {"update": "return w - learning_rate * grad / 2"},
    "update.in_place_returns_none": {"update": "w -= learning_rate * grad"},
    "inputs.changed_in_place": {"update": "w -= learning_rate * grad\nreturn w"},
    "shape.column": {"update": "return np.reshape(w - learning_rate * grad, (-1, 1))"},
    "shape.batch_summed": {"delta1": "return np.sum(delta2 * w2 * sigmoid_prime(z1))"},
}


def _mistakes(report: Report) -> dict[str, set[str]]:
    """Function -> the mistake ids its tests name."""
    out: dict[str, set[str]] = {}
    for t in report.tests:
        if t.mistake:
            out.setdefault(t.function, set()).add(t.mistake)
    return out


def test_every_catalogue_entry_has_a_triggering_submission(spec):
    ids = {m.id for m in spec.mistakes} | {m.id for f in spec.functions for m in f.mistakes}
    assert ids == set(TRIGGERS)


@pytest.mark.parametrize("mistake", sorted(TRIGGERS))
def test_each_mistake_is_named_and_no_other(mistake, tmp_path, grade, spec):
    bodies = TRIGGERS[mistake]
    report = grade(submission(tmp_path, bodies=bodies))
    (function,) = bodies
    assert _mistakes(report) == {function: {mistake}}
    # A hint may quote what was measured ({value}); the words around it must be there.
    hint = next(m.hint for m in spec.mistakes_for(function) if m.id == mistake)
    hint = max(hint.split("{")[0], hint.split("}")[-1], key=len)
    failing = [t for t in report.tests if t.status is not TestStatus.PASSED]
    assert failing and all(t.function == function for t in failing)
    assert all(t.mistake == mistake and hint in t.feedback for t in failing)


def test_correct_variants_name_no_mistake(tmp_path, grade):
    written_differently = {
        "sigmoid_prime": "return np.exp(-z) / (1 + np.exp(-z)) ** 2",
        "delta2": "return -(y - y_hat) * sigmoid(z2) * (1 - sigmoid(z2))",
        "update": "return w - grad * learning_rate",
    }
    report = grade(submission(tmp_path, bodies=written_differently))
    assert report.score == report.max_score
    assert all(t.mistake is None for t in report.tests)


def test_an_unknown_mistake_is_called_unknown_and_measured(tmp_path, grade):
    report = grade(submission(tmp_path, bodies={
        "delta2": "return 2 * (y_hat - y) * sigmoid_prime(z2)"}))
    delta2 = [t for t in report.tests if t.function == "delta2"]
    assert all(t.status is TestStatus.FAILED and t.mistake is None for t in delta2)
    assert all("matches none of the mistakes" in t.feedback for t in delta2)
    fd = next(t for t in delta2 if "dC/db2" in t.name)
    assert "2 times the true derivative" in fd.feedback


def test_a_wrong_sigmoid_prime_costs_points_once(tmp_path, grade, spec):
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": "return z * (1 - z)"}))
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] == 0
    for name in ("delta2", "delta1", "update"):
        assert scores[name][0] == scores[name][1] == spec.function(name).max_score
    credited = [t for t in report.tests if t.function in ("delta2", "delta1")]
    assert all("your own sigmoid_prime" in t.feedback for t in credited)


def test_a_wrong_delta2_loses_points_with_a_right_or_a_wrong_sigmoid_prime(tmp_path, grade):
    flipped = "return (y - y_hat) * sigmoid_prime(z2)"
    alone = grade(submission(tmp_path, "alone", bodies={"delta2": flipped}))
    both = grade(submission(tmp_path, "both", bodies={
        "delta2": flipped, "sigmoid_prime": "return z * (1 - z)"}))
    for report in (alone, both):
        delta2 = [t for t in report.tests if t.function == "delta2"]
        assert all(t.score == 0 for t in delta2)
        assert not any("your own sigmoid_prime" in t.feedback for t in delta2)
    assert _mistakes(alone) == {"delta2": {"delta2.sign_flipped"}}


def test_example_answers_in_the_spec_are_the_reference_results(spec):
    namespace = reference_namespace(spec)
    examples = [c for c in make_cases(spec, namespace, 0) if c.visible]
    for f in spec.functions:
        for case, answer in zip(examples, spec.example_answers[f.name], strict=True):
            expected = evaluate(f.expected_expression, namespace, **case.variables)
            np.testing.assert_allclose(answer, expected, rtol=1e-12, atol=0)


def test_cases_are_the_same_with_or_without_the_answer_key(spec):
    full = make_cases(spec, reference_namespace(spec), 11)
    public = make_cases(spec, handout_namespace(spec), 11)
    for a, b in zip(full, public, strict=True):
        assert a.variables.keys() == b.variables.keys()
        for name in a.variables:
            np.testing.assert_array_equal(a.variables[name], b.variables[name])


@pytest.fixture
def course_without_solutions(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "assignments", course / "assignments")
    return course


def test_public_self_check_runs_without_solutions_and_agrees_with_the_instructor(
        tmp_path, course_without_solutions, capsys):
    notebook = submission(tmp_path, bodies={"delta2": "return (y - y_hat) * sigmoid_prime(z2)",
                                            "update": "return w - grad"})
    common = ["check", str(notebook), "--assignment", "derivative_calculation", "--json",
              "--seed", "5"]
    assert main([*common, "--course", str(course_without_solutions)]) == 1
    public = Report.model_validate_json(capsys.readouterr().out)
    assert main(common) == 1
    full = Report.model_validate_json(capsys.readouterr().out)
    assert (public.mode, full.mode) == ("public", "full")
    instructor = {t.name: t for t in full.tests}
    assert len(public.tests) < len(full.tests)
    assert public.max_score == sum(t.max_score for t in public.tests)
    for t in public.tests:
        same = instructor[t.name]
        assert (t.status, t.score, t.mistake) == (same.status, same.score, same.mistake)
    assert {t.mistake for t in public.tests} == {None, "delta2.sign_flipped",
                                                 "update.learning_rate_ignored"}


def test_public_flag_grades_without_the_key_even_when_it_is_installed(tmp_path, capsys):
    notebook = submission(tmp_path)
    assert main(["check", str(notebook), "--assignment", "derivative_calculation", "--public",
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "public"
    kinds = {t["kind"] for t in report["tests"]}
    assert kinds == {"reference", "finite_difference", "property"}
    assert all(t["visibility"] == "visible" for t in report["tests"] if t["kind"] == "reference")


def test_check_prints_a_table_with_points_and_hints(tmp_path, capsys):
    notebook = submission(tmp_path, bodies={"update": "return w + learning_rate * grad"})
    assert main(["check", str(notebook), "--assignment", "derivative_calculation"]) == 1
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: plain text
    assert "update  " in out and "✗" in out and "✓" in out
    assert "[update.gradient_ascent]" in out
    assert "Gradient descent steps the opposite way" in out


def test_the_example_class_gets_the_mistakes_its_readme_promises(grade):
    rows = [line.split("|") for line in (ROOT / "examples" / "README.md").read_text().splitlines()
            if line.startswith("| `")]
    assert len(rows) == 10
    for row in rows:
        student, promised = row[1].strip(" `"), row[4].strip(" `")
        report = grade(ROOT / "examples" / "submissions" / f"{student}.ipynb")
        named = {t.mistake for t in report.tests} - {None}
        assert named == ({promised} if promised != "—" else set()), student


def test_failing_together_earns_nothing_without_evidence(tmp_path, grade):
    # Excusing delta2's and delta1's errors through a failing sigmoid_prime would let a student
    # trade sigmoid_prime's points for theirs by making all three fail; called again with a
    # correct sigmoid_prime, they still raise, so nothing is excused.
    report = grade(submission(tmp_path, bodies={
        "sigmoid_prime": "return None",
        "delta2": "raise RuntimeError()",
        "delta1": "raise RuntimeError()",
    }))
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] == scores["delta2"][0] == scores["delta1"][0] == 0
    assert scores["update"][0] == scores["update"][1]
    delta2 = next(t for t in report.tests if t.name == "delta2: scalar")
    assert "called again with a correct sigmoid_prime in its place, delta2 still did not " \
        "compute the right value" in delta2.feedback


def test_an_error_shared_with_a_scalar_only_sigmoid_prime_is_excused(tmp_path, grade):
    # Here the evidence exists: on scalars sigmoid_prime works and delta2 is right.
    body = "import math\ns = 1 / (1 + math.exp(-z))\nreturn s * (1 - s)"
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": body}))
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] < scores["sigmoid_prime"][1]
    for function in ("delta2", "delta1", "update"):
        assert scores[function][0] == scores[function][1], function
    delta2 = next(t for t in report.tests if t.name == "delta2: vector")
    assert "your own sigmoid_prime" in delta2.feedback


def test_a_half_precision_sigmoid_prime_is_charged_once(tmp_path, grade):
    body = "s = sigmoid(np.float16(z))\nreturn s * (1 - s)"
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": body}))
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] < scores["sigmoid_prime"][1]
    assert scores["delta2"][0] == scores["delta2"][1]
    assert scores["delta1"][0] == scores["delta1"][1]


def test_a_hard_coded_number_is_not_called_a_summed_batch(tmp_path, grade):
    report = grade(submission(tmp_path, bodies={"delta2": "return -0.05432"}))
    delta2 = [t for t in report.tests if t.function == "delta2" and t.status != "passed"]
    assert delta2 and all(t.mistake is None for t in delta2)


def test_a_dependent_function_is_pointed_at_the_failing_function_it_calls(tmp_path, grade):
    report = grade(submission(tmp_path, bodies={
        "sigmoid_prime": "return z * (1 - z)",
        "delta2": "return (y - y_hat) * sigmoid_prime(z2)",
    }))
    failing = [t for t in report.tests if t.function == "delta2" and t.status != "passed"]
    assert failing
    assert all("delta2 calls your sigmoid_prime, which fails its own tests" in t.feedback
               for t in failing)


def test_a_notebook_handed_out_for_another_assignment_is_noted(tmp_path, grade):
    other = ROOT / "assignments" / "vectorized_backprop.ipynb"
    path = tmp_path / "wrong_file.ipynb"
    shutil.copy(other, path)
    report = grade(path)
    assert any("'vectorized_backprop'" in note for note in report.notes)
    assert grade(submission(tmp_path)).notes == []


def test_a_sigmoid_prime_that_fails_only_when_probed_excuses_nothing(tmp_path, grade):
    # sigmoid_prime is right when graded on its own and fails only in the calls made on
    # delta2's and delta1's inputs, after delta2 has armed it; delta2 and delta1 know nothing
    # but the worked example's published answers. Nothing may be excused: sigmoid_prime lost
    # no points, and the examples are no evidence.
    helpers = ("_EX_Z1 = 0.8 * 1.5 - 0.2\n_EX_Z2 = 1.2 * sigmoid(_EX_Z1) + 0.1\n"
               "def _is(v, t):\n    return np.ndim(v) == 0 and abs(float(v) - t) < 1e-9")
    report = grade(submission(tmp_path, cells_before=[helpers],
                              extra_cells=["_armed, _delta2_calls = False, 0"],
                              bodies={
        "sigmoid_prime": ("if globals().get('_armed') and not (_is(z, _EX_Z1) or "
                          "_is(z, _EX_Z2)):\n    raise ValueError('x')\n"
                          "s = sigmoid(z)\nreturn s * (1 - s)"),
        # Armed by delta2's third call, its first hidden case: the grader calls every function
        # on its two worked examples first.
        "delta2": ("global _armed, _delta2_calls\n_delta2_calls += 1\n"
                   "_armed = _delta2_calls > 2\n"
                   "if _is(z2, _EX_Z2):\n    return -0.054322464441139987\n"
                   "raise ValueError('x')"),
        "delta1": ("if _is(z1, _EX_Z1):\n    return -0.012816533702282971\n"
                   "raise ValueError('x')"),
    }))
    scores = report.function_scores()
    assert scores["sigmoid_prime"][0] == scores["sigmoid_prime"][1]
    assert scores["delta2"][0] <= 1 and scores["delta1"][0] <= 1  # the worked example, at most
