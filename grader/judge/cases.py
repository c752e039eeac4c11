"""Test cases: fixed examples and seeded random draws, computed in the grader process."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.judge.expressions import evaluate
from grader.spec import AssignmentSpec, CaseSet, SpecError, code


@dataclass(frozen=True)
class Case:
    """One set of case variables; `visible` cases may be shown to the student in full."""

    case_set: CaseSet
    index: int
    variables: dict[str, Any] = field(repr=False)

    @property
    def visible(self) -> bool:
        return self.case_set is CaseSet.EXAMPLES

    @property
    def label(self) -> str:
        return f"{self.case_set.value}[{self.index}]"


# Seeds are stored in SQLite's signed 64-bit INTEGER: 63 bits, well beyond guessing.
SEED_BITS = 63


def keyed_seed(secret: bytes, assignment: str, student: str) -> int:
    """The seed of a student's graded cases: an HMAC of the assignment and the student id under
    a secret only the instructor holds. Without the secret no seed can be computed, and the
    seeds of other students (or other assignments) say nothing about this one."""
    message = json.dumps([assignment, student]).encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def fresh_seed() -> int:
    """A seed nobody can predict: cases drawn for one run only (a self-check, a single check)."""
    return secrets.randbits(SEED_BITS)


class _Draws:
    """Random draws bound to one case's shape; the names spec expressions call."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
        self._rng = rng
        self._shape = shape

    def _out(self, values: np.ndarray, shape: tuple[int, ...] | None) -> Any:
        shape = self._shape if shape is None else tuple(shape)
        return float(values) if shape == () else values

    def uniform(self, low: float, high: float, shape: tuple[int, ...] | None = None) -> Any:
        size = self._shape if shape is None else tuple(shape)
        return self._out(self._rng.uniform(low, high, size=size), shape)

    def signed(self, low: float, high: float, shape: tuple[int, ...] | None = None) -> Any:
        """Magnitude in [low, high) with a random sign: keeps a value away from zero."""
        size = self._shape if shape is None else tuple(shape)
        magnitude = self._rng.uniform(low, high, size=size)
        return self._out(np.where(self._rng.random(size) < 0.5, -magnitude, magnitude), shape)

    def choice(self, values: Sequence[float], shape: tuple[int, ...] | None = None) -> Any:
        """One of `values` for each entry, of their type: whole numbers stay whole (a count, a
        size), any float among them makes every entry a float."""
        size = self._shape if shape is None else tuple(shape)
        pool = np.asarray(values)
        if pool.ndim != 1 or pool.dtype.kind not in "iuf":
            raise ValueError(f"choice takes a list of numbers, not {values!r}")
        drawn = self._rng.choice(pool, size=size)
        return drawn.item() if size == () else drawn

    def labels(self, classes: int, shape: tuple[int, ...] | None = None) -> Any:
        """Class indices 0 .. classes-1, uniformly drawn, as whole numbers."""
        if int(classes) != classes or classes < 1:
            raise ValueError(f"labels takes a positive whole number of classes, not {classes!r}")
        return self.choice(list(range(int(classes))), shape)

    def names(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DRAWS}


# The draws a variable may call; an example, which draws nothing, gives such variables itself.
DRAWS = ("uniform", "signed", "choice", "labels")


def one_hot(labels: Any, classes: int) -> np.ndarray:
    """Targets of shape (classes, m) for m class indices: column j is 1 in row labels[j]."""
    index = np.asarray(labels)
    if index.ndim != 1 or not np.all(index == np.round(index)):
        raise ValueError("one_hot takes a 1-D sequence of whole class indices")
    index = index.astype(int)
    if np.any(index < 0) or np.any(index >= classes):
        raise ValueError(f"one_hot: a class index outside 0..{classes - 1}")
    targets = np.zeros((int(classes), index.size))
    targets[index, np.arange(index.size)] = 1.0
    return targets


class CaseVariableError(SpecError):
    """A case variable whose expression fails: the spec's, or a handout without the answer key
    that cannot compute it."""


def _fill(spec: AssignmentSpec, namespace: dict[str, Any], given: dict[str, Any],
          draws: _Draws | None, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, expression in spec.variables.items():
        targets = [t.strip() for t in key.split(",")]
        if len(targets) == 1 and targets[0] in given:
            values[targets[0]] = given[targets[0]]
            continue
        scope = namespace | {"code": code, "one_hot": one_hot} | (draws.names() if draws else {})
        try:
            result = evaluate(expression, scope, **values)
        except NotImplementedError:
            raise CaseVariableError(
                f"{spec.name} cannot be checked without its answer key: case variable "
                f"{key!r} = {expression!r} calls an exercise function of the handout") from None
        except Exception as exc:
            if draws is None and isinstance(exc, NameError) and exc.name in DRAWS:
                raise CaseVariableError(
                    f"assignment {spec.name}: {where} does not give {key!r}, which is drawn "
                    f"({expression!r}); an example gives every drawn variable") from None
            raise CaseVariableError(
                f"assignment {spec.name}: case variable {key!r} = {expression!r} raised "
                f"{type(exc).__name__} on {where}: {exc}") from None
        if len(targets) == 1:
            values[targets[0]] = result
        else:
            values.update(zip(targets, result, strict=True))
    return values


def _as_value(raw: Any) -> Any:
    if isinstance(raw, int | float):
        return raw if isinstance(raw, int) else float(raw)
    return np.asarray(raw, dtype=float)


def example_cases(spec: AssignmentSpec, namespace: dict[str, Any]) -> list[Case]:
    """The worked examples, with their computed variables."""
    return [Case(CaseSet.EXAMPLES, i,
                 _fill(spec, namespace, {k: _as_value(v) for k, v in ex.items()}, None,
                       f"example {i + 1}"))
            for i, ex in enumerate(spec.examples)]


def make_cases(spec: AssignmentSpec, namespace: dict[str, Any], seed: int) -> list[Case]:
    """Every case of a submission: the examples, then scalar, vector and matrix draws (or the
    batches, for a spec that draws batches)."""
    cases = example_cases(spec, namespace)
    rng = np.random.default_rng(seed)
    shapes: list[tuple[CaseSet, tuple[int, ...]]]
    if spec.cases.batches:
        shapes = [(CaseSet.BATCH, ())] * spec.cases.batches
    else:
        shapes = [(CaseSet.SCALAR, ())] * spec.cases.scalar
        shapes += [(CaseSet.VECTOR, spec.cases.vector), (CaseSet.MATRIX, spec.cases.matrix)]
    counters: dict[CaseSet, int] = {}
    for case_set, shape in shapes:
        index = counters[case_set] = counters.get(case_set, -1) + 1
        cases.append(Case(case_set, index, _fill(spec, namespace, {}, _Draws(rng, shape),
                                                 f"a drawn {case_set.value} case")))
    return cases


def call_args(spec: AssignmentSpec, function: str, case: Case) -> list[Any]:
    """The positional arguments a function gets for a case."""
    return [case.variables[name] for name in spec.function(function).args]
