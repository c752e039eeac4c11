"""Author assignments: derive the student notebook from the instructor's solution notebook.

A course keeps `solutions/NAME.ipynb` (the reference, trusted) and `assignments/NAME.toml` (the
spec); `assignments/NAME.ipynb` is generated from the two and never edited by hand:

- in code cells, each region from a `# BEGIN SOLUTION` line to an `# END SOLUTION` line becomes
  `raise NotImplementedError()`, indented like the BEGIN line (the markers go too);
- cells tagged `solution-only` are dropped;
- outputs and execution counts are cleared;
- the notebook's metadata records `{"grader": {"assignment": NAME}}`, which `grader check` reads.

Authoring mistakes stop the build with an `AuthoringError` naming the file and the cell, before
anything is written: a solution could otherwise leak to students, or a stub could go ungraded.
"""

from __future__ import annotations

import ast
import copy
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np

from grader.errors import GraderError
from grader.spec import AssignmentSpec, SpecError, load_spec

STUB = "raise NotImplementedError()"
SOLUTION_ONLY_TAG = "solution-only"

# The one rule that turns a solution region into a stub; the shipped student notebooks were made
# with exactly this expression, so changing it changes every generated file.
SOLUTION_REGION = re.compile(
    r"^(?P<indent>[ \t]*)# BEGIN SOLUTION[ \t]*\n.*?^[ \t]*# END SOLUTION[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_BEGIN = re.compile(r"[ \t]*# BEGIN SOLUTION[ \t]*")
_END = re.compile(r"[ \t]*# END SOLUTION[ \t]*")
# Anything that looks like a marker but is not spelled exactly like one: left alone it would
# leave the solution in the student notebook.
_MARKER_LIKE = re.compile(r"#\s*(BEGIN|END)[\s_-]*SOLUTION", re.IGNORECASE)


class AuthoringError(GraderError):
    """A mistake in a solution notebook or its spec; each problem names the file and cell."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[AuthoringError], tuple[list[str]]]:
        # Rebuilt from the problems, not the joined message, when it crosses processes.
        return type(self), (self.problems,)


@dataclass(frozen=True)
class StudentNotebook:
    """The student notebook a solution produces, and where it belongs."""

    solution: Path
    spec: AssignmentSpec
    path: Path
    text: str

    def in_sync(self) -> bool:
        """Whether the file on disk holds exactly these bytes."""
        return self.path.is_file() and self.path.read_bytes() == self.text.encode("utf-8")

    def difference(self) -> str:
        """How the file on disk departs from this notebook, in a few words ('' when equal)."""
        if not self.path.is_file():
            return "missing"
        if self.in_sync():
            return ""
        try:
            current = nbformat.reads(self.path.read_text(encoding="utf-8"), as_version=4)
        except (OSError, ValueError, UnicodeDecodeError):
            return "not a readable notebook"
        wanted = nbformat.reads(self.text, as_version=4)
        for index, (old, new) in enumerate(zip(current.cells, wanted.cells, strict=False)):
            if old != new:
                return f"cell {index} differs"
        if len(current.cells) != len(wanted.cells):
            return f"{len(current.cells)} cells instead of {len(wanted.cells)}"
        return "metadata or formatting differs"

    def write(self) -> None:
        """Write the notebook (bytes, so no platform newline translation creeps in)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(self.text.encode("utf-8"))


def course_of(solution: Path) -> Path:
    """The course folder of a solution notebook: the parent of its `solutions/` folder."""
    return solution.resolve().parent.parent


def solutions_in(course: Path) -> list[Path]:
    """Every solution notebook of a course, by name."""
    return sorted((course / "solutions").glob("*.ipynb"))


def spec_for_solution(solution: Path, course: Path | None = None) -> AssignmentSpec:
    """The spec of a solution: `assignments/<solution stem>.toml`, which must name it back."""
    course = course or course_of(solution)
    path = course / "assignments" / f"{solution.stem}.toml"
    if not path.is_file():
        raise AuthoringError([f"{solution}: no spec at {path}; write the spec first"])
    try:
        spec = load_spec(path)
    except SpecError as exc:
        try:
            # Answers that no longer fit the examples or functions are written again below.
            spec = load_spec(path, without_answers=True)
        except SpecError:
            raise AuthoringError([str(exc)]) from None
    problems = []
    if spec.name != solution.stem:
        # `grader check` finds a spec from the name in the notebook's metadata, by file name.
        problems.append(f"{path}: name = {spec.name!r} but the file is {solution.stem}.toml; "
                        "they must agree")
    if spec.reference_path != solution.resolve():
        problems.append(f"{path}: reference = {str(spec.reference)!r} is "
                        f"{spec.reference_path}, not the solution {solution.resolve()}")
    if problems:
        raise AuthoringError(problems)
    return spec


def _where(solution: Path, index: int, cell: nbformat.NotebookNode, line: int | None = None
           ) -> str:
    cell_id = f" (id {cell['id']!r})" if cell.get("id") else ""
    at_line = f", line {line}" if line is not None else ""
    return f"{solution}: cell {index}{cell_id}{at_line}"


def _regions(source: str) -> Iterator[tuple[int, int | None, str | None]]:
    """(BEGIN line, END line, problem) for each marked region, lines counted from 1."""
    begin: int | None = None
    for number, line in enumerate(source.split("\n"), start=1):
        if _BEGIN.fullmatch(line):
            if begin is not None:
                yield number, None, f"# BEGIN SOLUTION inside the region opened at line {begin}"
            begin = number
        elif _END.fullmatch(line):
            if begin is None:
                yield number, None, "# END SOLUTION without a # BEGIN SOLUTION before it"
            else:
                yield begin, number, None
            begin = None
        elif _MARKER_LIKE.search(line):
            yield number, None, (f"{line.strip()!r} looks like a solution marker but is not "
                                 "exactly '# BEGIN SOLUTION' or '# END SOLUTION' on its own line")
    if begin is not None:
        yield begin, None, "# BEGIN SOLUTION without a matching # END SOLUTION"


def _enclosing_function(tree: ast.Module, begin: int, end: int) -> str | None:
    """The top-level function whose body holds lines begin..end, if exactly one does."""
    owner: str | None = None
    for node in tree.body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        last = node.end_lineno or node.lineno
        # The END marker is a comment after the function's last statement, so only BEGIN must
        # fall inside the function; no other statement may start or end inside the region.
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and first < begin <= last:
            owner = node.name
        elif first <= end and last >= begin:
            return None
    return owner


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _is_solution_only(cell: nbformat.NotebookNode) -> bool:
    return SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", [])


def clear_solutions(nb: nbformat.NotebookNode, spec: AssignmentSpec, solution: Path
                    ) -> nbformat.NotebookNode:
    """The student version of a solution notebook; raises AuthoringError listing every mistake."""
    graded = {f.name for f in spec.functions}
    problems: list[str] = []
    defined: set[str] = set()
    student = copy.deepcopy(nb)
    student.cells = []
    for index, cell in enumerate(nb.cells):
        if _is_solution_only(cell):
            continue
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                problems.append(f"{_where(solution, index, cell, exc.lineno)}: the solution "
                                f"does not parse ({exc.msg})")
                tree = ast.Module(body=[], type_ignores=[])
            for begin, end, problem in _regions(cell.source):
                if problem is not None:
                    problems.append(f"{_where(solution, index, cell, begin)}: {problem}")
                    continue
                function = _enclosing_function(tree, begin, end or begin)
                if function is None:
                    problems.append(f"{_where(solution, index, cell, begin)}: a solution region "
                                    "must lie inside the body of one top-level function; only "
                                    "function bodies can become stubs")
                elif function not in graded:
                    problems.append(f"{_where(solution, index, cell, begin)}: {function} is "
                                    f"stubbed but {spec.source} does not grade it")
            cell.source = SOLUTION_REGION.sub(rf"\g<indent>{STUB}", cell.source)
            cell.outputs = []
            cell.execution_count = None
            try:
                defined |= _defined_names(ast.parse(cell.source))
            except SyntaxError as exc:
                problems.append(f"{_where(solution, index, cell, exc.lineno)}: the student "
                                f"version of this cell does not parse ({exc.msg})")
        student.cells.append(cell)
    for name in sorted(graded - defined):
        problems.append(f"{solution}: {spec.source} grades {name}, but no code cell of the "
                        f"student notebook defines it at top level")
    if problems:
        raise AuthoringError(problems)
    student.metadata["grader"] = {"assignment": spec.name}
    return student


def build_student_notebook(solution: Path, course: Path | None = None) -> StudentNotebook:
    """The student notebook of one solution, checked but not written."""
    spec = spec_for_solution(solution, course)
    try:
        nb = nbformat.read(solution, as_version=4)
    except (OSError, ValueError) as exc:
        raise AuthoringError([f"{solution}: cannot read the notebook: {exc}"]) from None
    student = clear_solutions(nb, spec, solution)
    text = nbformat.writes(student)
    return StudentNotebook(solution=solution, spec=spec, path=spec.notebook_path,
                           text=text if text.endswith("\n") else text + "\n")


def orphans(course: Path, produced: set[Path]) -> list[Path]:
    """Notebooks in `assignments/` that no solution produces."""
    return [p for p in sorted((course / "assignments").glob("*.ipynb"))
            if p.resolve() not in produced]


# --- [example_answers]: each function's result on each worked example, from the reference ----

ANSWERS_TABLE = "[example_answers]"
_HEADER = re.compile(r"^\s*\[")
_KEY = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


def _toml(value: Any) -> str | None:
    """A reference result as a TOML value (numbers, arrays up to 2-D, dicts of them), or None
    when the spec cannot state it (a tuple, a 3-D array, nan)."""
    if isinstance(value, dict):
        parts = {k: _toml(v) for k, v in value.items()}
        if not all(isinstance(k, str) and k.isidentifier() for k in parts) or None in (
                parts.values()):
            return None
        return "{ " + ", ".join(f"{k} = {v}" for k, v in parts.items()) + " }"
    if isinstance(value, bool) or not isinstance(value, int | float | np.generic | np.ndarray):
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.ndim > 2 or not np.all(np.isfinite(array)):
        return None
    if array.ndim == 0:
        return repr(array.item()) if array.dtype.kind == "f" else str(int(array))
    return "[" + ", ".join(_toml(v) or "" for v in (array.astype(float) if array.ndim == 1
                                                      else array)) + "]"


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, dict) or isinstance(new, dict):
        return (isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys()
                and all(_same(old[k], new[k]) for k in old))
    a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    return a.shape == b.shape and bool(np.all(a == b))


@dataclass(frozen=True)
class ExampleAnswers:
    """The `[example_answers]` a spec should hold, and the spec text that holds them."""

    spec: AssignmentSpec
    answers: dict[str, list[Any]]
    lines: dict[str, str]
    skipped: list[str]

    @property
    def path(self) -> Path:
        return self.spec.source

    def stale(self) -> list[str]:
        """The functions whose answers in the spec differ from the reference's."""
        held = self.spec.example_answers
        return [name for name, values in self.answers.items()
                if name not in held or not all(_same(a, b) for a, b in
                                                zip(held[name], values, strict=True))] + [
            name for name in held if name not in self.answers]

    def text(self) -> str:
        """The spec file with its `[example_answers]` table written (added if absent)."""
        lines = self.path.read_text(encoding="utf-8").split("\n")
        table = [f"{name} = {line}" for name, line in self.lines.items()]
        start = next((i for i, line in enumerate(lines) if line.strip() == ANSWERS_TABLE), None)
        if start is None:
            at = next(i for i, line in enumerate(lines) if line.strip() == "[[functions]]")
            while at > 0 and lines[at - 1].startswith("#"):
                at -= 1  # the comment that introduces the first function stays with it
            block = ["# Each function's result on each example above, written by `grader "
                     "assign` from the", "# reference: public, so that a self-check without "
                     "the answer key can grade the examples.", ANSWERS_TABLE, *table, ""]
            return "\n".join([*lines[:at], *block, *lines[at:]])
        end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])),
                   len(lines))
        body = lines[start + 1:end]
        keys = [i for i, line in enumerate(body) if _KEY.match(line)]
        # Comments before the first key and after the last one's value stay where they are.
        first = keys[0] if keys else 0
        last = first
        if keys:
            last = keys[-1] + 1
            while last < len(body) and body[last].strip() and not body[last].startswith("#"):
                last += 1  # a value written over several lines
        return "\n".join([*lines[:start + 1], *body[:first], *table, *body[last:],
                          *lines[end:]])

    def write(self) -> None:
        """Rewrite the spec file, keeping everything but the table's entries; the new text is
        validated first, so a spec that loaded before still loads."""
        text = self.text()
        data = tomllib.loads(text)
        if data.get("example_answers") != {k: v for k, v in self.answers.items()}:
            raise AuthoringError([f"{self.path}: could not rewrite [example_answers] in place; "
                                  "write the table by hand once, then run grader assign"])
        self.path.write_bytes(text.encode("utf-8"))


def example_answers(spec: AssignmentSpec) -> ExampleAnswers:
    """Each function's result on each worked example, computed with the reference notebook.

    A function whose results the spec cannot state (a tuple, say) is left out and named in
    `skipped`: a self-check without the answer key then does not grade its examples.
    """
    from grader.judge.cases import example_cases
    from grader.judge.expressions import evaluate_spec
    from grader.judge.reference import reference_namespace
    from grader.judge.speccheck import verify

    verify(spec)
    namespace = reference_namespace(spec)
    cases = example_cases(spec, namespace)
    answers: dict[str, list[Any]] = {}
    lines: dict[str, str] = {}
    skipped: list[str] = []
    for f in spec.functions:
        if not cases:
            break
        results = [evaluate_spec(spec, f"{f.name}: expect", f.expected_expression, namespace,
                                 **case.variables) for case in cases]
        texts = [_toml(r) for r in results]
        if None in texts:
            skipped.append(f.name)
            continue
        lines[f.name] = "[" + ", ".join(t for t in texts if t is not None) + "]"
        answers[f.name] = [tomllib.loads(f"v = {t}")["v"] for t in texts if t is not None]
    return ExampleAnswers(spec=spec, answers=answers, lines=lines, skipped=skipped)
