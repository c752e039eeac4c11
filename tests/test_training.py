"""training_and_gradient_check: function arguments, tuple results, repeat checks, real kernels.

The shipped solution and the blank student notebook are covered by tests/test_assignments.py;
here each submission is correct except for one typical mistake.
"""

from __future__ import annotations

import numpy as np
import pytest

from grader.cases import code, make_cases
from grader.reference import reference_namespace
from grader.report import Report, TestStatus
from grader.runner import _literal
from grader.spec import find_spec
from tests.notebooks import ROOT, grade_all, only_loses, submission

SPEC = find_spec("training_and_gradient_check")
NOTEBOOK = ROOT / "assignments" / "training_and_gradient_check.ipynb"

# Correct bodies, written the way a student would (not copied from the solution).
CENTRAL = (
    "grad = np.zeros(x.shape)\n"
    "flat = x.reshape(-1).astype(float)\n"
    "for i in range(flat.size):\n"
    "    step = np.zeros(flat.size)\n"
    "    step[i] = h\n"
    "    up = f((flat + step).reshape(x.shape))\n"
    "    down = f((flat - step).reshape(x.shape))\n"
    "    grad.reshape(-1)[i] = (up - down) / (2 * h)\n"
    "return grad")
TRAIN = (
    "rng = np.random.default_rng(seed)\n"
    "W1 = rng.standard_normal((hidden, X.shape[0])); b1 = np.zeros((hidden, 1))\n"
    "W2 = rng.standard_normal((1, hidden)); b2 = np.zeros((1, 1))\n"
    "m = X.shape[1]\n"
    "history = []\n"
    "for epoch in range(epochs):\n"
    "    Z1, A1, Z2, A2 = forward(X, W1, b1, W2, b2)\n"
    "    history.append(cost(A2, Y))\n"
    "    d2 = A2 - Y\n"
    "    d1 = W2.T @ d2 * sigmoid_prime(Z1)\n"
    "    W2 = W2 - learning_rate * (d2 @ A1.T) / m\n"
    "    b2 = b2 - learning_rate * d2.mean(axis=1, keepdims=True)\n"
    "    W1 = W1 - learning_rate * (d1 @ X.T) / m\n"
    "    b1 = b1 - learning_rate * d1.mean(axis=1, keepdims=True)\n"
    "return {'W1': W1, 'b1': b1, 'W2': W2, 'b2': b2}, history")
CORRECT = {"numerical_gradient": CENTRAL, "train": TRAIN}

VARIANTS = {
    "correct": {},
    "forward_difference": {"numerical_gradient": CENTRAL.replace(
        "down = f((flat - step).reshape(x.shape))", "down = f(flat.reshape(x.shape))").replace(
        "/ (2 * h)", "/ h")},
    # Gradient ascent: the cost climbs, so nothing is learned.
    "does_not_learn": {"train": TRAIN.replace("- learning_rate", "+ learning_rate")},
    # Each call draws other weights (as with the global np.random state), yet the test stays
    # deterministic: the n-th call of the run uses seed + n.
    "unseeded": {"train": TRAIN.replace(
        "rng = np.random.default_rng(seed)",
        "train.calls = getattr(train, 'calls', 0) + 1\n"
        "rng = np.random.default_rng(seed + train.calls)")},
    "params_only": {"train": TRAIN.replace(", history", "")},
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Every variant graded once, two kernels at a time."""
    folder = tmp_path_factory.mktemp("training")
    paths = {name: submission(folder, name, bodies=bodies, notebook=NOTEBOOK, correct=CORRECT)
             for name, bodies in VARIANTS.items()}

    return dict(zip(paths, grade_all(list(paths.values()), SPEC, 5), strict=True))


def _tests(report: Report, function: str) -> dict[str, TestStatus]:
    return {t.name.split(": ", 1)[1]: t.status for t in report.tests if t.function == function}


def test_correct_student_code_scores_full_marks(reports):
    report = reports["correct"]
    assert report.score == report.max_score == SPEC.max_score, report.tests
    assert not report.cells


def test_forward_differences_fail_the_tolerance_and_are_named(reports):
    report = reports["forward_difference"]
    only_loses(report, "numerical_gradient")
    tests = _tests(report, "numerical_gradient")
    assert tests["matches the analytic gradient of a known function"] is TestStatus.FAILED
    assert tests["examples"] is TestStatus.FAILED
    assert "numerical_gradient.forward_difference" in {t.mistake for t in report.tests}


def test_a_train_that_does_not_learn_fails_every_learning_property(reports):
    report = reports["does_not_learn"]
    only_loses(report, "train")
    tests = _tests(report, "train")
    for name in ("the cost history goes down", "the trained network reaches a low cost",
                 "the trained network classifies XOR"):
        assert tests[name] is TestStatus.FAILED, name
    # Its costs climb to infinity, and no check passes on an infinite value, not even the
    # repeat check that the same infinity twice would satisfy.
    assert tests["the same seed gives the same result"] is TestStatus.FAILED
    assert all("nan or an infinity" in t.feedback for t in report.tests if t.function == "train")


def test_a_train_that_ignores_its_seed_fails_the_repeat_check_only(reports):
    report = reports["unseeded"]
    tests = _tests(report, "train")
    assert tests["the same seed gives the same result"] is TestStatus.FAILED
    assert [name for name, status in tests.items() if status is not TestStatus.PASSED] == [
        "the same seed gives the same result"]


def test_a_result_of_the_wrong_form_fails_the_properties_without_crashing(reports):
    report = reports["params_only"]
    only_loses(report, "train")
    tests = _tests(report, "train")
    assert tests["the cost history goes down"] is TestStatus.FAILED
    assert tests["the trained network reaches a low cost"] is TestStatus.FAILED


def test_a_code_argument_is_the_same_function_in_the_kernel_and_in_the_grader():
    f = code("lambda x: np.sum(np.sin(x)) + x @ A @ x", A=np.eye(2))
    kind, source, constants = eval(_literal(f))
    assert kind == "code" and source == f.source
    scope = {"np": np} | {k: np.array(v) for k, v in constants.items()}
    in_kernel = eval(source, scope)
    x = np.array([0.3, -1.2])
    assert in_kernel(x) == f(x) == pytest.approx(np.sum(np.sin(x)) + x @ x)


def test_spec_ints_reach_the_kernel_as_ints():
    cases = make_cases(SPEC, reference_namespace(SPEC), seed=3)
    for case in cases:
        for name in ("hidden", "epochs", "seed"):
            assert type(case.variables[name]) is int, (case.label, name)
            assert _literal(case.variables[name]) == str(case.variables[name])
