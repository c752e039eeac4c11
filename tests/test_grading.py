"""Grading real notebooks end to end in real kernels."""

from __future__ import annotations

import asyncio
import json

import nbformat
import pytest

from grader.grade import grade_notebook, limits_for
from grader.report import TestKind, TestStatus
from tests.notebooks import ASSIGNMENT, SOLUTION, submission

FUNCTIONS = ("sigmoid_prime", "delta2", "delta1", "update")


def full(report, function: str) -> bool:
    score, top = report.function_scores()[function]
    return score == top > 0


def statuses(report, function: str) -> set[TestStatus]:
    return {t.status for t in report.tests if t.function == function}


def test_reference_scores_full_marks_with_every_kind_of_check(grade):
    report = grade(SOLUTION)
    assert report.status == "graded"
    assert report.score == report.max_score
    kinds = {t.kind for t in report.tests}
    assert kinds == {TestKind.REFERENCE, TestKind.FINITE_DIFFERENCE, TestKind.PROPERTY}
    for t in report.tests:
        assert t.status is TestStatus.PASSED, t
        if t.kind is TestKind.FINITE_DIFFERENCE:
            assert t.max_error is not None and t.max_error < 1e-6


def test_untouched_assignment_scores_zero_with_not_implemented_everywhere(grade):
    report = grade(ASSIGNMENT)
    assert report.score == 0
    assert {t.status for t in report.tests} == {TestStatus.NOT_IMPLEMENTED}
    # The notebook's own example cells raise too; the run went on regardless.
    assert [c.problem for c in report.cells] == ["error", "error"]


@pytest.mark.parametrize(
    "bodies",
    [
        pytest.param({"sigmoid_prime": "return np.exp(-z) / (1 + np.exp(-z)) ** 2"}, id="exp-form"),
        pytest.param(
            {
                "sigmoid_prime": "z = np.asarray(z, dtype=np.float32)\n"
                "s = np.float32(1) / (np.float32(1) + np.exp(-z))\nreturn s * (np.float32(1) - s)",
                "delta2": "return (np.float32(y_hat) - np.float32(y)) * sigmoid_prime(z2)",
                "delta1": "return np.float32(delta2) * np.float32(w2) * sigmoid_prime(z1)",
                "update": "return np.float32(w) - np.float32(learning_rate) * np.float32(grad)",
            },
            id="float32",
        ),
        pytest.param(
            {
                "update": "w = np.array(w, dtype=float, copy=True)\nw -= learning_rate * grad\n"
                "return w",
                "delta1": "import math\nreturn delta2 * w2 * sigmoid(z1) * (1.0 - sigmoid(z1))",
            },
            id="copies-and-inline",
        ),
    ],
)
def test_correct_work_in_other_styles_gets_full_marks(grade, tmp_path, bodies):
    report = grade(submission(tmp_path, bodies=bodies))
    failing = [(t.name, t.feedback) for t in report.tests if t.status is not TestStatus.PASSED]
    assert failing == []
    assert report.score == report.max_score


@pytest.mark.parametrize(
    ("function", "body"),
    [
        ("sigmoid_prime", "return z * (1 - z)"),
        ("sigmoid_prime", "return sigmoid(z)"),
        ("delta2", "return (y - y_hat) * sigmoid_prime(z2)"),
        ("delta2", "return y_hat - y"),
        ("delta1", "return delta2 * sigmoid_prime(z1)"),
        ("update", "return w + learning_rate * grad"),
        ("update", "return w - grad"),
    ],
)
def test_each_typical_mistake_loses_the_points_of_its_function(grade, tmp_path, function, body):
    report = grade(submission(tmp_path, bodies={function: body}))
    # Every comparison with the reference fails (a property, such as "a step lowers the
    # cost", may still hold for a wrong update).
    checked = [t for t in report.tests if t.function == function and t.kind is TestKind.REFERENCE]
    assert checked and all(t.status is TestStatus.FAILED and t.score == 0 for t in checked)
    assert statuses(report, function) & {TestStatus.FAILED}
    for other in FUNCTIONS:
        # delta2 and delta1 call the student's own sigmoid_prime; they are judged with its
        # values, so one mistake costs points once.
        if other != function:
            assert full(report, other), other


def test_scalar_only_code_passes_scalars_and_fails_arrays(grade, tmp_path):
    body = "import math\ns = 1 / (1 + math.exp(-z))\nreturn s * (1 - s)"
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": body}))
    by_name = {t.name: t for t in report.tests}
    assert by_name["sigmoid_prime: scalar"].status is TestStatus.PASSED
    assert by_name["sigmoid_prime: vector"].status is TestStatus.ERROR
    assert "TypeError" in by_name["sigmoid_prime: vector"].feedback


def test_missing_and_misnamed_functions_are_reported_missing(grade, tmp_path):
    nb_path = submission(tmp_path)
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("def sigmoid_prime(", "def sigmoid_derivative(")
        cell.source = cell.source.replace("sigmoid_prime(z", "sigmoid_derivative(z")
        if cell.source.startswith("def update("):
            cell.source = "# I did not get to update"
    nbformat.write(nb, nb_path)
    report = grade(nb_path)
    assert statuses(report, "sigmoid_prime") == {TestStatus.MISSING}
    assert statuses(report, "update") == {TestStatus.MISSING}
    update = next(t for t in report.tests if t.function == "update")
    assert "No function named update" in update.feedback
    assert full(report, "delta2") and full(report, "delta1")


def test_a_raising_cell_and_a_syntax_error_do_not_stop_the_run(grade, tmp_path):
    path = submission(
        tmp_path,
        cells_before=["print(undefined_name)", "def broken(:\n    pass"],
        extra_cells=["raise ValueError('scratch work')"],
    )
    report = grade(path)
    assert report.score == report.max_score
    messages = [c.message for c in report.cells]
    assert any(m.startswith("NameError") for m in messages)
    assert any(m.startswith("SyntaxError") for m in messages)
    assert any("scratch work" in m for m in messages)


def test_a_syntax_error_in_a_function_cell_leaves_that_function_missing(grade, tmp_path):
    report = grade(submission(tmp_path, bodies={"delta1": "return delta2 * w2 *"}))
    assert statuses(report, "delta1") == {TestStatus.MISSING}
    assert full(report, "update")


def test_a_looping_cell_is_interrupted_and_grading_goes_on(grade, tmp_path):
    path = submission(tmp_path, cells_before=["while True:\n    pass"])
    report = grade(path, cell_timeout=1.5)
    assert [c.problem for c in report.cells] == ["timeout"]
    assert report.score == report.max_score


def test_a_looping_function_times_out_once_and_the_others_are_graded(grade, tmp_path):
    body = "while True:\n    pass"
    report = grade(submission(tmp_path, bodies={"update": body}), call_timeout=1.0)
    assert statuses(report, "update") == {TestStatus.TIMEOUT}
    feedback = next(t for t in report.tests if t.function == "update").feedback
    assert "not called again" in feedback
    assert "within 1 s" in feedback  # the timeout that applied, not the spec's 5 s
    for function in ("sigmoid_prime", "delta2", "delta1"):
        assert full(report, function)


def test_input_fails_at_once_instead_of_waiting(grade, tmp_path):
    report = grade(submission(tmp_path, cells_before=["name = input('your name? ')"]),
                   cell_timeout=20)
    assert report.cells[0].problem == "error"  # at once: a wait would end as a timeout
    assert report.score == report.max_score


def test_the_notebooks_own_kernelspec_is_ignored(grade, tmp_path):
    report = grade(submission(tmp_path, kernel="conda-env-nonexistent-py"))
    assert report.score == report.max_score


def test_an_nbformat_3_notebook_is_upgraded_and_graded(grade, tmp_path):
    v4 = nbformat.read(submission(tmp_path), as_version=4)
    v3 = nbformat.convert(v4, 3)
    path = tmp_path / "old.ipynb"
    path.write_text(nbformat.writes(v3, version=3))
    assert json.loads(path.read_text())["nbformat"] == 3
    report = grade(path)
    assert report.score == report.max_score


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not json", "not valid JSON"),
        (b'{"cells": []}', "not a Jupyter notebook"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "cells": "nope", "metadata": {}}', "malformed"),
    ],
)
def test_an_unreadable_file_gets_an_invalid_report_not_a_traceback(grade, tmp_path, content,
                                                                   reason):
    path = tmp_path / "broken.ipynb"
    path.write_bytes(content)
    report = grade(path)
    assert report.status == "invalid"
    assert reason in (report.reason or "")
    assert report.score == 0 and report.tests == []
    assert report.max_score > 0


def test_the_seed_is_recorded_and_replays_the_same_cases(grade, tmp_path):
    # Without the sigmoid' factor the error depends on the inputs, so the cases show through.
    path = submission(tmp_path, bodies={"delta2": "return y_hat - y"})
    first, again, other = grade(path, seed=11), grade(path, seed=11), grade(path, seed=12)
    assert first.seed == 11
    errors = [t.max_error for t in first.tests]
    assert errors == [t.max_error for t in again.tests]
    assert errors != [t.max_error for t in other.tests]


def test_values_the_function_prints_do_not_count(grade, tmp_path):
    body = "print(0.25)\nreturn 0.0"
    report = grade(submission(tmp_path, bodies={"sigmoid_prime": body}))
    assert report.function_scores()["sigmoid_prime"][0] == 0


def test_an_object_that_claims_equality_with_everything_earns_nothing(grade, tmp_path):
    liar = (
        "class Liar(float):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    __hash__ = float.__hash__\n"
        "    def __float__(self):\n        return 0.25\n"
        "    def __array__(self, *args, **kwargs):\n        return np.asarray(0.25)\n"
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __array__(self, *args, **kwargs):\n        return np.asarray(0.25)\n"
    )
    report = grade(submission(tmp_path, cells_before=[liar], bodies={
        "sigmoid_prime": "return Liar(0.0)",
        "delta2": "return Anything()",
    }))
    assert report.function_scores()["sigmoid_prime"][0] == 0
    assert report.function_scores()["delta2"][0] == 0
    delta2 = next(t for t in report.tests if t.name == "delta2: examples")
    assert "not a number or a numpy array" in delta2.feedback


def test_an_update_that_changes_its_argument_in_place_fails_even_if_it_returns_it(grade,
                                                                                  tmp_path):
    report = grade(submission(tmp_path, bodies={"update": "w -= learning_rate * grad\nreturn w"}))
    by_name = {t.name: t for t in report.tests if t.function == "update"}
    # A float cannot be changed in place: the scalar cases are right.
    assert by_name["update: scalar"].status is TestStatus.PASSED
    for name in ("update: vector", "update: matrix", "update: examples"):
        assert by_name[name].status is TestStatus.FAILED
        assert "changed its first argument in place" in by_name[name].feedback
        assert by_name[name].mistake == "inputs.changed_in_place"
    assert all(full(report, f) for f in ("sigmoid_prime", "delta2", "delta1"))


def test_a_name_reassigned_after_its_definition_is_reported_as_such(grade, tmp_path):
    report = grade(submission(tmp_path, extra_cells=["delta2 = delta2(0.7, 1.0, 0.9)"]))
    delta2 = [t for t in report.tests if t.function == "delta2"]
    assert {t.status for t in delta2} == {TestStatus.MISSING}
    assert "delta2 is not a function but a value of type float64" in delta2[0].feedback


def test_a_students_exception_message_cannot_leak_hidden_inputs(grade, tmp_path):
    body = "raise ValueError('inputs: ' + repr((y_hat, y, z2)))"
    report = grade(submission(tmp_path, bodies={"delta2": body}))
    by_name = {t.name: t for t in report.tests if t.function == "delta2"}
    assert "inputs: " in by_name["delta2: examples"].feedback  # a worked example: quoted
    for name, test in by_name.items():
        if test.visibility == "hidden":
            assert test.status is TestStatus.ERROR
            assert "inputs: " not in test.feedback and "ValueError" in test.feedback, name


def test_a_notebook_of_many_slow_cells_is_cut_short_and_still_graded(spec, tmp_path):
    slow = ["import time\ntime.sleep(0.8)"] * 4
    path = submission(tmp_path, extra_cells=slow)
    limits = limits_for(spec, 5.0, 2.0, notebook_timeout_s=1.5)
    report = asyncio.run(grade_notebook(path, spec, 7, limits))
    assert [c.problem for c in report.cells] == ["timeout"]
    assert "used up their 1.5 s" in report.cells[0].message
    assert report.score == report.max_score  # the functions came before the slow cells
