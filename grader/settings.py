"""The limits of a run: a validated model whose field descriptions are the command line's help."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from grader.spec import Timeouts

# The sandbox a run asks for; grader.run.sandbox.choose_sandbox resolves it into the layers that
# work on this machine (bwrap+landlock+seccomp, say), which the reports name.
SandboxRequest = Literal["auto", "bwrap", "landlock", "none"]
SANDBOXES: tuple[str, ...] = get_args(SandboxRequest)
# How kernels start: forked from a fork server, or each afresh (grader.run.sandbox).
KernelStart = Literal["auto", "fork", "fresh"]
KERNEL_STARTS: tuple[str, ...] = get_args(KernelStart)
_DEFAULT_TIMEOUTS = Timeouts()


def _positive(description: str, default: float) -> Any:
    # Zero or less would not mean "no limit": a kernel without time or memory fails in ways
    # that look like the student's fault.
    return Field(default, gt=0, allow_inf_nan=False, description=description)


class Limits(BaseModel):
    """What one submission's kernels may use; the defaults suit the bundled assignments, and the
    timeouts default to the spec's (grader.spec.Timeouts)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cell_timeout_s: float = _positive(
        "seconds a notebook cell may run before it is interrupted", _DEFAULT_TIMEOUTS.cell_s)
    call_timeout_s: float = _positive(
        "seconds one call of a student function may take", _DEFAULT_TIMEOUTS.call_s)
    # Replays after a dead kernel count; starting kernels does not: a notebook of many slow
    # cells must not hold a kernel for an hour.
    notebook_timeout_s: float = _positive(
        "seconds all of a notebook's cells may take together; later cells are not run, and its "
        "functions are still graded", 300.0)
    output_bytes: int = _positive(
        "notebook output kept per submission; the rest is counted and dropped", 1_000_000)
    startup_timeout_s: float = _positive("seconds a kernel may take to start", 60.0)
    interrupt_grace_s: float = _positive(
        "seconds an interrupted kernel may take to become idle before it counts as hung", 3.0)
    restarts: int = Field(1, ge=0, description="fresh kernels started after the first one dies "
                                               "or hangs; one more death ends the run")
    sandbox: SandboxRequest = Field(
        "auto", description="where student kernels run: bwrap (bubblewrap, then Landlock and a "
        "seccomp filter: no network, only the interpreter's files, own PIDs), landlock "
        "(Landlock and seccomp, for machines without user namespaces), none (limits only: for "
        "trusted notebooks, a kernel can read the answer key), or auto (default): the "
        "strongest that works here, and an error when none does")
    kernel_start: KernelStart = Field(
        "auto", description="how kernels start: fork (forked from a server that imported "
        "ipykernel and numpy once, each then entering the same namespaces, filesystem, uid "
        "and limits as a fresh one; needs the bwrap sandbox and root), fresh (a new "
        "interpreter for each kernel), or auto (default): fork where a forked kernel passes "
        "the sandbox's probe, else fresh; the report's sandbox field says which "
        "(fork+bwrap+...)")
    memory_bytes: int = _positive("address space of a kernel", 2 << 30)
    cpu_s: float = _positive("CPU seconds of a kernel", 300.0)
    file_bytes: int = _positive("largest file a kernel may write", 64 << 20)
    processes: int = _positive("processes and threads of a kernel", 64)
    disk_bytes: int = _positive("size of each of a kernel's private folders", 128 << 20)


def help_text(field: str) -> str:
    """The description of a Limits field, as the command line shows it."""
    description = Limits.model_fields[field].description
    assert description is not None
    return description


def default(field: str) -> Any:
    """The default of a Limits field."""
    return Limits.model_fields[field].default
