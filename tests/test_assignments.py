"""Every shipped assignment proves itself: its reference, its student notebook, its sync.

Parametrised over assignments/*.toml, so a new assignment is covered the moment its spec lands.
Each notebook runs in one real kernel, once per test session.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader.authoring import build_student_notebook
from grader.cli import main
from grader.grade import grade_notebook, limits_for
from grader.judge.cases import make_cases
from grader.judge.expressions import evaluate
from grader.judge.reference import handout_namespace, reference_namespace
from grader.judge.verdicts import fmt
from grader.report import Report, TestKind, TestStatus
from grader.spec import AssignmentSpec, Detector, FunctionSpec, Mistake, load_spec
from tests.notebooks import ROOT, grade_all

SPECS = sorted((ROOT / "assignments").glob("*.toml"))
# One fixed seed: every check of an assignment sees the same cases, and a failure replays.
SEED = 20_250_901


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def spec(request: pytest.FixtureRequest) -> AssignmentSpec:
    return load_spec(request.param)


def _grade(path: Path, spec: AssignmentSpec) -> Report:
    return _grade_all([path], spec)[0]


def _grade_all(paths: list[Path], spec: AssignmentSpec) -> list[Report]:
    return grade_all(paths, spec, SEED)


@pytest.fixture(scope="module")
def reference_report(spec: AssignmentSpec) -> Report:
    return _grade(spec.reference_path, spec)


@pytest.fixture(scope="module")
def student_report(spec: AssignmentSpec, tmp_path_factory: pytest.TempPathFactory) -> Report:
    # Grade what `grader assign` produces now, not the committed file: the sync test below
    # guards the committed one.
    student = build_student_notebook(spec.reference_path)
    path = tmp_path_factory.mktemp(spec.name) / student.path.name
    path.write_text(student.text, encoding="utf-8")
    return _grade(path, spec)


def test_every_solution_has_a_spec_and_every_spec_a_solution():
    solutions = {p.stem for p in (ROOT / "solutions").glob("*.ipynb")}
    assert solutions == {p.stem for p in SPECS}


def test_student_notebooks_are_in_sync_with_their_solutions(capsys):
    status = main(["assign", "--check"])
    assert status == 0, f"run `grader assign` and commit the result:\n{capsys.readouterr().out}"


def test_student_notebook_is_where_the_spec_says(spec: AssignmentSpec):
    assert build_student_notebook(spec.reference_path).path == spec.notebook_path


def test_solution_scores_full_marks(spec: AssignmentSpec, reference_report: Report):
    assert reference_report.status == "graded", reference_report.reason
    assert reference_report.max_score == spec.max_score > 0
    failing = [t for t in reference_report.tests if t.status is not TestStatus.PASSED]
    assert not failing, [(t.name, t.status, t.feedback) for t in failing]
    assert reference_report.score == reference_report.max_score
    assert not reference_report.cells, reference_report.cells


def test_finite_differences_agree_with_the_references_own_gradients(
        spec: AssignmentSpec, reference_report: Report):
    checks = [t for t in reference_report.tests if t.kind is TestKind.FINITE_DIFFERENCE]
    assert len(checks) == sum(len(f.gradient_checks) for f in spec.functions)
    # Passing is not enough: the reference must agree with a wide margin, or a correct float32
    # student near the tolerance would be failed by the grader's own noise.
    margin = spec.tolerance.fd_rtol / 100
    for t in checks:
        assert t.status is TestStatus.PASSED, (t.name, t.feedback)
        assert t.max_error is not None and t.max_error <= margin, (t.name, t.max_error)


def test_a_self_check_without_the_answer_key_passes_the_solution(spec: AssignmentSpec,
                                                                 reference_report: Report):
    # Students get the spec and the grader without solutions/: cases must be computable from
    # the handout alone, the same ones for a seed (so a self-check draws from the distributions
    # a class run draws from), and the solution must pass every public check.
    full = make_cases(spec, reference_namespace(spec), SEED)
    public = make_cases(spec, handout_namespace(spec), SEED)
    for a, b in zip(full, public, strict=True):
        for name in a.variables:
            assert fmt(a.variables[name]) == fmt(b.variables[name]), name
    report = asyncio.run(grade_notebook(spec.reference_path, spec, SEED, limits_for(spec),
                                        public=True))
    assert report.mode == "public"
    assert report.tests and report.score == report.max_score, [
        (t.name, t.feedback) for t in report.tests if t.status is not TestStatus.PASSED]
    instructor = {t.name for t in reference_report.tests}
    assert {t.name for t in report.tests} <= instructor


def test_student_notebook_scores_zero_with_every_test_not_implemented(student_report: Report):
    assert student_report.status == "graded", student_report.reason
    assert student_report.tests
    assert student_report.score == 0
    assert {t.status for t in student_report.tests} == {TestStatus.NOT_IMPLEMENTED}, [
        (t.name, t.status) for t in student_report.tests
        if t.status is not TestStatus.NOT_IMPLEMENTED]


def _solution_def(spec: AssignmentSpec, name: str) -> ast.FunctionDef:
    nb = nbformat.read(spec.reference_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    return node
    raise LookupError(f"{spec.reference_path} does not define {name}")


def mistaken_variant(spec: AssignmentSpec, f: FunctionSpec, m: Mistake) -> str:
    """A cell that redefines `f` the way a student making mistake `m` would have written it.

    A `value` mistake returns its expression, computed from the function's own arguments; the
    other detectors wrap the solution's function in the failure they describe.
    """
    node = _solution_def(spec, f.name)
    params = ", ".join(a.arg for a in [*node.args.posonlyargs, *node.args.args])
    header = f"def {f.name}({params}):\n"
    if m.example is not None:
        return f"import numpy as np\n\n\n{header}" + textwrap.indent(m.example, "    ")
    if m.detector is Detector.VALUE:
        # The spec writes the value with case-variable names; bind them to the parameters, and
        # give all/any/abs the numpy meaning spec expressions have.
        body = (f"from numpy import abs, all, any\n{', '.join(f.args)}, = {params},\n"
                f"return {m.value}")
        return f"import numpy as np\n\n\n{header}" + textwrap.indent(body, "    ")
    node.name = f"correct_{f.name}"
    correct = f"result = correct_{f.name}({params})\n"
    error = m.error or "TypeError"
    raised = error if isinstance(getattr(builtins, error, None), type) else (
        f"type({error!r}, (Exception,), {{}})")
    body = {
        Detector.SCALAR_ONLY: (
            f"if any(np.ndim(a) > 0 for a in ({params},)):\n"
            f"    raise {raised}('only size-1 arrays can be converted to Python scalars')\n"
            f"{correct}return result"),
        Detector.RETURNS_NONE_MUTATED: (
            f"{correct}for a in ({params},):\n"
            "    if isinstance(a, np.ndarray) and a.shape == np.shape(result):\n"
            "        a[...] = result\n"
            "        break\n"
            "return None"),
        Detector.MUTATES_ARGUMENTS: (
            f"{correct}for a in ({params},):\n"
            "    if isinstance(a, np.ndarray):\n"
            "        a[...] = 0.0\n"
            "        break\n"
            "return result"),
        Detector.COLUMN_SHAPE: f"{correct}return np.asarray(result)[..., np.newaxis]",
        Detector.BATCH_SUMMED: f"{correct}return float(np.sum(result))",
    }[m.detector]
    return (f"import numpy as np\n\n\n{ast.unparse(node)}\n\n\n{header}"
            + textwrap.indent(body, "    "))


# Mistakes that no check of a self-check can see, so that it passes them: the worked example of
# update takes learning_rate 0.1, the very step the variant always takes, and no property of a
# single step can tell a learning rate from another.
UNSEEN_WITHOUT_THE_ANSWER_KEY = {"update.fixed_step_size"}


def _catalogue(spec: AssignmentSpec) -> list[tuple[FunctionSpec, Mistake]]:
    # A mistake any function can make is tried on the first function.
    own = [(f, m) for f in spec.functions for m in f.mistakes]
    return own + [(spec.functions[0], m) for m in spec.mistakes]


@pytest.mark.parametrize("mode", ["full", "public"])
def test_each_misconception_is_recognised_on_its_own_mistaken_variant(
        spec: AssignmentSpec, tmp_path: Path, mode: str):
    catalogue = _catalogue(spec)
    if not catalogue:
        pytest.skip(f"{spec.name} declares no misconceptions")
    paths = []
    solution = nbformat.read(spec.reference_path, as_version=4)
    for f, m in catalogue:
        nb = nbformat.from_dict(solution)
        nb.cells.append(nbformat.v4.new_code_cell(mistaken_variant(spec, f, m)))
        paths.append(tmp_path / f"{m.id}.ipynb")
        nbformat.write(nb, paths[-1])
    missed = []
    reports = grade_all(paths, spec, SEED, public=mode == "public")
    for (f, m), report in zip(catalogue, reports, strict=True):
        assert report.mode == mode
        named = {t.mistake for t in report.tests if t.function == f.name}
        passes = all(t.status is TestStatus.PASSED for t in report.tests if t.function == f.name)
        if mode == "public" and m.id in UNSEEN_WITHOUT_THE_ANSWER_KEY:
            assert passes, f"{m.id} now fails a public test: take it out of the list"
            continue
        if m.id not in named:
            missed.append(f"{m.id} on {f.name}: the report names {sorted(map(str, named))}: "
                          f"{why_unnamed(spec, f, m, named)}")
    assert not missed, "\n".join(missed)


def why_unnamed(spec: AssignmentSpec, f: FunctionSpec, m: Mistake, named: set[str | None]
                ) -> str:
    """Why a mistake's own variant did not get it named, as far as the spec shows."""
    earlier = [e.id for e in spec.mistakes_for(f.name)]
    earlier = earlier[:earlier.index(m.id)]
    if shadowing := [i for i in earlier if i in named]:
        return (f"an earlier entry, {shadowing[0]}, matches the same values and is named "
                "first: make the two differ on some case, or drop one")
    if m.detector is Detector.VALUE:
        namespace = reference_namespace(spec)
        for case in make_cases(spec, namespace, SEED):
            variant = evaluate(m.value or "", namespace, **case.variables)
            parts = variant.values() if isinstance(variant, dict) else [variant]
            if not all(np.all(np.isfinite(np.asarray(p, dtype=float))) for p in parts):
                return (f"its value is nan or infinite on {case.label}, and a value never "
                        "matches nan: recognise such a mistake by where it overflows, with "
                        "detector 'non_finite' and a 'where' condition")
    if not named - {None}:
        return ("no test of the variant fails, or its values match no entry: check that the "
                "variant really makes the mistake on the hidden cases")
    return "another entry is named instead"
