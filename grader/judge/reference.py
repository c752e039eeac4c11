"""The reference solution, run in the grader's own process: it is trusted instructor code."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import FunctionType, MappingProxyType
from typing import Any

import nbformat
import numpy as np

from grader.spec import AssignmentSpec, SpecError

# Central differences: truncation error ~ h^2 |f'''| / 6 and rounding error ~ eps |f| / h balance
# at h ~ eps^(1/3) ~ 6e-6 (scaled by the size of the value), for an error near 1e-10 on O(1)
# costs.
_STEP = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)


def derivative(func: Callable[[np.ndarray], Any], at: Any) -> Any:
    """Central-difference derivative of an element-wise function at each element of `at`."""
    point = np.asarray(at, dtype=np.float64)
    h = _STEP * np.maximum(1.0, np.abs(point))
    plus, minus = point + h, point - h
    # Divide by the step actually taken, which rounding may have changed.
    slope = (np.asarray(func(plus), dtype=np.float64)
             - np.asarray(func(minus), dtype=np.float64)) / (plus - minus)
    return float(slope) if slope.ndim == 0 else slope


def gradient(func: Callable[[np.ndarray], Any], at: Any) -> np.ndarray:
    """Central-difference gradient of sum(func(v)) with respect to every entry of v, at `at`."""
    base = np.array(at, dtype=np.float64)
    grad = np.empty(base.shape, dtype=np.float64)
    for idx in np.ndindex(base.shape):
        h = _STEP * max(1.0, abs(float(base[idx])))
        plus, minus = base.copy(), base.copy()
        plus[idx] += h
        minus[idx] -= h
        # Divide by the step actually taken, which rounding may have changed.
        grad[idx] = (np.sum(func(plus)) - np.sum(func(minus))) / (plus[idx] - minus[idx])
    return grad


def _builtin_helpers() -> dict[str, Any]:
    # Spec expressions compare whole arrays; the builtins all/any/abs would iterate rows instead.
    return {"np": np, "all": np.all, "any": np.any, "abs": np.abs, "derivative": derivative,
            "gradient": gradient}


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


def handout_namespace(spec: AssignmentSpec) -> dict[str, Any]:
    """Globals of the executed student handout (no answer key): what a public self-check uses.

    The handout is instructor code too; its exercise functions are stubs that raise
    NotImplementedError, so only expressions that avoid them can be evaluated here.
    """
    path = spec.notebook_path
    if not path.is_file():
        raise SpecError(f"the student notebook of {spec.name} is not installed: {path}")
    return dict(_namespace_of(path, path.stat().st_mtime_ns, handout=True)) | _builtin_helpers()


def with_substitutes(namespace: dict[str, Any], substitutes: dict[str, Callable[..., Any]]
                     ) -> dict[str, Any]:
    """The namespace with some functions replaced, also inside the other reference functions.

    Used to evaluate the reference formula of one function with the values of another function
    as the student's own code computed them: the reference's `delta2` calling a stand-in
    `sigmoid_prime` that answers with what the student's `sigmoid_prime` returned.
    """
    out = dict(namespace) | substitutes
    scopes: dict[int, dict[str, Any]] = {}
    for name, obj in namespace.items():
        if not isinstance(obj, FunctionType) or name in substitutes:
            continue
        scope = scopes.setdefault(id(obj.__globals__), obj.__globals__ | substitutes)
        rebound = FunctionType(obj.__code__, scope, obj.__name__, obj.__defaults__,
                               obj.__closure__)
        rebound.__kwdefaults__ = obj.__kwdefaults__
        if scope.get(name) is obj:
            scope[name] = rebound  # so rebound functions call each other, not the originals
        out[name] = rebound
    return out


def evaluate(expression: str, namespace: dict[str, Any], **names: Any) -> Any:
    """Evaluate a spec expression (trusted text) with extra names bound.

    A student's values may overflow the cost of a diverging network, say: that is a verdict
    for the judge to reach, not a warning for the grader's console.
    """
    with np.errstate(all="ignore"):
        return eval(expression, namespace | names)
