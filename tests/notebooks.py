"""Build real submission notebooks for tests, starting from the shipped student notebook."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from pathlib import Path

import nbformat

from grader.authoring import STUB
from grader.grade import grade_notebook, limits_for
from grader.report import Report
from grader.spec import AssignmentSpec

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "derivative_calculation.ipynb"
SOLUTION = ROOT / "solutions" / "derivative_calculation.ipynb"

# Correct bodies, written the way a student would.
CORRECT = {
    "sigmoid_prime": "s = sigmoid(z)\nreturn s * (1 - s)",
    "delta2": "return (y_hat - y) * sigmoid_prime(z2)",
    "delta1": "return delta2 * w2 * sigmoid_prime(z1)",
    "update": "return w - learning_rate * grad",
}


def fill(nb: nbformat.NotebookNode, function: str, body: str) -> None:
    """Replace the stub of `function` with `body` (written without indentation)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and f"def {function}(" in cell.source and STUB in cell.source:
            cell.source = cell.source.replace(STUB, textwrap.indent(body, "    ").lstrip(), 1)
            return
    raise KeyError(f"no stub for {function}")


def submission(folder: Path, name: str = "student", *, bodies: dict[str, str] | None = None,
               complete: bool = True, extra_cells: list[str] = (),
               cells_before: list[str] = (), kernel: str | None = None,
               notebook: Path = ASSIGNMENT, correct: dict[str, str] = CORRECT) -> Path:
    """A student notebook: the assignment with `bodies` (correct ones for the rest if complete).

    extra_cells are appended after the last cell; cells_before are inserted before the first
    exercise, so they run before any student function is defined. `notebook` and `correct`
    choose another assignment's student notebook and its correct bodies.
    """
    nb = nbformat.read(notebook, as_version=4)
    first_exercise = next(i for i, c in enumerate(nb.cells)
                          if c.cell_type == "code" and STUB in c.source)
    chosen = (dict(correct) if complete else {}) | (bodies or {})
    for function, body in chosen.items():
        fill(nb, function, body)
    for offset, source in enumerate(cells_before):
        nb.cells.insert(first_exercise + offset, nbformat.v4.new_code_cell(source))
    nb.cells.extend(nbformat.v4.new_code_cell(s) for s in extra_cells)
    if kernel is not None:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def grade_all(paths: Sequence[Path], spec: AssignmentSpec, seed: int,
              public: bool = False) -> list[Report]:
    """Grade notebooks two kernels at a time (CI has two cores); reports in the same order.
    `public` grades them as a self-check without the answer key does."""

    async def run() -> list[Report]:
        slots = asyncio.Semaphore(2)

        async def one(path: Path) -> Report:
            async with slots:
                return await grade_notebook(path, spec, seed, limits_for(spec), public=public)

        return await asyncio.gather(*(one(p) for p in paths))

    return asyncio.run(run())


def only_loses(report: Report, function: str) -> None:
    """`function` lost points and every other function kept all of its own."""
    scores = report.function_scores()
    assert scores[function][0] < scores[function][1], report.tests
    assert all(s == top for f, (s, top) in scores.items() if f != function), scores
