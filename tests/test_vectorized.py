"""vectorized_backprop: dict values across the kernel boundary, and the slips of batched backprop.

The shipped solution and the blank student notebook are covered by tests/test_assignments.py;
here each submission is correct except for one typical mistake, and only that function may lose
points, with feedback and a recognised misconception that name the mistake.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from grader.report import Report, TestKind, TestStatus
from grader.run.channel import literal
from grader.spec import find_spec
from grader.wire import CallMessage, as_plain
from tests.notebooks import ROOT, grade_all, only_loses, submission

SPEC = find_spec("vectorized_backprop")
NOTEBOOK = ROOT / "assignments" / "vectorized_backprop.ipynb"

# Correct bodies, written the way a student would (not copied from the solution).
CORRECT = {
    "output_error": "return A2 - Y",
    "hidden_error": "return W2.T.dot(delta2) * sigmoid(Z1) * (1 - sigmoid(Z1))",
    "gradients": (
        "m = X.shape[1]\n"
        "dW1 = np.dot(delta1, X.T) / m\n"
        "db1 = delta1.mean(axis=1, keepdims=True)\n"
        "dW2 = np.dot(delta2, A1.T) / m\n"
        "db2 = delta2.mean(axis=1, keepdims=True)\n"
        "return {'dW1': dW1, 'db1': db1, 'dW2': dW2, 'db2': db2}"),
    "update_parameters": (
        "new = {}\n"
        "for key in ['W1', 'b1', 'W2', 'b2']:\n"
        "    new[key] = params[key] - learning_rate * grads['d' + key]\n"
        "return new"),
}

_GRADIENTS_WITH = CORRECT["gradients"].replace
VARIANTS = {
    "correct": {},
    "transposed_dW1": {"gradients": _GRADIENTS_WITH("np.dot(delta1, X.T) / m",
                                                    "np.dot(X, delta1.T) / m")},
    "keepdims_missing": {"gradients": _GRADIENTS_WITH("delta1.mean(axis=1, keepdims=True)",
                                                      "delta1.mean(axis=1)")},
    "sum_not_mean": {"gradients": (
        "return {'dW1': delta1 @ X.T, 'db1': delta1.sum(axis=1, keepdims=True),\n"
        "        'dW2': delta2 @ A1.T, 'db2': delta2.sum(axis=1, keepdims=True)}")},
    "ascent": {"update_parameters": CORRECT["update_parameters"].replace("] - learning", "] + "
                                                                          "learning")},
    # An OrderedDict is a dict: read through dict's own methods, it is graded like one.
    "ordered_dict": {"gradients": "from collections import OrderedDict\n"
                     + _GRADIENTS_WITH("return {", "return OrderedDict({").replace("db2}",
                                                                                   "db2})")},
    # A shallow copy shares its arrays: `-=` on them changes the caller's parameters.
    "shallow_copy": {"update_parameters": (
        "new = params.copy()\n"
        "for key in new:\n"
        "    new[key] -= learning_rate * grads['d' + key]\n"
        "return new")},
    "wrong_keys": {"gradients": _GRADIENTS_WITH("'dW1': dW1", "'W1': dW1")},
    "not_a_dict": {"gradients": _GRADIENTS_WITH("return {'dW1': dW1, 'db1': db1, 'dW2': dW2, "
                                                "'db2': db2}", "return [dW1, db1, dW2, db2]")},
    # The worked example's learning rate, whatever the caller passes.
    "own_learning_rate": {"update_parameters": CORRECT["update_parameters"].replace(
        "learning_rate", "0.5")},
    # The notebook's own W2 (its "Try it" cell's params), not the argument.
    "global_weights": {"hidden_error": "return globals()['params']['W2'].T.dot(delta2) * "
                       "sigmoid(Z1) * (1 - sigmoid(Z1))"},
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Every variant graded once, two kernels at a time."""
    folder = tmp_path_factory.mktemp("vectorized")
    paths = {name: submission(folder, name, bodies=bodies, notebook=NOTEBOOK, correct=CORRECT)
             for name, bodies in VARIANTS.items()}

    return dict(zip(paths, grade_all(list(paths.values()), SPEC, 11), strict=True))


def _tests(report: Report, function: str) -> dict[str, tuple[TestStatus, str]]:
    return {t.name.split(": ", 1)[1]: (t.status, t.feedback) for t in report.tests
            if t.function == function}


def test_correct_student_code_with_dict_arguments_and_results_scores_full_marks(reports):
    report = reports["correct"]
    assert report.score == report.max_score == SPEC.max_score, report.tests
    assert not report.cells


def test_a_transposed_weight_gradient_fails_on_its_shape_and_is_named(reports):
    report = reports["transposed_dW1"]
    only_loses(report, "gradients")
    tests = _tests(report, "gradients")
    # The worked example is square (n = h = 2): there the transpose shows in the values.
    assert tests["examples"][0] is TestStatus.FAILED
    status, feedback = tests["matrix"]
    assert status is TestStatus.FAILED and feedback.startswith("Wrong on the hidden 2-D array "
                                                               "case: 'dW1': expected an array")
    assert tests["dW1 matches the numerical dC/dW1"][0] is TestStatus.FAILED
    # The other entries of the same dict are right, and their own checks say so.
    for key in ("db1", "dW2", "db2"):
        assert tests[f"{key} matches the numerical dC/d{key[1:]}"][0] is TestStatus.PASSED
    assert "gradients.transposed_weights" in {t.mistake for t in report.tests}


def test_a_bias_gradient_without_keepdims_fails_and_is_named(reports):
    report = reports["keepdims_missing"]
    only_loses(report, "gradients")
    tests = _tests(report, "gradients")
    assert "'db1': expected an array of shape (" in tests["matrix"][1]
    assert tests["db1 matches the numerical dC/db1"][0] is TestStatus.FAILED
    assert tests["dW1 matches the numerical dC/dW1"][0] is TestStatus.PASSED
    assert "gradients.bias_keepdims_missing" in {t.mistake for t in report.tests}


def test_gradients_summed_over_the_batch_fail_the_finite_difference_check(reports):
    report = reports["sum_not_mean"]
    only_loses(report, "gradients")
    checks = [t for t in report.tests if t.kind is TestKind.FINITE_DIFFERENCE
              and t.function == "gradients"]
    assert len(checks) == 4 and all(t.status is TestStatus.FAILED for t in checks)
    assert "gradients.summed_not_averaged" in {t.mistake for t in report.tests}


def test_an_update_along_the_gradient_fails_the_descent_property(reports):
    report = reports["ascent"]
    only_loses(report, "update_parameters")
    tests = _tests(report, "update_parameters")
    assert tests["a step of update_parameters lowers the cost"][0] is TestStatus.FAILED
    assert "update_parameters.gradient_ascent" in {t.mistake for t in report.tests}


def test_changing_the_callers_parameters_in_place_fails_even_with_the_right_values(reports):
    report = reports["shallow_copy"]
    only_loses(report, "update_parameters")
    failing = [t for t in report.tests
               if t.function == "update_parameters" and t.status is not TestStatus.PASSED]
    assert failing and all("in place" in t.feedback for t in failing)
    assert {t.mistake for t in failing} == {"inputs.changed_in_place"}


def test_a_dict_subclass_is_graded_as_a_dict(reports):
    report = reports["ordered_dict"]
    assert report.score == report.max_score, report.tests


def test_a_dict_with_other_keys_or_a_list_instead_of_a_dict_fails_without_crashing(reports):
    for name, words in [("wrong_keys", "expected a dict with keys ['dW1', 'dW2', 'db1', 'db2'] "
                         "but got a dict with keys ['dW2', 'db1', 'db2'] and 1 other key"),
                        ("not_a_dict", "expected a dict with keys ['dW1', 'dW2', 'db1', 'db2'] "
                         "but got a sequence of 4 values")]:
        report = reports[name]
        only_loses(report, "gradients")
        tests = _tests(report, "gradients")
        assert tests["examples"][0] is tests["matrix"][0] is TestStatus.FAILED
        assert words in tests["matrix"][1], tests["matrix"]
        assert tests["dW1 matches the numerical dC/dW1"][0] is TestStatus.FAILED
    # Entries that are present and right still earn their own gradient checks.
    tests = _tests(reports["wrong_keys"], "gradients")
    assert tests["db1 matches the numerical dC/db1"][0] is TestStatus.PASSED


def test_an_update_that_ignores_its_learning_rate_fails_the_hidden_case(reports):
    # The worked example's rate is the one it uses; each hidden case draws its own.
    report = reports["own_learning_rate"]
    only_loses(report, "update_parameters")
    tests = _tests(report, "update_parameters")
    assert tests["examples"][0] is TestStatus.PASSED
    assert tests["matrix"][0] is TestStatus.FAILED


def test_a_function_that_reads_the_notebooks_values_passes_the_worked_example_only(reports):
    report = reports["global_weights"]
    only_loses(report, "hidden_error")
    tests = _tests(report, "hidden_error")
    assert tests.pop("examples")[0] is TestStatus.PASSED
    assert tests and all(status is not TestStatus.PASSED for status, _ in tests.values())


def _message(outcome: dict) -> CallMessage:
    return CallMessage.model_validate({"nonce": "n", "function": "f", "case": 0,
                                       "outcome": outcome})


def _array(*values: float) -> dict:
    return {"kind": "array", "type": "ndarray", "dtype": "float64", "shape": [len(values)],
            "data": list(values)}


def test_dict_values_from_the_kernel_are_validated_strictly():
    good = _message({"kind": "dict", "type": "dict", "entries": {"dW1": _array(1.0, "nan")}})
    plain = as_plain(good.outcome)
    assert list(plain) == ["dW1"] and plain["dW1"].dtype.name == "float64"
    bad = [
        # a dict inside a dict: the wire format is shallow by construction
        {"kind": "dict", "type": "dict", "entries": {"a": {"kind": "dict", "type": "dict",
                                                           "entries": {}}}},
        # a string where a number or an array must be
        {"kind": "dict", "type": "dict", "entries": {"a": "1.0"}},
        # more entries than allowed
        {"kind": "dict", "type": "dict", "entries": {f"k{i}": _array(1.0) for i in range(65)}},
        # a key longer than allowed
        {"kind": "dict", "type": "dict", "entries": {"k" * 101: _array(1.0)}},
        # a sequence inside a sequence
        {"kind": "sequence", "type": "tuple", "items": [{"kind": "sequence", "type": "list",
                                                         "items": []}]},
        # an array whose data does not match its shape, inside a dict
        {"kind": "dict", "type": "dict", "entries": {"a": {**_array(1.0), "shape": [2]}}},
    ]
    for outcome in bad:
        with pytest.raises(ValidationError):
            _message(outcome)


def test_arguments_are_written_as_literals_the_harness_decodes():
    assert literal(3) == "3"
    assert literal(3.0) == "3.0"
    assert eval(literal({"W1": [[1.0, 2.0]], "b": 0.5})) == {"W1": [[1.0, 2.0]], "b": 0.5}
    with pytest.raises(ValueError):
        literal({1: 2.0})
    with pytest.raises(ValueError):
        literal({"a": float("nan")})
