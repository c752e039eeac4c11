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
from grader.spec import AssignmentSpec, CaseSet, code


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
        size = self._shape if shape is None else tuple(shape)
        return self._out(self._rng.choice(np.asarray(values, dtype=float), size=size), shape)

    def names(self) -> dict[str, Any]:
        return {"uniform": self.uniform, "signed": self.signed, "choice": self.choice}


def _fill(spec: AssignmentSpec, namespace: dict[str, Any], given: dict[str, Any],
          draws: _Draws | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, expression in spec.variables.items():
        targets = [t.strip() for t in key.split(",")]
        if len(targets) == 1 and targets[0] in given:
            values[targets[0]] = given[targets[0]]
            continue
        scope = namespace | {"code": code} | (draws.names() if draws else {})
        result = evaluate(expression, scope, **values)
        if len(targets) == 1:
            values[targets[0]] = result
        else:
            values.update(zip(targets, result, strict=True))
    return values


def _as_value(raw: Any) -> Any:
    if isinstance(raw, int | float):
        return raw if isinstance(raw, int) else float(raw)
    return np.asarray(raw, dtype=float)


def make_cases(spec: AssignmentSpec, namespace: dict[str, Any], seed: int) -> list[Case]:
    """Every case of a submission: the examples, then scalar, vector and matrix draws."""
    cases = [
        Case(CaseSet.EXAMPLES, i,
             _fill(spec, namespace, {k: _as_value(v) for k, v in ex.items()}, None))
        for i, ex in enumerate(spec.examples)
    ]
    rng = np.random.default_rng(seed)
    shapes: list[tuple[CaseSet, tuple[int, ...]]] = [(CaseSet.SCALAR, ())] * spec.cases.scalar
    shapes += [(CaseSet.VECTOR, spec.cases.vector), (CaseSet.MATRIX, spec.cases.matrix)]
    counters: dict[CaseSet, int] = {}
    for case_set, shape in shapes:
        index = counters[case_set] = counters.get(case_set, -1) + 1
        cases.append(Case(case_set, index, _fill(spec, namespace, {}, _Draws(rng, shape))))
    return cases


def call_args(spec: AssignmentSpec, function: str, case: Case) -> list[Any]:
    """The positional arguments a function gets for a case."""
    return [case.variables[name] for name in spec.function(function).args]
