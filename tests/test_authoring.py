"""`grader assign`: student notebooks derived from solution notebooks, and authoring mistakes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest

from grader.authoring import SOLUTION_ONLY_TAG, AuthoringError, build_student_notebook
from grader.cli import main
from tests.notebooks import ROOT, SOLUTION

SPEC = """\
name = "{name}"
title = "Squares"
reference = "../solutions/{name}.ipynb"
notebook = "{name}.ipynb"

[variables]
x = "uniform(-1.0, 1.0)"

[[functions]]
name = "square"
args = ["x"]
points = {{ scalar = 1, vector = 1, matrix = 1 }}
"""

SQUARE = """\
def square(x):
    \"\"\"x squared.\"\"\"
    # BEGIN SOLUTION
    y = x * x
    return y
    # END SOLUTION"""


def course(tmp_path: Path, *cells: nbformat.NotebookNode, name: str = "squares",
           spec: str = SPEC) -> Path:
    """A course folder holding one solution notebook made of `cells` and its spec."""
    (tmp_path / "solutions").mkdir(parents=True)
    (tmp_path / "assignments").mkdir()
    (tmp_path / "assignments" / f"{name}.toml").write_text(spec.format(name=name))
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"c{index}"
    path = tmp_path / "solutions" / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def code(source: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def at(cell: int, line: int) -> str:
    return f"cell {cell} (id 'c{cell}'), line {line}"


def assign(*args: str | Path) -> int:
    return main(["assign", *map(str, args)])


def test_shipped_student_notebook_is_reproduced_byte_for_byte():
    student = build_student_notebook(SOLUTION)
    assert student.path == ROOT / "assignments" / "derivative_calculation.ipynb"
    assert student.text.encode() == student.path.read_bytes()


def test_solution_regions_become_stubs_with_the_begin_lines_indentation(tmp_path):
    solution = course(tmp_path, code("""
        def square(x):
            if x is None:
                # BEGIN SOLUTION
                return 0
                # END SOLUTION
            # BEGIN SOLUTION
            return x * x
            # END SOLUTION
    """))
    assert assign(solution) == 0
    student = nbformat.read(tmp_path / "assignments" / "squares.ipynb", as_version=4)
    assert student.cells[0].source == (
        "def square(x):\n"
        "    if x is None:\n"
        "        raise NotImplementedError()\n"
        "    raise NotImplementedError()"
    )


def test_student_notebook_drops_solution_only_cells_outputs_and_counts(tmp_path):
    given = code("import numpy as np", "keep-me")
    given.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    given.execution_count = 3
    secret = code("assert square(3) == 9", SOLUTION_ONLY_TAG)
    solution = course(tmp_path, nbformat.v4.new_markdown_cell("# Squares"), given,
                      code(SQUARE), secret)
    assert assign(solution) == 0
    student = nbformat.read(tmp_path / "assignments" / "squares.ipynb", as_version=4)
    assert [c.cell_type for c in student.cells] == ["markdown", "code", "code"]
    assert all(c.outputs == [] and c.execution_count is None
               for c in student.cells if c.cell_type == "code")
    assert student.cells[1].metadata["tags"] == ["keep-me"]
    assert "x * x" not in student.cells[2].source
    assert "SOLUTION" not in nbformat.writes(student)
    assert student.metadata["grader"] == {"assignment": "squares"}


def test_check_reports_stale_missing_and_orphan_notebooks(tmp_path, capsys):
    solution = course(tmp_path, code(SQUARE))
    target = tmp_path / "assignments" / "squares.ipynb"
    assert assign(solution, "--check") == 1
    assert f"{target} is out of date (missing)" in capsys.readouterr().out

    assert assign(solution) == 0
    assert assign("--check", "--course", tmp_path) == 0

    nb = nbformat.read(solution, as_version=4)
    nb.cells.append(code("print(square(2))"))
    nbformat.write(nb, solution)
    capsys.readouterr()
    assert assign(solution, "--check") == 1
    assert f"{target} is out of date (1 cells instead of 2); run: grader assign {solution}" in (
        capsys.readouterr().out)

    assert assign(solution) == 0
    nb.cells[0].source = nb.cells[0].source.replace("x * x", "x ** 2")
    nbformat.write(nb, solution)
    assert assign(solution, "--check") == 0  # a change inside the markers never reaches students
    nb.cells[1].source = "print(square(3))"
    nbformat.write(nb, solution)
    assert assign(solution, "--check") == 1
    assert "(cell 1 differs)" in capsys.readouterr().out

    assert assign(solution) == 0
    (tmp_path / "assignments" / "leftover.ipynb").write_text("{}")
    assert assign(solution, "--check") == 0  # only the named solution is compared
    assert assign("--check", "--course", tmp_path) == 1
    assert "leftover.ipynb has no solution notebook" in capsys.readouterr().out


MISTAKES = {
    "begin without end": (
        [code("def square(x):\n    # BEGIN SOLUTION\n    return x * x")],
        f"{at(0, 2)}: # BEGIN SOLUTION without a matching # END SOLUTION",
    ),
    "end without begin": (
        [code("def square(x):\n    return x * x\n    # END SOLUTION")],
        f"{at(0, 3)}: # END SOLUTION without a # BEGIN SOLUTION",
    ),
    "nested begin": (
        [code("def square(x):\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return x * x\n"
              "    # END SOLUTION")],
        f"{at(0, 3)}: # BEGIN SOLUTION inside the region opened at line 2",
    ),
    "misspelled marker": (
        [code("def square(x):\n    # BEGIN SOLUTIONS\n    return x * x\n    # END SOLUTION")],
        f"{at(0, 2)}: '# BEGIN SOLUTIONS' looks like a solution marker",
    ),
    "stub the spec does not grade": (
        [code(SQUARE), code("def cube(x):\n    # BEGIN SOLUTION\n    return x ** 3\n"
                            "    # END SOLUTION")],
        f"{at(1, 2)}: cube is stubbed but",
    ),
    "region outside a function": (
        [code(SQUARE), code("# BEGIN SOLUTION\nanswer = square(3)\n# END SOLUTION")],
        f"{at(1, 1)}: a solution region must lie inside the body of one top-level function",
    ),
    "graded function only in a solution-only cell": (
        [code("import numpy as np"), code(SQUARE, SOLUTION_ONLY_TAG)],
        "grades square, but no code cell of the student notebook defines it",
    ),
    "solution that does not parse": (
        [code("def square(x):\n    # BEGIN SOLUTION\n    return x *\n    # END SOLUTION")],
        f"{at(0, 3)}: the solution does not parse",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_authoring_mistakes_exit_2_naming_file_and_cell_and_write_nothing(
        tmp_path, capsys, mistake):
    cells, message = MISTAKES[mistake]
    solution = course(tmp_path, *cells)
    assert assign(solution) == 2
    err = capsys.readouterr().err
    assert f"grader: error: {solution}" in err
    assert message in err
    assert not (tmp_path / "assignments" / "squares.ipynb").exists()
    assert assign(solution, "--check") == 2


def test_every_mistake_in_a_notebook_is_reported_at_once(tmp_path):
    solution = course(tmp_path, code("def square(x):\n    # BEGIN SOLUTION\n    return x"),
                      code("def cube(x):\n    # END SOLUTION\n    return x"))
    with pytest.raises(AuthoringError) as caught:
        build_student_notebook(solution)
    assert len(caught.value.problems) == 2


def test_solution_without_spec_is_an_authoring_mistake(tmp_path, capsys):
    solution = course(tmp_path, code(SQUARE))
    (tmp_path / "assignments" / "squares.toml").unlink()
    assert assign(solution) == 2
    assert "no spec at" in capsys.readouterr().err


def test_spec_must_name_the_solution_it_is_found_by(tmp_path, capsys):
    spec = SPEC.replace('name = "{name}"', 'name = "other"')
    solution = course(tmp_path, code(SQUARE), spec=spec)
    assert assign(solution) == 2
    assert "name = 'other' but the file is squares.toml" in capsys.readouterr().err


def test_course_option_finds_the_spec_of_a_solution_kept_elsewhere(tmp_path, capsys):
    spec = SPEC.replace("../solutions/{name}.ipynb", "../../drafts/work/{name}.ipynb")
    course(tmp_path / "course", code(SQUARE), spec=spec)
    draft = tmp_path / "drafts" / "work" / "squares.ipynb"
    draft.parent.mkdir(parents=True)
    (tmp_path / "course" / "solutions" / "squares.ipynb").rename(draft)
    assert assign(draft) == 2  # the default course, drafts/, has no assignments/squares.toml
    assert "no spec at" in capsys.readouterr().err
    assert assign(draft, "--course", tmp_path / "course") == 0
    assert (tmp_path / "course" / "assignments" / "squares.ipynb").is_file()
