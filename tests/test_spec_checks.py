"""An instructor's slips in a spec are reported as theirs, naming the assignment and the field,
before any student is graded (or, for the few that only show on a hidden case, as a spec error
at grading time); and the authoring aids around specs: written example answers, batches, draws,
the non_finite detector."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from grader.cli import main
from grader.judge.cases import example_cases, make_cases
from grader.judge.diagnose import detect
from grader.judge.reference import reference_namespace
from grader.judge.speccheck import SpecCheckError, verify
from grader.judge.verdicts import reference_test
from grader.report import TestStatus
from grader.spec import CaseSet, Mistake, find_spec, load_spec
from grader.wire import Array, Call, Raised
from tests.notebooks import ROOT, submission
from tests.test_assignments import why_unnamed


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A copy of the course, whose specs a test may break."""
    for folder in ("assignments", "solutions"):
        shutil.copytree(ROOT / folder, tmp_path / "course" / folder)
    return tmp_path / "course"


def edit(course: Path, assignment: str, old: str, new: str) -> Path:
    path = course / "assignments" / f"{assignment}.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    return path


DELTA2_OF = 'of = "cost(forward(x, w1, b1, w2, b2)[3], y)"'


@pytest.mark.parametrize(("old", "new", "message"), [
    # A typo in a gradient check's cost.
    (DELTA2_OF, DELTA2_OF.replace("], y)", "], YY)"),
     "delta2: gradient check 'delta2 * a1 matches the numerical dC/dw2': of = "
     "'cost(forward(x, w1, b1, w2, b2)[3], YY)' reads 'YY', which is not a case variable"),
    # A typo in a mistake's value: it would never match, and nobody would know.
    ('value = "y_hat - y"', 'value = "y_hat - yy"',
     "mistake delta2.sigmoid_prime_missing: value = 'y_hat - yy' reads 'yy' (did you mean "
     "'y'?)"),
    # A variable that uses one computed after it.
    ('grad_w2 = "d2 * a1"', 'grad_w2 = "d2 * a1 * w[0]"',
     "case variable 'grad_w2' = 'd2 * a1 * w[0]' reads 'w': w is computed after it"),
    # A property that names the result wrongly.
    ('holds = "all(cost(forward(x, w1, b1, result, b2)[3], y) < cost(y_hat, y))"',
     'holds = "all(cost(forward(x, w1, b1, results, b2)[3], y) < cost(y_hat, y))"',
     "reads 'results' (did you mean 'result'?), which is not a case variable, a name of the "
     "reference notebook or a helper (it may use result)"),
    # A value that raises on a worked example: a dry run with the reference finds it.
    ('value = "y_hat - y"', 'value = "y_hat - y[3]"',
     "mistake delta2.sigmoid_prime_missing: value = 'y_hat - y[3]' raised TypeError on "
     "example 1"),
])
def test_a_slip_in_a_spec_expression_is_found_when_the_spec_loads(course, capsys, old, new,
                                                                  message):
    path = edit(course, "derivative_calculation", old, new)
    with pytest.raises(SpecCheckError) as refused:
        verify(find_spec("derivative_calculation", course))
    assert f"spec errors in assignment derivative_calculation ({path})" in str(refused.value)
    assert message in str(refused.value)
    # `grader check` says the same before any kernel starts, and blames no notebook.
    notebook = ROOT / "examples" / "submissions" / "ada_lovelace.ipynb"
    assert main(["check", str(notebook), "--course", str(course)]) == 2
    err = capsys.readouterr().err
    assert message in err and "could not grade" not in err


def test_grader_assign_reports_a_spec_slip_and_writes_nothing(course, capsys):
    path = edit(course, "derivative_calculation", 'value = "y_hat - y"', 'value = "y_hat - yy"')
    before = path.read_bytes()
    assert main(["assign", str(course / "solutions" / "derivative_calculation.ipynb")]) == 2
    assert "mistake delta2.sigmoid_prime_missing: value = 'y_hat - yy'" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_mistake_value_that_raises_on_a_hidden_case_is_a_spec_error(course, tmp_path, capsys):
    # Right on the worked examples (sizes 1 and 3), broken on the hidden vector case (size 6):
    # only grading a wrong delta2 reaches it, and it must not pass for "no known mistake".
    edit(course, "derivative_calculation", 'value = "y_hat - y"',
         'value = "(y_hat - y) if np.size(y) < 6 else np.reshape(y, 5)"')
    notebook = submission(tmp_path, bodies={"delta2": "return y_hat - y"})
    status = main(["check", str(notebook), "--course", str(course)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert ("spec error in assignment derivative_calculation "
            f"({course / 'assignments' / 'derivative_calculation.toml'}): mistake "
            "delta2.sigmoid_prime_missing: value = '(y_hat - y) if np.size(y) < 6 else "
            "np.reshape(y, 5)' raised ValueError") in err
    assert "could not grade" not in err


def test_public_mode_names_the_variable_that_calls_an_exercise_function(course, tmp_path,
                                                                        capsys):
    edit(course, "derivative_calculation",
         'd2 = "derivative(lambda b: cost(forward(x, w1, b1, w2, b)[3], y), b2)"',
         'd2 = "delta2(y_hat, y, z2)"')
    notebook = submission(tmp_path)
    assert main(["check", str(notebook), "--course", str(course), "--public"]) == 2
    assert ("derivative_calculation cannot be checked without its answer key: case variable "
            "'d2' = 'delta2(y_hat, y, z2)' calls an exercise function of the handout"
            ) in capsys.readouterr().err


def test_an_example_that_misses_a_drawn_variable_is_named(course):
    edit(course, "derivative_calculation", "x = 1.5\n", "")
    spec = find_spec("derivative_calculation", course)
    with pytest.raises(SpecCheckError, match="example 1 does not give 'x', which is drawn"):
        verify(spec)


# --- [example_answers] written by `grader assign` ---------------------------------------------

def test_grader_assign_writes_example_answers_and_check_says_when_they_are_stale(course,
                                                                                capsys):
    spec_path = course / "assignments" / "softmax_cross_entropy.toml"
    solution = course / "solutions" / "softmax_cross_entropy.ipynb"
    text = spec_path.read_text()
    start = text.index("[example_answers]")
    end = text.index("[[functions]]")
    # The table removed: `grader assign` writes it back from the reference.
    spec_path.write_text(text[:start] + text[end:])
    assert main(["assign", "--check", str(solution)]) == 1
    assert ("[example_answers] are out of date for softmax, cross_entropy, output_delta, "
            "weight_gradient; run: grader assign") in capsys.readouterr().out
    assert main(["assign", str(solution)]) == 0
    assert f"{spec_path} [example_answers]" in capsys.readouterr().out
    spec = load_spec(spec_path)
    namespace = reference_namespace(spec)
    for case, answer in zip(example_cases(spec, namespace), spec.example_answers["softmax"],
                            strict=True):
        np.testing.assert_array_equal(answer, namespace["softmax"](case.variables["Z"]))
    assert main(["assign", "--check", str(solution)]) == 0
    # An answer that no longer matches the reference is stale; the rest of the file is kept.
    written = spec_path.read_text()
    changed = written.replace("cross_entropy = [0.", "cross_entropy = [1.", 1)
    spec_path.write_text(changed)
    assert main(["assign", "--check", str(solution)]) == 1
    assert "[example_answers] are out of date for cross_entropy;" in capsys.readouterr().out
    assert main(["assign", str(solution)]) == 0
    assert spec_path.read_text() == written


def test_answers_that_a_spec_cannot_state_are_left_out(course, capsys):
    solution = course / "solutions" / "training_and_gradient_check.ipynb"
    assert main(["assign", "--check", str(solution)]) == 0
    spec = find_spec("training_and_gradient_check", course)
    # train returns a tuple (a network and its costs): no answer, so public mode skips it.
    assert "numerical_gradient" in spec.example_answers and "train" not in spec.example_answers


# --- non-finite results, batches, draws ---------------------------------------------------------

def _array(values: np.ndarray) -> Call:
    return Call(outcome=Array(kind="array", type="ndarray", dtype="float64",
                              shape=list(values.shape), data=[float(v) for v in values.ravel()]))


def test_non_finite_fires_only_when_the_nan_sit_where_the_spec_says():
    spec = find_spec("softmax_cross_entropy")
    namespace = reference_namespace(spec)
    f = spec.function("softmax")
    mistake = next(m for m in f.mistakes if m.id == "softmax.not_stabilised")
    cases = make_cases(spec, namespace, 3)

    def naive(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.exp(z) / np.sum(np.exp(z), axis=0, keepdims=True)

    unstable = [_array(naive(c.variables["Z"])) for c in cases]
    assert detect(spec, mistake, f, cases, unstable, namespace)
    # nan everywhere is some other mistake; so are right values without any nan.
    everywhere = [_array(np.full(c.variables["Z"].shape, math.nan)) for c in cases]
    assert not detect(spec, mistake, f, cases, everywhere, namespace)
    right = [_array(namespace["softmax"](c.variables["Z"])) for c in cases]
    assert not detect(spec, mistake, f, cases, right, namespace)


def test_a_non_finite_mistake_needs_a_where_and_an_example():
    with pytest.raises(ValueError, match="a 'where' condition goes with detector 'non_finite'"):
        Mistake(id="f.overflows", hint="h", detector="non_finite", example="return 1")
    with pytest.raises(ValueError, match="detector 'non_finite' needs an example body"):
        Mistake(id="f.overflows", hint="h", detector="non_finite", where="x > 1")


@pytest.mark.parametrize(("credit", "score"), [("each", 2.0), ("all", 0.0)])
def test_batches_are_reported_by_their_place_and_scored_as_declared(course, credit, score):
    path = edit(course, "softmax_cross_entropy", 'batch_credit = "each"',
                f'batch_credit = "{credit}"')
    spec = load_spec(path)
    namespace = reference_namespace(spec)
    f = spec.function("output_delta")
    batches = [c for c in make_cases(spec, namespace, 5) if c.case_set is CaseSet.BATCH]
    assert [c.label for c in batches] == ["batch[0]", "batch[1]", "batch[2]"]
    calls = [_array(namespace["output_delta"](c.variables["P"], c.variables["Y"]))
             for c in batches]
    test = reference_test(spec, f, CaseSet.BATCH, batches, calls, namespace)
    assert test.status is TestStatus.PASSED and test.score == 3
    assert test.feedback == "Correct on all 3 hidden batches."
    wrong = batches[1].variables
    calls[1] = _array(wrong["P"] - wrong["Y"])
    test = reference_test(spec, f, CaseSet.BATCH, batches, calls, namespace)
    assert test.status is TestStatus.FAILED and test.score == score
    assert test.feedback.startswith("Wrong on hidden batch 2 of 3 (largest relative error")


def test_a_spec_that_draws_batches_scores_batches_only(course):
    edit(course, "softmax_cross_entropy", "points = { examples = 1, batch = 3 }",
         "points = { examples = 1, matrix = 3 }")
    with pytest.raises(Exception, match="draws batches only, so points go to 'examples' and "
                                        "'batch'"):
        find_spec("softmax_cross_entropy", course)


def test_labels_and_one_hot_draw_class_targets_and_choice_keeps_whole_numbers(course):
    spec = find_spec("softmax_cross_entropy", course)
    for case in make_cases(spec, reference_namespace(spec), 9)[1:]:
        assert case.case_set is CaseSet.BATCH
        k, m = case.variables["k"], case.variables["m"]
        assert type(k) is int and type(m) is int
        labels = case.variables["labels"]
        assert labels.shape == (m,) and labels.dtype.kind == "i"
        assert set(labels.tolist()) <= set(range(k))
        Y = case.variables["Y"]
        assert Y.shape == (k, m) and np.array_equal(Y.sum(axis=0), np.ones(m))
        assert np.array_equal(np.argmax(Y, axis=0), labels.astype(int))
    # Any float among the values makes every draw a float.
    spec = find_spec("derivative_calculation", course)
    cases = make_cases(spec, reference_namespace(spec), 9)
    assert {type(c.variables["y"]) for c in cases if c.case_set is CaseSet.SCALAR} == {float}


# --- the assignment CI says why a mistake is never named --------------------------------------

def test_the_assignment_ci_says_why_a_mistake_is_never_named(course):
    edit(course, "softmax_cross_entropy", '[[functions.mistakes]]\nid = "softmax.wrong_axis"',
         '[[functions.mistakes]]\nid = "softmax.overflows"\n'
         'value = "np.exp(Z) / np.sum(np.exp(Z), axis=0, keepdims=True)"\n'
         'hint = "h"\n\n'
         '[[functions.mistakes]]\nid = "softmax.wrong_axis"')
    path = edit(course, "softmax_cross_entropy",
                '[[functions.mistakes]]\nid = "output_delta.sign_flipped"',
                '[[functions.mistakes]]\nid = "output_delta.unscaled"\nvalue = "P - Y"\n'
                'hint = "h"\n\n[[functions.mistakes]]\nid = "output_delta.sign_flipped"')
    spec = load_spec(path)
    softmax = spec.function("softmax")
    overflows = next(m for m in softmax.mistakes if m.id == "softmax.overflows")
    assert "its value is nan or infinite on examples[0], and a value never matches nan" in (
        why_unnamed(spec, softmax, overflows, {None}))
    delta = spec.function("output_delta")
    unscaled = next(m for m in delta.mistakes if m.id == "output_delta.unscaled")
    assert why_unnamed(spec, delta, unscaled, {"output_delta.not_divided_by_m"}).startswith(
        "an earlier entry, output_delta.not_divided_by_m, matches the same values")


def test_an_added_example_gets_its_answers_from_grader_assign(course, capsys):
    spec_path = course / "assignments" / "softmax_cross_entropy.toml"
    solution = course / "solutions" / "softmax_cross_entropy.ipynb"
    text = spec_path.read_text()
    example = text[text.index("[[examples]]"):text.index("# Each function's result")]
    # A second worked example: the table no longer has one answer per example, so the spec does
    # not load for grading until `grader assign` writes the answers again.
    spec_path.write_text(text.replace(example, example + example.replace("[0, 1, 2, 2]",
                                                                         "[2, 1, 0, 0]")))
    with pytest.raises(Exception, match="one example answer per example is needed"):
        load_spec(spec_path)
    assert main(["assign", "--check", str(solution)]) == 1
    assert "[example_answers] are out of date" in capsys.readouterr().out
    assert main(["assign", str(solution)]) == 0
    spec = load_spec(spec_path)
    assert all(len(a) == 2 for a in spec.example_answers.values())
    assert spec.example_answers["softmax"][0] == spec.example_answers["softmax"][1]
    assert spec.example_answers["cross_entropy"][0] != spec.example_answers["cross_entropy"][1]


def test_a_result_of_another_form_than_a_mistakes_value_is_no_match_and_no_spec_error():
    # gradients returns a dict; its mistakes are dicts of entries. An array is simply no match.
    spec = find_spec("vectorized_backprop")
    namespace = reference_namespace(spec)
    f = spec.function("gradients")
    cases = make_cases(spec, namespace, 3)
    arrays = [_array(c.variables["d1"] @ c.variables["X"].T) for c in cases]
    for m in f.mistakes:
        assert not detect(spec, m, f, cases, arrays, namespace)


def test_a_batch_that_raises_costs_its_own_share_only(course):
    spec = find_spec("softmax_cross_entropy", course)
    namespace = reference_namespace(spec)
    f = spec.function("weight_gradient")
    batches = [c for c in make_cases(spec, namespace, 5) if c.case_set is CaseSet.BATCH]
    calls = [_array(c.variables["delta"] @ c.variables["A_prev"].T) for c in batches]
    calls[2] = Call(outcome=Raised(kind="raised", type="ValueError", message="shapes"))
    test = reference_test(spec, f, CaseSet.BATCH, batches, calls, namespace)
    assert test.status is TestStatus.ERROR and test.score == 2.0
    assert test.feedback == ("weight_gradient raised ValueError on a hidden case (messages are "
                             "shown for the worked examples only). Hidden batch 3 of 3 went so; "
                             "each right batch earns its share.")
