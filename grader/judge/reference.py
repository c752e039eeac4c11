"""The reference and handout notebooks, run in the grader's process: trusted instructor code."""

from __future__ import annotations

import contextlib
import io
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nbformat

from grader.judge.expressions import helpers
from grader.spec import AssignmentSpec, SpecError


@cache
def _namespace_of(path: Path, mtime_ns: int, handout: bool = False
                  ) -> MappingProxyType[str, Any]:
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read reference notebook {path}: {exc}") from None
    namespace: dict[str, Any] = {"__name__": "__reference__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                exec(compile(cell.source, f"{path.name}[cell {index}]", "exec"), namespace)
            except NotImplementedError:
                if not handout:
                    raise SpecError(f"reference notebook {path} still has a stub in cell "
                                    f"{index}") from None
                # A handout's own try-it cells call the exercise stubs: expected to stop there.
            except Exception as exc:
                raise SpecError(
                    f"reference notebook {path} fails in cell {index}: {exc!r}") from exc
    return MappingProxyType(namespace)


def require_answer_key(spec: AssignmentSpec) -> None:
    """Raise SpecError, naming the course, when the spec's reference notebook is missing."""
    path = spec.reference_path
    if not path.is_file():
        course = spec.source.parent.parent
        raise SpecError(f"no answer key for {spec.name} in the course at {course} ({path} is "
                        "missing): without it only a public self-check (--public) runs")


def reference_namespace(spec: AssignmentSpec) -> dict[str, Any]:
    """Globals of the executed reference notebook, plus the helpers spec expressions may use."""
    require_answer_key(spec)
    path = spec.reference_path
    namespace = dict(_namespace_of(path, path.stat().st_mtime_ns))
    missing = [f.name for f in spec.functions if not callable(namespace.get(f.name))]
    if missing:
        raise SpecError(f"reference notebook {path} does not define {', '.join(missing)}")
    return namespace | helpers()


def handout_namespace(spec: AssignmentSpec) -> dict[str, Any]:
    """Globals of the executed student handout (no answer key): what a public self-check uses.

    The handout is instructor code too; its exercise functions are stubs that raise
    NotImplementedError, so only expressions that avoid them can be evaluated here.
    """
    path = spec.notebook_path
    if not path.is_file():
        raise SpecError(f"the student notebook of {spec.name} is not installed: {path}")
    return dict(_namespace_of(path, path.stat().st_mtime_ns, handout=True)) | helpers()
