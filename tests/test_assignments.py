"""Every shipped assignment proves itself: its reference, its student notebook, its sync.

Parametrised over assignments/*.toml, so a new assignment is covered the moment its spec lands.
Each notebook runs in one real kernel, once per test session.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grader.authoring import build_student_notebook
from grader.cases import derive_seed
from grader.cli import main
from grader.grade import grade_notebook, limits_for
from grader.report import Report, TestKind, TestStatus
from grader.spec import AssignmentSpec, load_spec
from tests.notebooks import ROOT

SPECS = sorted((ROOT / "assignments").glob("*.toml"))


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def spec(request: pytest.FixtureRequest) -> AssignmentSpec:
    return load_spec(request.param)


def _grade(path: Path, spec: AssignmentSpec) -> Report:
    seed = derive_seed(spec.name, "assignment-ci")
    return asyncio.run(grade_notebook(path, spec, seed, limits_for(spec)))


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


def test_student_notebook_scores_zero_with_every_test_not_implemented(student_report: Report):
    assert student_report.status == "graded", student_report.reason
    assert student_report.tests
    assert student_report.score == 0
    assert {t.status for t in student_report.tests} == {TestStatus.NOT_IMPLEMENTED}, [
        (t.name, t.status) for t in student_report.tests
        if t.status is not TestStatus.NOT_IMPLEMENTED]
