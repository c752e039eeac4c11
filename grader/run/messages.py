"""The iopub message loop: run grader code in the kernel and hand each answer to a reader."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

from nbclient import NotebookClient

# At most this many messages read, already queued, between a deadline and the interrupt.
MAX_QUEUED = 64


class KernelLost(Exception):
    """The kernel died or stopped answering; its state is gone.

    `calls` holds what a function call had answered before that, case by case.
    """

    def __init__(self, message: str, calls: list[Any] | None = None) -> None:
        super().__init__(message)
        self.calls = calls


def malformed(exc: Exception) -> KernelLost:
    """What a message the grader cannot read means: the kernel is lost.

    nbclient and jupyter_client trust the kernel's messages, and a notebook can send any it
    likes (a status without content, content that is not JSON). A fresh kernel replays the
    notebook's cells that ran, as after a death.
    """
    return KernelLost(f"the kernel sent a malformed message ({type(exc).__name__})")


def from_request(msg: Any, msg_id: str) -> bool:
    """Whether an iopub message answers our request and has the shape the loop relies on."""
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), dict):
        return False
    parent = msg.get("parent_header")
    return (isinstance(parent, dict) and parent.get("msg_id") == msg_id
            and isinstance(msg.get("msg_type"), str))


async def execute(client: NotebookClient, code: str, receive: Callable[[dict[str, Any]], None],
                  deadline_s: float, grace_s: float,
                  progress: Callable[[], int] = lambda: 0) -> bool:
    """Run grader code, interrupting it after deadline_s without progress; True if it was.

    Each message that answers the request goes to `receive`; a kernel that dies, does not stop
    within grace_s of an interrupt, or sends what cannot be read raises KernelLost.
    """
    kc, km = client.kc, client.km
    assert kc is not None and km is not None
    msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False)
    last_progress, seen = time.monotonic(), progress()
    interrupted_at: float | None = None
    # Messages read without waiting once the deadline has passed: what is already queued may
    # be the answer, late only because the grader was busy elsewhere. Bounded, so that a kernel
    # flooding output is interrupted all the same.
    queued = 0
    while True:
        now = time.monotonic()
        if progress() != seen:
            last_progress, seen, queued = now, progress(), 0
        if interrupted_at is None:
            wait = last_progress + deadline_s - now
        else:
            wait = interrupted_at + grace_s - now
        if wait <= 0 and interrupted_at is None and queued < MAX_QUEUED:
            queued += 1
            timeout = 0.0
        elif wait <= 0:
            if interrupted_at is not None:
                raise KernelLost("the kernel did not stop when interrupted")
            if not await km.is_alive():
                raise KernelLost("the kernel died")
            await km.interrupt_kernel()
            interrupted_at = time.monotonic()
            continue
        else:
            timeout = min(wait, 1.0)
        try:
            msg = await kc.get_iopub_msg(timeout=timeout)
        except Empty:
            if timeout == 0:
                queued = MAX_QUEUED  # nothing left queued: the kernel is late
                continue
            if not await km.is_alive():
                raise KernelLost("the kernel died") from None
            continue
        except Exception as exc:  # content that is not JSON, a header without an id, ...
            raise malformed(exc) from None
        if not from_request(msg, msg_id):
            continue
        try:
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                with contextlib.suppress(Empty):
                    await kc.get_shell_msg(timeout=grace_s)
                return interrupted_at is not None
            receive(msg)
        except Exception as exc:
            raise malformed(exc) from None
