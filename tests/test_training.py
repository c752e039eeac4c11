"""training_and_gradient_check: function arguments, tuple results, repeat checks, real kernels.

The shipped solution and the blank student notebook are covered by tests/test_assignments.py;
here each submission is correct except for one typical mistake.
"""

from __future__ import annotations

import numpy as np
import pytest

from grader.judge.cases import make_cases
from grader.judge.reference import reference_namespace
from grader.report import Report, TestStatus
from grader.run.channel import literal
from grader.spec import code, find_spec
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

# A hand-built XOR network: hidden unit 1 is OR, unit 2 is AND, the output OR and not AND.
HAND_BUILT = (
    "W1 = np.array([[20.0, 20.0], [20.0, 20.0]])\n"
    "b1 = np.array([[-10.0], [-30.0]])\n"
    "W2 = np.array([[20.0, -20.0]])\n"
    "b2 = np.array([[-10.0]])\n"
    "return {'W1': W1, 'b1': b1, 'W2': W2, 'b2': b2}, [0.7, 0.3, 0.01]")
# The same network, padded to `hidden` units with units that do nothing, its output flipped
# where the targets are XNOR, and a made-up history of `epochs` falling costs that ends at its
# cost: it follows X, Y, hidden and epochs, and still learns nothing.
HAND_BUILT_TO_FIT = (
    "W1 = np.zeros((hidden, 2)); W1[:2] = 20.0\n"
    "b1 = np.zeros((hidden, 1)); b1[:2, 0] = [-10.0, -30.0]\n"
    "W2 = np.zeros((1, hidden)); W2[0, :2] = [20.0, -20.0]\n"
    "b2 = np.array([[-10.0]])\n"
    "if Y[0, np.flatnonzero(X.sum(axis=0) == 0)[0]] > 0.5:\n"
    "    W2, b2 = -W2, -b2\n"
    "params = {'W1': W1, 'b1': b1, 'W2': W2, 'b2': b2}\n"
    "return params, list(np.geomspace(0.7, cost(forward(X, **params)[3], Y), epochs))")

VARIANTS = {
    "correct": {},
    "forward_difference": {"numerical_gradient": CENTRAL.replace(
        "down = f((flat - step).reshape(x.shape))", "down = f(flat.reshape(x.shape))").replace(
        "/ (2 * h)", "/ h")},
    # A step of its own, much smaller than h: nearly the derivative, not the difference quotient
    # that h gives.
    "own_step": {"numerical_gradient": CENTRAL.replace("step[i] = h", "step[i] = 1e-5").replace(
        "/ (2 * h)", "/ (2 * 1e-5)")},
    # Gradient ascent: the cost climbs, so nothing is learned.
    "does_not_learn": {"train": TRAIN.replace("- learning_rate", "+ learning_rate")},
    # Each call draws other weights (as with the global np.random state), yet the test stays
    # deterministic: the n-th call of the run uses seed + n.
    "unseeded": {"train": TRAIN.replace(
        "rng = np.random.default_rng(seed)",
        "train.calls = getattr(train, 'calls', 0) + 1\n"
        "rng = np.random.default_rng(seed + train.calls)")},
    "params_only": {"train": TRAIN.replace(", history", "")},
    "hand_built": {"train": HAND_BUILT},
    "hand_built_to_fit": {"train": HAND_BUILT_TO_FIT},
    # The notebook's own rate, whatever the caller asks for.
    "own_learning_rate": {"train": TRAIN.replace("learning_rate", "2.0")},
    "own_epochs": {"train": TRAIN.replace("range(epochs)", "range(3000)")},
    # Trains on the notebook's global X and Y (its XOR data), not on the arguments.
    "global_data": {"train": "X, Y = globals()['X'], globals()['Y']\n" + TRAIN},
    # An honest slip: each cost is recorded after its update instead of before.
    "cost_after_update": {"train": TRAIN.replace(
        "    history.append(cost(A2, Y))\n", "").replace(
        "return {", "    history.append(cost(forward(X, W1, b1, W2, b2)[3], Y))\nreturn {")},
    "nan": {"train": TRAIN.replace("return {'W1': W1", "W1 = W1 * np.nan\nreturn {'W1': W1")},
}

TRAIN_CHECKS = {
    "the parameters have the shapes hidden asks for", "one cost is recorded per epoch",
    "the cost history goes down", "the trained network reaches a low cost",
    "the trained network classifies its four examples", "the same seed gives the same result",
    "another seed gives another network",
    "the costs follow gradient descent from the initial network"}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Every variant graded once, two kernels at a time."""
    folder = tmp_path_factory.mktemp("training")
    paths = {name: submission(folder, name, bodies=bodies, notebook=NOTEBOOK, correct=CORRECT)
             for name, bodies in VARIANTS.items()}

    return dict(zip(paths, grade_all(list(paths.values()), SPEC, 5), strict=True))


def _tests(report: Report, function: str) -> dict[str, TestStatus]:
    return {t.name.split(": ", 1)[1]: t.status for t in report.tests if t.function == function}


def _failing(report: Report, function: str) -> set[str]:
    return {name for name, status in _tests(report, function).items()
            if status is not TestStatus.PASSED}


def test_correct_student_code_scores_full_marks(reports):
    report = reports["correct"]
    assert report.score == report.max_score == SPEC.max_score, report.tests
    assert not report.cells
    assert set(_tests(report, "train")) == TRAIN_CHECKS


def test_forward_differences_fail_the_tolerance_and_are_named(reports):
    report = reports["forward_difference"]
    only_loses(report, "numerical_gradient")
    tests = _tests(report, "numerical_gradient")
    assert tests["equals the central difference of a known function"] is TestStatus.FAILED
    assert tests["examples"] is TestStatus.FAILED
    assert "numerical_gradient.forward_difference" in {t.mistake for t in report.tests}


def test_a_gradient_that_ignores_its_step_fails_every_hidden_case_and_is_named(reports):
    # With the notebook's step (the worked examples) a tiny step agrees within the tolerance;
    # the hidden cases' steps of 0.1 to 0.5 show the difference.
    report = reports["own_step"]
    only_loses(report, "numerical_gradient")
    assert _failing(report, "numerical_gradient") == {
        "scalar", "vector", "matrix", "equals the central difference of a known function"}
    assert "numerical_gradient.own_step" in {t.mistake for t in report.tests}


def test_a_train_that_does_not_learn_fails_every_learning_property(reports):
    report = reports["does_not_learn"]
    only_loses(report, "train")
    # Its costs end in nan (0 log 0 once the output saturates), which no check accepts, not
    # even the repeat check that the same nan twice would satisfy.
    assert {"the cost history goes down", "the trained network reaches a low cost",
            "the trained network classifies its four examples",
            "the costs follow gradient descent from the initial network",
            "the same seed gives the same result"} <= _failing(report, "train")


def test_a_train_that_ignores_its_seed_fails_the_checks_that_need_it(reports):
    # Calls with the same seed start from other weights: not repeatable, and the run cannot be
    # followed from the initial network a learning rate of 0 returns.
    assert _failing(reports["unseeded"], "train") == {
        "the same seed gives the same result",
        "the costs follow gradient descent from the initial network"}


def test_a_result_of_the_wrong_form_fails_the_properties_without_crashing(reports):
    report = reports["params_only"]
    only_loses(report, "train")
    tests = _tests(report, "train")
    assert tests["the cost history goes down"] is TestStatus.FAILED
    assert tests["the trained network reaches a low cost"] is TestStatus.FAILED
    assert tests["another seed gives another network"] is TestStatus.FAILED


def test_a_hand_built_network_fails_every_check_of_what_train_computes(reports):
    # It ignores hidden, epochs, seed, the learning rate and the data. Only a falling history
    # and a deterministic answer are left to it.
    report = reports["hand_built"]
    only_loses(report, "train")
    assert _failing(report, "train") == TRAIN_CHECKS - {
        "the cost history goes down", "the same seed gives the same result"}
    assert report.function_scores()["train"] == (2, 8)


def test_a_hand_built_network_that_fits_the_arguments_fails_the_calls_with_other_ones(reports):
    # Right shapes, one made-up cost per epoch, the right function learned: only calling again
    # with another seed, or with a learning rate of 0, shows that nothing was trained.
    assert _failing(reports["hand_built_to_fit"], "train") == {
        "another seed gives another network",
        "the costs follow gradient descent from the initial network"}


def test_a_train_that_ignores_its_learning_rate_fails_the_gradient_descent_check(reports):
    report = reports["own_learning_rate"]
    only_loses(report, "train")
    assert _failing(report, "train") == {
        "the costs follow gradient descent from the initial network"}


def test_a_train_that_ignores_its_epochs_records_the_wrong_number_of_costs(reports):
    assert _failing(reports["own_epochs"], "train") == {"one cost is recorded per epoch"}


def test_a_train_that_reads_the_notebooks_data_learns_the_wrong_function(reports):
    # The notebook's global X and Y are XOR in its order; the hidden cases reorder the inputs
    # and ask for XNOR too.
    assert _failing(reports["global_data"], "train") == {
        "the trained network reaches a low cost",
        "the trained network classifies its four examples",
        "the costs follow gradient descent from the initial network"}


def test_costs_recorded_after_the_update_are_charged_once(reports):
    assert _failing(reports["cost_after_update"], "train") == {
        "the costs follow gradient descent from the initial network"}


def test_nan_weights_satisfy_no_comparison_between_calls(reports):
    # "Not close to the other seed's network" is true of nan; it is still no evidence.
    tests = _tests(reports["nan"], "train")
    assert tests["another seed gives another network"] is TestStatus.FAILED
    assert tests["the costs follow gradient descent from the initial network"] is (
        TestStatus.FAILED)


def test_a_code_argument_is_the_same_function_in_the_kernel_and_in_the_grader():
    f = code("lambda x: np.sum(np.sin(x)) + x @ A @ x", A=np.eye(2))
    kind, source, constants = eval(literal(f))
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
            assert literal(case.variables[name]) == str(case.variables[name])
