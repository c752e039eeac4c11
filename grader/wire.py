"""What comes back from the kernel: strictly validated plain values, never student objects."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# What no text of the grader may carry: lone surrogates, which no JSON encoder writes as UTF-8
# (one would stop a report from being written at all), and control characters other than tab and
# newline, which a terminal acts on. A notebook can put either into an exception message or a
# type's name, and one that replaces its kernel's message packer sends them on unescaped.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """`text` with each character no report may carry replaced by U+FFFD (so its length, and
    any length limit it meets, stay the same)."""
    return _UNSAFE.sub("\ufffd", text)


def safe_strings(value: Any) -> Any:
    """`value` with safe_text applied to every string in it, dict keys included, at any depth
    of dicts and lists (tuples become lists, as in JSON)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_strings(k): safe_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_strings(v) for v in value]
    return value


# The longest text (a type's name, an exception's message) a value may carry: the harness cuts
# every text it sends to this length, and the models accept no longer one.
MAX_TEXT = 500

# Non-finite floats travel as strings because JSON has no NaN or infinity.
WireFloat = float | Literal["nan", "inf", "-inf"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Number(_Wire):
    kind: Literal["number"]
    type: str = Field(max_length=MAX_TEXT)
    dtype: str = Field(max_length=MAX_TEXT)
    value: WireFloat


# An array holds at most this many numbers: far more than any case calls for.
MAX_ITEMS = 100_000

# The most axes an array may have: numpy's own limit.
MAX_DIMS = 64


class Array(_Wire):
    kind: Literal["array"]
    type: str = Field(max_length=MAX_TEXT)
    dtype: str = Field(max_length=MAX_TEXT)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_DIMS)
    data: list[WireFloat] = Field(max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _size_matches_shape(self) -> Array:
        if math.prod(self.shape) != len(self.data):
            raise ValueError("array data does not match its shape")
        # An empty array can still claim a shape numpy cannot make ((2**62, 2**62, 0)): bound
        # every dimension as if the others held one item each.
        if math.prod(max(n, 1) for n in self.shape) > MAX_ITEMS:
            raise ValueError("array shape is larger than any result may be")
        return self


# The longest key a dict value may have.
MAX_KEY = 100

# Containers hold at most this many entries; their values are plain numbers and arrays (a sequence
# may also hold dicts), so the wire format has a fixed, shallow depth and nothing recursive.
MAX_ENTRIES = 64


class DictValue(_Wire):
    """A dict with string keys, each mapped to a number or an array (e.g. parameters by name)."""

    kind: Literal["dict"]
    type: str = Field(max_length=MAX_TEXT)
    entries: dict[Annotated[str, Field(max_length=MAX_KEY)], Number | Array] = Field(
        max_length=MAX_ENTRIES)


class SequenceValue(_Wire):
    """A tuple or list that is not one array, e.g. (parameters, cost history)."""

    kind: Literal["sequence"]
    type: str = Field(max_length=MAX_TEXT)
    items: list[Number | Array | DictValue] = Field(max_length=MAX_ENTRIES)


class NoneValue(_Wire):
    kind: Literal["none"]


class Unsupported(_Wire):
    kind: Literal["unsupported"]
    type: str = Field(max_length=MAX_TEXT)


class TooLarge(_Wire):
    kind: Literal["too_large"]
    type: str = Field(max_length=MAX_TEXT)
    size: int


class Raised(_Wire):
    kind: Literal["raised"]
    type: str = Field(max_length=MAX_TEXT)
    message: str = Field(max_length=MAX_TEXT)


class NotImplementedOutcome(_Wire):
    kind: Literal["not_implemented"]
    message: str = Field(max_length=MAX_TEXT)


class Missing(_Wire):
    kind: Literal["missing"]
    found: str | None = Field(default=None, max_length=MAX_TEXT,
                              description="The type of what the name holds, if not a function.")


class Timeout(_Wire):
    kind: Literal["timeout"]


class KernelDied(_Wire):
    kind: Literal["kernel_died"]


Outcome = Annotated[
    Number | Array | DictValue | SequenceValue | NoneValue | Unsupported | TooLarge | Raised
    | NotImplementedOutcome | Missing | Timeout | KernelDied,
    Field(discriminator="kind"),
]


# A value as the harness encodes one: what a function returned, an argument it left behind, or
# an argument it passed to a stand-in.
Value = Annotated[
    Number | Array | DictValue | SequenceValue | NoneValue | Unsupported | TooLarge,
    Field(discriminator="kind"),
]

# A call, or a call to a stand-in, passes at most this many arguments that the grader reads back.
MAX_ARGUMENTS = 32

# A stand-in records at most this many calls per case; a function that calls it more often, or
# on more values than max_items in all, shows no evidence.
MAX_STAND_IN_CALLS = 16


class StandInCall(_Wire):
    """One call a student function made to a stand-in: the values it passed, as encoded then."""

    function: str = Field(max_length=MAX_TEXT)
    arguments: list[Value] = Field(max_length=MAX_ARGUMENTS)


class CallMessage(_Wire):
    """One message of the harness: the outcome of one call (case -1: the function is missing).

    `after` holds each array or dict argument as the call left it (null for the others), so
    that the grader, not the kernel, decides whether the function changed its arguments.
    """

    nonce: str
    function: str
    case: int = Field(ge=-1)
    outcome: Outcome
    after: list[Value | None] = Field(default_factory=list, max_length=MAX_ARGUMENTS)
    stand_in_calls: list[StandInCall] = Field(default_factory=list,
                                              max_length=MAX_STAND_IN_CALLS)
    stand_in_overflow: bool = Field(False, description="The stand-ins were called more often, "
                                    "or on more values, than they record.")


class Call(_Wire):
    """The outcome of calling one student function on one case, as the judge sees it.

    `mutated` lists the arguments the call changed, as the grader found by comparing what it
    sent with what came back; `stand_in_calls` what the function passed to the stand-ins of a
    second-phase call.
    """

    outcome: Outcome
    mutated: list[Annotated[int, Field(ge=0, lt=MAX_ARGUMENTS)]] = Field(
        default_factory=list, max_length=MAX_ARGUMENTS)
    stand_in_calls: list[StandInCall] = Field(default_factory=list,
                                              max_length=MAX_STAND_IN_CALLS)
    stand_in_overflow: bool = False


def _float(v: WireFloat) -> float:
    return float(v)  # "nan", "inf" and "-inf" parse as the float they name


def as_array(outcome: Number | Array) -> np.ndarray:
    """A fresh float64 array of the value: all the judge ever compares."""
    if isinstance(outcome, Number):
        return np.array(_float(outcome.value), dtype=np.float64)
    data = np.array([_float(v) for v in outcome.data], dtype=np.float64)
    return data.reshape(outcome.shape)


# A plain value as the judge sees it: an array, a dict of arrays, or a list of those.
Plain = np.ndarray | dict[str, np.ndarray] | list["Plain"]


def as_plain(outcome: Number | Array | DictValue | SequenceValue) -> Plain:
    """Fresh float64 arrays for every number and array; dicts and sequences keep their form."""
    if isinstance(outcome, DictValue):
        return {key: as_array(value) for key, value in outcome.entries.items()}
    if isinstance(outcome, SequenceValue):
        return [as_plain(item) for item in outcome.items]
    return as_array(outcome)


def _exact(_dtype: str) -> float:
    return 0.0


def same_value(sent: Any, back: Value | None, rtol: Callable[[str], float] = _exact) -> bool:
    """Whether an encoded value is the argument the grader sent: same shape, keys and numbers,
    exactly, or within the relative tolerance `rtol` gives the dtype it came back in. Decided
    here, from values, since nothing in the student's kernel is trusted."""
    if isinstance(sent, dict):
        return (isinstance(back, DictValue) and back.entries.keys() == sent.keys()
                and all(same_value(v, back.entries[k], rtol) for k, v in sent.items()))
    if not isinstance(back, Number | Array):
        return False
    expected = np.asarray(sent, dtype=np.float64)
    got = as_array(back)
    # A nan or an infinity is never within any tolerance of the finite values sent.
    return got.shape == expected.shape and bool(
        np.all(np.abs(got - expected) <= rtol(back.dtype) * np.abs(expected)))


def changed_arguments(sent: Sequence[Any], after: Sequence[Value | None]) -> list[int]:
    """The positions of the array and dict arguments a call did not leave as they were sent.

    Numbers are immutable and functions (spec code) are not sent back; an array or dict argument
    that did not come back at all counts as changed.
    """
    changed = []
    for i, value in enumerate(sent):
        if not is_container(value):
            continue
        back = after[i] if i < len(after) else None
        if not same_value(value, back):
            changed.append(i)
    return changed


def is_container(value: Any) -> bool:
    """An argument a function could change in place: a dict, or an array of one or more axes
    (numbers and spec code are neither). The harness sends these back after each call."""
    return isinstance(value, dict) or (not callable(value) and np.ndim(value) > 0)
