"""Spec expressions: evaluating their trusted text, and the finite differences they may call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def helpers() -> dict[str, Any]:
    """The names every spec expression may use besides the namespace's: numpy and the
    finite differences."""
    # Spec expressions compare whole arrays; the builtins all/any/abs would iterate rows instead.
    return {"np": np, "all": np.all, "any": np.any, "abs": np.abs, "derivative": derivative,
            "gradient": gradient}


def evaluate(expression: str, namespace: dict[str, Any], **names: Any) -> Any:
    """Evaluate a spec expression (trusted text) with extra names bound.

    A student's values may overflow the cost of a diverging network, say: that is a verdict
    for the judge to reach, not a warning for the grader's console.
    """
    with np.errstate(all="ignore"):
        return eval(expression, namespace | names)


class SpecExpressionError(SpecError):
    """A spec expression that failed where no student value can be to blame: the instructor's
    mistake, reported with the assignment and the field."""


def evaluate_spec(spec: AssignmentSpec, field: str, expression: str, namespace: dict[str, Any],
                  **names: Any) -> Any:
    """Evaluate a spec expression whose failure is the spec's: it raises SpecExpressionError
    naming `field` (e.g. "delta2: expect") and the assignment. NotImplementedError passes
    through: a handout's stub, which the caller knows how to take."""
    try:
        return evaluate(expression, namespace, **names)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise spec_failure(spec, field, expression, exc) from exc


def spec_failure(spec: AssignmentSpec, field: str, expression: str, exc: BaseException
                 ) -> SpecExpressionError:
    """The error that blames a spec expression: assignment, field, text and what it raised."""
    return SpecExpressionError(
        f"spec error in assignment {spec.name} ({spec.source}): {field} = {expression!r} "
        f"raised {type(exc).__name__}: {exc}")
