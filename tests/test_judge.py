"""The judge on plain values: tolerances, shapes, finite differences, hostile payloads."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from grader.judge.cases import call_args, make_cases
from grader.judge.closeness import compare, relative_difference
from grader.judge.expressions import gradient as numerical_gradient
from grader.judge.judging import judge
from grader.judge.reference import reference_namespace
from grader.report import TestStatus
from grader.spec import GradientCheck, PropertyCheck
from grader.wire import Array, Call, CallMessage, Number, as_array


def wire(value) -> Call:
    """A call outcome as the kernel would send it for `value`."""
    array = np.asarray(value)
    if array.ndim == 0:
        return Call(outcome=Number(kind="number", type="float", dtype=array.dtype.name,
                                   value=float(array)))
    return Call(outcome=Array(kind="array", type="ndarray", dtype=array.dtype.name,
                              shape=list(array.shape), data=[float(v) for v in array.ravel()]))


@pytest.fixture(scope="module")
def namespace(spec):
    return reference_namespace(spec)


def judged(spec, namespace, implementations, seed=3):
    cases = make_cases(spec, namespace, seed)
    calls = {
        f.name: [wire(implementations[f.name](*call_args(spec, f.name, c))) for c in cases]
        for f in spec.functions
    }
    return judge(spec, cases, calls, namespace)


def float32_implementations():
    f32 = np.float32

    def sigmoid_prime(z):
        s = f32(1) / (f32(1) + np.exp(-np.asarray(z, dtype=f32)))
        return s * (f32(1) - s)

    return {
        "sigmoid_prime": sigmoid_prime,
        "delta2": lambda y_hat, y, z2: (f32(y_hat) - f32(y)) * sigmoid_prime(z2),
        "delta1": lambda d2, w2, z1: f32(d2) * f32(w2) * sigmoid_prime(z1),
        "update": lambda w, g, lr: np.asarray(w, dtype=f32) - f32(lr) * np.asarray(g, dtype=f32),
    }


class TestCompare:
    def test_within_rtol_passes_and_just_outside_fails(self):
        assert compare(1.0, np.array(1.0 + 0.9e-5), 1e-5, 1e-8)[0]
        assert not compare(1.0, np.array(1.0 + 2e-5), 1e-5, 1e-8)[0]

    def test_atol_covers_values_near_zero(self):
        assert compare(0.0, np.array(5e-9), 1e-5, 1e-8)[0]
        assert not compare(0.0, np.array(5e-7), 1e-5, 1e-8)[0]

    @pytest.mark.parametrize(("expected", "got"), [
        (0.5, np.array([0.5])),
        (np.zeros(3), np.zeros((3, 1))),
        (np.zeros((3, 4)), np.zeros(12)),
        (np.zeros(6), np.array(0.0)),
    ])
    def test_a_different_shape_fails_even_with_equal_values(self, expected, got):
        ok, reason, _ = compare(expected, got, 1e-5, 1e-8)
        assert not ok and "shape" in reason

    def test_nan_never_passes(self):
        assert not compare(np.array([np.nan]), np.array([np.nan]), 1e-5, 1e-8)[0]


class TestFiniteDifferences:
    def test_numerical_gradient_of_known_functions(self):
        x = np.array([[0.3, -1.2], [2.0, 0.7]])
        assert np.allclose(numerical_gradient(lambda v: np.sin(v), x), np.cos(x), atol=1e-9)
        assert np.allclose(numerical_gradient(lambda v: np.sum(v**2) / 2, x), x, atol=1e-9)
        assert np.isclose(numerical_gradient(lambda v: v**3, 1.5), 3 * 1.5**2, rtol=1e-9)

    def test_relative_difference_names_sign_and_scale_errors(self):
        g = np.array([0.2, -0.05, 1.3])
        assert np.allclose(relative_difference(-g, g, 1e-12), 1.0)
        assert np.allclose(relative_difference(3 * g, g, 1e-12), (3 - 1) / (3 + 1))
        assert np.all(relative_difference(g, g, 1e-12) == 0)


class TestWholeAssignment:
    def test_the_reference_run_in_process_gets_full_marks(self, spec, namespace):
        implementations = {f.name: namespace[f.name] for f in spec.functions}
        tests = judged(spec, namespace, implementations)
        assert all(t.status is TestStatus.PASSED for t in tests), tests

    @pytest.mark.parametrize("seed", range(5))
    def test_correct_float32_work_passes_both_judges(self, spec, namespace, seed):
        tests = judged(spec, namespace, float32_implementations(), seed=seed)
        failing = [(t.name, t.max_error) for t in tests if t.status is not TestStatus.PASSED]
        assert failing == []

    def test_float32_noise_is_well_inside_the_tolerance(self, spec, namespace):
        tests = judged(spec, namespace, float32_implementations())
        for t in tests:
            if t.max_error is not None and t.kind == "reference":
                assert t.max_error < spec.tolerance.rtol / 2, t
            if t.kind == "finite_difference":
                assert t.max_error < spec.tolerance.fd_rtol / 5, t

    def test_a_gradient_off_by_one_percent_fails_both_judges(self, spec, namespace):
        implementations = {f.name: namespace[f.name] for f in spec.functions}
        implementations["delta2"] = lambda y_hat, y, z2: 1.01 * namespace["delta2"](y_hat, y, z2)
        tests = [t for t in judged(spec, namespace, implementations) if t.function == "delta2"]
        assert {t.status for t in tests} == {TestStatus.FAILED}

    def test_a_result_of_the_wrong_shape_fails_without_crashing_the_judge(self, spec, namespace):
        implementations = {f.name: namespace[f.name] for f in spec.functions}
        implementations["sigmoid_prime"] = lambda z: np.sum(namespace["sigmoid_prime"](z))
        tests = [t for t in judged(spec, namespace, implementations)
                 if t.function == "sigmoid_prime"]
        by_name = {t.name: t for t in tests}
        assert by_name["sigmoid_prime: scalar"].status is TestStatus.PASSED
        assert by_name["sigmoid_prime: vector"].status is TestStatus.FAILED
        assert "shape" in by_name["sigmoid_prime: vector"].feedback


class TestValuesNoCheckCanJudge:
    def test_nan_and_infinity_pass_nothing(self, spec, namespace):
        for bad in (np.nan, np.inf):
            implementations = {f.name: (lambda *args, bad=bad: np.asarray(args[-1]) * bad)
                               for f in spec.functions}
            tests = judged(spec, namespace, implementations)
            assert all(t.score == 0 for t in tests), [t.name for t in tests if t.score]
            assert not any("every hidden case" in t.feedback for t in tests)

    def test_a_check_that_judged_no_case_awards_nothing(self, spec, namespace):
        cases = [c for c in make_cases(spec, namespace, 3) if c.visible]
        calls = {f.name: [wire(namespace[f.name](*call_args(spec, f.name, c))) for c in cases]
                 for f in spec.functions}
        tests = judge(spec, cases, calls, namespace)
        unjudged = [t for t in tests if t.name.split(": ")[1] != "examples"]
        assert unjudged and all(t.score == 0 for t in unjudged)
        assert all("could be judged" in t.feedback for t in unjudged)

    def test_an_error_while_checking_a_students_value_is_that_tests_error(self, spec,
                                                                          namespace):
        update = spec.function("update").model_copy(update={
            "properties": [PropertyCheck(name="has an attribute", explain="-",
                                         holds="result.no_such_attribute")],
            "gradient_checks": [GradientCheck(
                name="overflows", value="(2 + float(np.max(np.abs(result)))) ** 5000",
                of="cost(forward(x, w1, b1, w, b2)[3], y)", wrt="w")]})
        odd = spec.model_copy(update={"functions": [
            update if f.name == "update" else f for f in spec.functions]})
        implementations = {f.name: namespace[f.name] for f in spec.functions}
        tests = {t.name: t for t in judged(odd, namespace, implementations)}
        for name, error in (("update: has an attribute", "AttributeError"),
                            ("update: overflows", "OverflowError")):
            assert tests[name].status is TestStatus.ERROR and tests[name].score == 0
            assert error in tests[name].feedback


class TestCases:
    def test_cases_follow_a_forward_pass(self, spec, namespace):
        for case in make_cases(spec, namespace, 5):
            v = case.variables
            assert np.allclose(v["y_hat"], namespace["sigmoid"](v["z2"]))
            assert np.allclose(v["z2"], v["w2"] * v["a1"] + v["b2"])

    def test_scalar_vector_and_matrix_cases_have_their_shapes(self, spec, namespace):
        shapes = {(c.case_set.value, np.shape(c.variables["z1"]))
                  for c in make_cases(spec, namespace, 5)}
        assert {("scalar", ()), ("vector", (6,)), ("matrix", (3, 4))} <= shapes


class TestWirePayloads:
    def test_as_array_returns_plain_float64(self):
        value = as_array(wire(np.float32(0.25)).outcome)
        assert type(value) is np.ndarray and value.dtype == np.float64

    @pytest.mark.parametrize("payload", [
        {"kind": "number", "type": "float", "dtype": "float", "value": "0.25"},
        {"kind": "number", "type": "float", "dtype": "float", "value": 0.25, "passed": True},
        {"kind": "array", "type": "ndarray", "dtype": "float64", "shape": [2, 2], "data": [1.0]},
        {"kind": "verdict", "status": "passed"},
        # Empty, yet a shape numpy cannot make: it would crash the judge, not fail the test.
        {"kind": "array", "type": "ndarray", "dtype": "float64", "shape": [2**62, 2**62, 0],
         "data": []},
    ])
    def test_malformed_or_forged_payloads_are_rejected(self, payload):
        with pytest.raises(ValidationError):
            CallMessage.model_validate(
                {"nonce": "n", "function": "f", "case": 0, "outcome": payload})

    def test_non_finite_values_travel_as_words(self):
        outcome = CallMessage.model_validate({
            "nonce": "n", "function": "f", "case": 0,
            "outcome": {"kind": "array", "type": "ndarray", "dtype": "float64", "shape": [2],
                        "data": ["nan", "-inf"]}}).outcome
        values = as_array(outcome)
        assert np.isnan(values[0]) and values[1] == -np.inf
