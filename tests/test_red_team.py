"""Attacks of a hostile student on the grading logic, each one a notebook or a value that once
earned points it did not deserve, or cost the grader what one submission must not cost it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from grader.grade import grade_notebook, limits_for
from grader.judge.cases import make_cases
from grader.judge.reference import reference_namespace
from grader.judge.verdicts import contrast_test
from grader.report import Report, TestStatus
from grader.spec import find_spec
from grader.wire import Array, Call, DictValue, Number, SequenceValue
from tests.notebooks import submission
from tests.test_training import CORRECT as TRAINING_CORRECT
from tests.test_vectorized import CORRECT as VECTORIZED_CORRECT
from tests.test_vectorized import NOTEBOOK as VECTORIZED_NOTEBOOK

TRAINING = find_spec("training_and_gradient_check")
TRAINING_NOTEBOOK = Path(__file__).resolve().parent.parent / "assignments" / (
    "training_and_gradient_check.ipynb")
DESCENT = "train: the costs follow gradient descent from the initial network"


def _grade_training(path: Path, seed: int = 11) -> Report:
    return asyncio.run(grade_notebook(path, TRAINING, seed, limits_for(TRAINING)))


def _wire(value: Any) -> Number | Array | DictValue | SequenceValue:
    """A plain value as the harness would send it."""
    if isinstance(value, dict):
        return DictValue(kind="dict", type="dict",
                         entries={k: _wire(v) for k, v in value.items()})
    if isinstance(value, tuple):
        return SequenceValue(kind="sequence", type="tuple", items=[_wire(v) for v in value])
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return Number(kind="number", type="float", dtype="float64", value=float(array))
    return Array(kind="array", type="ndarray", dtype="float64", shape=list(array.shape),
                 data=[float(v) for v in array.ravel()])


# --- train: a network gradient descent cannot move -----------------------------------------------

# With every weight zero, each hidden unit outputs 0.5 and the output 0.5 on all four inputs; two
# of the targets are 1 and two 0 (XOR or XNOR), so every gradient is exactly zero. A train that
# calls that its initial network can record [ln 2, ln 2, ...] as "gradient descent from it", and
# return a hand-built network: no gradient is ever computed.
_STATIONARY = (
    "if learning_rate == 0:\n"
    "    zero = {'W1': np.zeros((hidden, 2)), 'b1': np.zeros((hidden, 1)),\n"
    "            'W2': np.zeros((1, hidden)), 'b2': np.zeros((1, 1))}\n"
    "    return zero, [float(np.log(2.0))] * epochs\n"
    "W1 = np.zeros((hidden, 2)); W1[:2] = 20.0\n"
    "W1 = W1 + 1e-3 * np.random.default_rng(seed).standard_normal(W1.shape)\n"
    "b1 = np.zeros((hidden, 1)); b1[:2, 0] = [-10.0, -30.0]\n"
    "W2 = np.zeros((1, hidden)); W2[0, :2] = [20.0, -20.0]\n"
    "b2 = np.array([[-10.0]])\n"
    "if Y[0, np.flatnonzero(X.sum(axis=0) == 0)[0]] > 0.5:\n"
    "    W2, b2 = -W2, -b2\n"
    "params = {'W1': W1, 'b1': b1, 'W2': W2, 'b2': b2}\n"
    "final = float(cost(forward(X, **params)[3], Y))\n"
    "return params, [float(np.log(2.0))] * 2 + list(np.geomspace(0.69, final, epochs - 2))")


def test_a_train_that_starts_where_the_gradient_is_zero_fails_the_descent_check(tmp_path):
    report = _grade_training(submission(tmp_path, "stationary", bodies={"train": _STATIONARY},
                                        notebook=TRAINING_NOTEBOOK, correct=TRAINING_CORRECT))
    descent = next(t for t in report.tests if t.name == DESCENT)
    assert descent.status is TestStatus.FAILED and descent.score == 0, descent


def test_the_descent_check_never_differentiates_a_network_of_a_shape_train_may_not_return():
    # The learning-rate-0 call returns an "initial network" of 2,000 hidden units, and the real
    # run a first cost that matches it: the grader then took a numerical gradient over every one
    # of its 6,001 weights, two forward passes each, in its own process. At the 100,000 values a
    # result may hold, that is minutes of the grader's time per case, during which no other
    # submission's kernel is watched: one notebook stalls a class run and times out its
    # neighbours. Only a network of the shapes `hidden` asks for is worth differentiating.
    namespace = dict(reference_namespace(TRAINING))
    sizes: list[int] = []
    differentiate = namespace["gradient"]

    def spy(func: Any, at: Any) -> np.ndarray:
        sizes.append(int(np.size(at)))
        return differentiate(func, at)

    namespace["gradient"] = spy
    f = TRAINING.function("train")
    contrast = next(c for c in f.contrasts if c.name in DESCENT)
    cases = make_cases(TRAINING, namespace, 5)
    calls, others = [], []
    for case in cases:
        v = case.variables
        rng = np.random.default_rng(v["seed"])
        big = {"W1": rng.standard_normal((2000, 2)), "b1": np.zeros((2000, 1)),
               "W2": rng.standard_normal((1, 2000)) / 2000, "b2": np.zeros((1, 1))}
        first = float(namespace["cost"](namespace["forward"](v["X"], **big)[3], v["Y"]))
        calls.append(Call(outcome=_wire((big, [first, first / 2, first / 3]))))
        others.append(Call(outcome=_wire((big, [first]))))
    result = contrast_test(TRAINING, f, contrast, cases, calls, others, namespace)
    assert result.score == 0
    largest = max(c.variables["hidden"] for c in cases) * 2
    assert max(sizes, default=0) <= largest, sizes[:5]


# --- hidden inputs spelled out in the feedback ---------------------------------------------

def _digits(values: Any) -> list[str]:
    return [f"{v:.6f}".replace("-", "m").replace(".", "p") for v in np.ravel(values)]


# On hidden cases, delta2 raises an exception of a class it names after its inputs, delta1 returns
# an object of such a class, and sigmoid_prime, called on a batch, binds update to such an
# object. The grader quoted each name: the feedback spelled out the hidden inputs, which a student
# whose cases are drawn again for a later submission (same gradebook, same id) can then answer
# from a table computed offline.
_LEAKS = {
    "delta2": ("if np.size(z2) > 1 or float(z2) != 0.5:\n"
               "    raise type('L' + '_'.join(f'{v:.6f}' for v in np.ravel(z2)).replace('-', 'm')"
               ".replace('.', 'p'), (Exception,), {})()\n"
               "return (y_hat - y) * sigmoid_prime(z2)"),
    "delta1": ("return type('K' + '_'.join(f'{v:.6f}' for v in np.ravel(z1)).replace('-', 'm')"
               ".replace('.', 'p'), (), {})()"),
    "sigmoid_prime": ("if np.size(z) > 1:\n"
                      "    globals()['update'] = type('U' + '_'.join(f'{v:.6f}' for v in "
                      "np.ravel(z)).replace('-', 'm').replace('.', 'p'), (), {})()\n"
                      "s = sigmoid(z)\n"
                      "return s * (1 - s)"),
}


def test_the_feedback_never_names_a_class_the_notebook_made_on_a_hidden_case(tmp_path, grade,
                                                                              spec):
    report = grade(submission(tmp_path, "leak", bodies=_LEAKS), seed=3)
    shown = " ".join(t.feedback for t in report.tests)
    hidden = [c for c in make_cases(spec, reference_namespace(spec), 3) if not c.visible]
    for case in hidden:
        for name in ("z2", "z1"):
            for digits in _digits(case.variables[name]):
                assert digits not in shown, (name, digits, shown)
    # What kind of failure it was still shows: an exception, a value of the wrong type.
    assert "raised an exception of a class the notebook defines" in shown
    assert "not a number or a numpy array" in shown


def test_the_feedback_never_quotes_a_dict_key_made_on_a_hidden_case(tmp_path):
    spec = find_spec("vectorized_backprop")
    body = ("return {('K' + '_'.join(f'{v:.6f}' for v in np.ravel(X)[:8])).replace('-', 'm')"
            ".replace('.', 'p'): X}")
    path = submission(tmp_path, "keys", bodies={"gradients": body},
                      notebook=VECTORIZED_NOTEBOOK, correct=VECTORIZED_CORRECT)
    report = asyncio.run(grade_notebook(path, spec, 3, limits_for(spec)))
    shown = " ".join(t.feedback for t in report.tests)
    hidden = [c for c in make_cases(spec, reference_namespace(spec), 3) if not c.visible]
    for case in hidden:
        assert _digits(np.ravel(case.variables["X"])[:8])[0] not in shown, shown
