"""The reference solution, run in the grader's own process: it is trusted instructor code."""

from __future__ import annotations

import contextlib
import io
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nbformat
import numpy as np

from grader.spec import AssignmentSpec, SpecError


def _builtin_helpers() -> dict[str, Any]:
    # Spec expressions compare whole arrays; the builtins all/any/abs would iterate rows instead.
    return {"np": np, "all": np.all, "any": np.any, "abs": np.abs}


@cache
def _namespace_of(path: Path, mtime_ns: int) -> MappingProxyType[str, Any]:
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
            except Exception as exc:
                raise SpecError(
                    f"reference notebook {path} fails in cell {index}: {exc!r}") from exc
    return MappingProxyType(namespace)


def reference_namespace(spec: AssignmentSpec) -> dict[str, Any]:
    """Globals of the executed reference notebook, plus the helpers spec expressions may use."""
    path = spec.reference_path
    if not path.is_file():
        raise SpecError(f"the reference notebook of {spec.name} is not installed: {path}")
    namespace = dict(_namespace_of(path, path.stat().st_mtime_ns))
    missing = [f.name for f in spec.functions if not callable(namespace.get(f.name))]
    if missing:
        raise SpecError(f"reference notebook {path} does not define {', '.join(missing)}")
    return namespace | _builtin_helpers()


def evaluate(expression: str, namespace: dict[str, Any], **names: Any) -> Any:
    """Evaluate a spec expression (trusted text) with extra names bound."""
    return eval(expression, namespace | names)
