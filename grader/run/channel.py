"""The harness channel: install the harness in a kernel under a fresh nonce and call functions."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from grader.run.messages import KernelLost
from grader.run.session import CellClient, KernelSession
from grader.spec import Code
from grader.wire import (
    MAX_ARGUMENTS,
    MAX_ENTRIES,
    MAX_ITEMS,
    MAX_KEY,
    MAX_STAND_IN_CALLS,
    MAX_TEXT,
    Call,
    CallMessage,
    KernelDied,
    Missing,
    Raised,
    Timeout,
    changed_arguments,
)

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
MIME = "application/vnd.backprop-grader.result+json"


def literal(value: Any) -> str:
    """Source text of one argument, which the harness decodes: an int or a float, nested lists
    for an array, a dict with string keys of those, or ("code", source, constants) for a
    function the spec defines."""
    if isinstance(value, Code):
        constants = ", ".join(f"{k!r}: {literal(v)}" for k, v in value.constants.items())
        return f"('code', {value.source!r}, {{{constants}}})"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("dict arguments must have string keys")
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(int(value))
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("case arguments must be finite")
    return repr(float(array)) if array.ndim == 0 else repr(array.tolist())


class HarnessChannel:
    """Calls of student functions through the harness, in whichever kernel the session runs.

    The harness is installed, under a nonce drawn then, in each kernel before its first call:
    after the student's cells, so that no cell can know the nonce.
    """

    def __init__(self, session: KernelSession) -> None:
        self._session = session
        self._installed_in: CellClient | None = None
        self._run = ""
        self._nonce = ""

    async def _install(self) -> None:
        limits = self._session.limits
        run = f"_grader_run_{secrets.token_hex(8)}"
        nonce = secrets.token_hex(16)
        code = (f"{HARNESS_SOURCE}\n{run} = __grader_install__({nonce!r}, {MIME!r}, "
                f"{MAX_ITEMS}, {MAX_TEXT}, {MAX_ENTRIES}, {MAX_KEY}, {MAX_ARGUMENTS}, "
                f"{MAX_STAND_IN_CALLS})\n"
                "del __grader_install__\n")
        await self._session.execute(code, lambda _msg: None, deadline_s=limits.startup_timeout_s)
        self._installed_in, self._run, self._nonce = self._session.client, run, nonce

    async def call(self, function: str, arguments: Sequence[Sequence[Any]],
                   stand_ins: Mapping[str, Sequence[Any]] | None = None) -> list[Call]:
        """Call one student function on each case's arguments; stop at its first timeout.

        With `stand_ins` (a function name -> one value per case), that name is bound during
        each call to a stand-in that answers with the case's value and records what it was
        given. Whether an argument was changed in place is decided here, from the values the
        kernel sends back, never by code in the kernel. Raises KernelLost, with the cases
        answered before, when the kernel goes.
        """
        if self._installed_in is not self._session.client:
            await self._install()
        outcomes: dict[int, Call] = {}
        missing: Missing | None = None

        def receive(msg: dict[str, Any]) -> None:
            nonlocal missing
            if msg["msg_type"] != "display_data":
                return
            data = msg["content"].get("data")
            payload = data.get(MIME) if isinstance(data, dict) else None
            # The nonce first: a payload without it is not worth validating, however large.
            if not isinstance(payload, dict) or payload.get("nonce") != self._nonce:
                return
            try:
                message = CallMessage.model_validate(payload)
            except ValidationError:
                return
            if message.nonce != self._nonce or message.function != function:
                return
            if message.case == -1 and isinstance(message.outcome, Missing):
                missing = message.outcome
            elif 0 <= message.case < len(arguments) and message.case not in outcomes:
                outcomes[message.case] = Call(
                    outcome=message.outcome,
                    mutated=changed_arguments(arguments[message.case], message.after),
                    stand_in_calls=message.stand_in_calls,
                    stand_in_overflow=message.stand_in_overflow)

        answers = {name: "[" + ", ".join(map(literal, values)) + "]"
                   for name, values in (stand_ins or {}).items()}
        code = "{}({!r}, [{}], {{{}}})".format(
            self._run, function, ", ".join("[" + ", ".join(map(literal, args)) + "]"
                                           for args in arguments),
            ", ".join(f"{name!r}: {values}" for name, values in answers.items()))
        try:
            timed_out = await self._session.execute(
                code, receive, deadline_s=self._session.limits.call_timeout_s,
                progress=lambda: len(outcomes))
        except KernelLost as lost:
            # The cases answered before the kernel went keep their outcomes.
            died = Call(outcome=KernelDied(kind="kernel_died"))
            raise KernelLost(str(lost), [outcomes.get(i, died) for i in range(len(arguments))]
                             ) from None
        if missing is not None:
            return [Call(outcome=missing) for _ in arguments]
        calls = []
        for index in range(len(arguments)):
            if index in outcomes:
                calls.append(outcomes[index])
            elif timed_out or any(isinstance(c.outcome, Timeout) for c in outcomes.values()):
                calls.append(Call(outcome=Timeout(kind="timeout")))
            else:
                calls.append(Call(outcome=Raised(kind="raised", type="NoResult",
                                                 message="the call returned no result")))
        return calls
