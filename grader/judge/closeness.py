"""Whether a student's value is close enough to the expected one, and how to say it is not."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from grader.spec import within
from grader.wire import Plain


def plain(value: Any) -> Plain:
    """A reference value in the form student values take: float64 arrays, dicts, lists."""
    if isinstance(value, dict):
        return {str(k): np.asarray(v, dtype=np.float64) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):
            return [plain(v) for v in value]
        try:
            return np.asarray(value, dtype=np.float64)
        except ValueError:  # parts of different shapes: a sequence, not one array
            return [plain(v) for v in value]
    return np.asarray(value, dtype=np.float64)


def describe(value: Plain, known: Collection[str] | None = None) -> str:
    """What kind of value this is, in words: its shape, or its keys.

    A student's value names only the keys in `known` (the reference's) and counts the others: a
    key is text the notebook chose, and on a hidden case it could spell out the inputs. None
    names every key (a reference value, or a visible case).
    """
    if isinstance(value, dict):
        if known is None:
            return f"a dict with keys {sorted(value)}"
        named = sorted(k for k in value if k in known)
        others = len(value) - len(named)
        plural = "s" if others != 1 else ""
        if not named:
            return f"a dict with {others} key{plural} of the notebook's own"
        return f"a dict with keys {named}" + (f" and {others} other key{plural}" if others else "")
    if isinstance(value, list):
        return f"a sequence of {len(value)} values"
    return _shape_words(value.shape)


def known_keys(value: Plain) -> Collection[str]:
    """The keys a student's value may be described by: those of the reference's value."""
    return value.keys() if isinstance(value, dict) else ()


def _shape_words(shape: tuple[int, ...]) -> str:
    return "a scalar" if shape == () else f"an array of shape {shape}"


def compare(expected: Any, got: Plain, rtol: float, atol: float) -> tuple[bool, str, float]:
    """Same shape and values within atol + rtol * |expected|; returns (ok, reason, rel error).

    Dicts match key by key (same keys), sequences item by item (same length).
    """
    exp = plain(expected)
    if isinstance(exp, dict | list) or isinstance(got, dict | list):
        return _compare_parts(exp, got, rtol, atol)
    if exp.shape != got.shape:
        return False, f"expected shape {exp.shape} but got shape {got.shape}", float("inf")
    if not np.all(np.isfinite(got)):
        return False, "the result contains nan or inf", float("inf")
    ok = within(got, exp, rtol, atol)
    rel = float(np.max(np.abs(got - exp) / np.maximum(np.abs(exp), atol), initial=0.0))
    return ok, "" if ok else "wrong value", rel


def _compare_parts(exp: Plain, got: Plain, rtol: float, atol: float) -> tuple[bool, str, float]:
    if type(exp) is not type(got):
        got_words = describe(got, known_keys(exp))
        return False, f"expected {describe(exp)} but got {got_words}", float("inf")
    if isinstance(exp, dict):
        assert isinstance(got, dict)
        if exp.keys() != got.keys():
            return False, f"expected {describe(exp)} but got {describe(got, exp)}", float("inf")
        pairs = [(repr(k), exp[k], got[k]) for k in exp]
    else:
        assert isinstance(exp, list) and isinstance(got, list)
        if len(exp) != len(got):
            return False, f"expected {describe(exp)} but got {describe(got, ())}", float("inf")
        pairs = [(f"item {i}", e, g) for i, (e, g) in enumerate(zip(exp, got, strict=True))]
    worst = 0.0
    for name, e, g in pairs:
        ok, reason, rel = compare(e, g, rtol, atol)
        if not ok and reason.startswith("expected shape"):
            assert isinstance(g, np.ndarray)
            reason = f"expected {_shape_words(np.shape(e))} but got {_shape_words(g.shape)}"
        if not ok:
            return False, f"{name}: {reason}", rel
        worst = max(worst, rel)
    return True, "", worst


def relative_difference(analytic: np.ndarray, numeric: np.ndarray, atol: float) -> np.ndarray:
    """|a - n| / (|a| + |n|): 1 for a sign error, |r - 1| / (r + 1) for a gradient scaled by r."""
    diff = np.abs(analytic - numeric)
    scale = np.abs(analytic) + np.abs(numeric)
    return np.where(diff <= atol, 0.0, diff / np.where(scale > 0, scale, 1.0))


def finite(value: Plain) -> bool:
    """No nan and no infinity anywhere in the value."""
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return bool(np.all(np.isfinite(value)))


def identical(a: Plain, b: Plain) -> bool:
    """The same form and exactly the same numbers: no tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return False


_HALF = ("float16", "half")
_SINGLE = ("float32", "single")


def precision(dtype: str) -> float:
    """The relative error that rounding to this dtype may leave, from the dtype's name alone: an
    unknown name gets float64's, the strictest."""
    low = np.float16 if dtype in _HALF else np.float32 if dtype in _SINGLE else np.float64
    return 16 * float(np.finfo(low).eps)
