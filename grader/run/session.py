"""A kernel's lifecycle: start it under nbclient with an output budget, stop it, clean up."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from grader.run.messages import execute
from grader.settings import Limits
from grader.wire import safe_strings

# Runs before the student's first cell. ipykernel sends one print as one iopub message, which
# the grader must decode whole before its output cap can drop it; writes cut into pieces keep
# every message small, so an accidental 50 MB print costs the grader no memory. (A notebook can
# undo this, but then it only wastes the grader's time on its own grade.)
STREAM_CHUNKS = """
def __grader_chunk_streams__(size):
    import sys
    for stream in (sys.stdout, sys.stderr):
        base = type(stream)
        write = base.write
        def chunked(self, text, write=write):
            if not isinstance(text, str) or len(text) <= size:
                return write(self, text)
            for start in range(0, len(text), size):
                write(self, text[start:start + size])
                self.flush()
            return len(text)
        # IPython wraps `stream.write` around every cell and then restores the plain method it
        # found; a property on the stream's class keeps the chunking under both.
        def get(self, chunked=chunked):
            return self.__dict__.get("_outer_write") or chunked.__get__(self)
        def put(self, value, write=write):
            plain = getattr(value, "__func__", None) is write
            self.__dict__["_outer_write"] = None if plain else value
        stream.__dict__.pop("write", None)
        stream.__class__ = type(base.__name__, (base,), {"write": property(get, put)})
__grader_chunk_streams__(1 << 12)
del __grader_chunk_streams__
"""
# The error name nbclient reports for a cell it stopped at its timeout.
TIMEOUT_MARK = "GraderCellTimeout"


KernelManagerFactory = Callable[[Path, Path], AsyncKernelManager]


class GraderKernelManager(AsyncKernelManager):
    """A kernel manager that keeps the kernel's own stdio away from the grader."""

    async def start_kernel(self, **kw: Any) -> None:
        """Start the kernel with its stdout and stderr discarded.

        Those streams are the student's to fill (os.write(2, ...) bypasses the output cap), so
        they must not reach the grader's terminal or logs.
        """
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        await super().start_kernel(**kw)


@dataclass
class _OutputBudget:
    """Output text kept for one submission, across all its kernels, and what was dropped."""

    limit: int
    kept: int = 0
    dropped: int = 0

    def admit(self, content: Any) -> bool:
        """Count one output message; True when it may be kept."""
        size = _text_size(content)
        if self.kept + size > self.limit:
            self.dropped += size
            return False
        self.kept += size
        return True


def _text_size(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, dict):
        return sum(_text_size(v) for v in content.values())
    if isinstance(content, list):
        return sum(_text_size(v) for v in content)
    return 0


# The messages whose content nbclient keeps in the notebook, as a new output or in place of an
# old one (an update of a display).
_KEPT_OUTPUT = frozenset({"stream", "display_data", "execute_result", "error",
                          "update_display_data"})


class CellClient(NotebookClient):
    """nbclient with a cap on kept output and a record of how each cell ended."""

    def __init__(self, nb: nbformat.NotebookNode, km: AsyncKernelManager, limits: Limits,
                 workdir: Path, budget: _OutputBudget) -> None:
        super().__init__(
            nb,
            km=km,
            timeout_func=lambda _cell: self.cell_timeout_s,
            interrupt_on_timeout=True,
            error_on_timeout={"ename": TIMEOUT_MARK, "evalue": "", "traceback": []},
            allow_errors=True,
            iopub_timeout=limits.interrupt_grace_s,
            raise_on_iopub_timeout=False,
            startup_timeout=limits.startup_timeout_s,
            shutdown_kernel="immediate",
            record_timing=False,
            store_widget_state=False,
            resources={"metadata": {"path": str(workdir)}},
        )
        self._budget = budget
        # Set before each cell: the cell's own limit, or less when the notebook's time runs out.
        self.cell_timeout_s = limits.cell_timeout_s
        self.idle_seen = False
        self.last_reply: dict[str, Any] | None = None
        self.on_cell_executed = self._remember_reply

    def _remember_reply(self, execute_reply: dict[str, Any] | None = None, **_: Any) -> None:
        self.last_reply = execute_reply

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        """Note the kernel going idle and charge kept output to the budget, then let nbclient
        file the message."""
        msg_type = msg["msg_type"]
        if msg_type == "status" and msg["content"].get("execution_state") == "idle":
            self.idle_seen = True
        # Charged here, once per message: nbclient hands a display that carries a display id
        # both to the update of the outputs shown under that id and to a new output.
        if msg_type in _KEPT_OUTPUT and not self._budget.admit(msg.get("content", {})):
            return None
        return super().process_message(msg, cell, cell_index)


class KernelSession:
    """A submission's kernels, one at a time: start one, run grader code in it, stop it."""

    def __init__(self, nb: nbformat.NotebookNode, limits: Limits,
                 km_factory: KernelManagerFactory, runtime: Path, workdir: Path) -> None:
        self.nb = nb
        self.limits = limits
        self._km_factory = km_factory
        self._runtime = runtime
        self._workdir = workdir
        self._client: CellClient | None = None
        # One budget for every kernel of this submission, the restarted ones included.
        self._budget = _OutputBudget(limits.output_bytes)

    async def start(self) -> None:
        """Start a fresh kernel (after stop) with its output chunked."""
        km = self._km_factory(self._runtime, self._workdir)
        # The one place where text from the kernel enters the grader: every message, to nbclient
        # and to the harness's reader alike, is decoded by this session.
        unpack = km.session.unpack
        km.session.unpack = lambda data: safe_strings(unpack(data))
        client = CellClient(self.nb, km, self.limits, self._workdir, self._budget)
        self._client = client
        await client.async_start_new_kernel()
        await client.async_start_new_kernel_client()
        await self.execute(STREAM_CHUNKS, lambda _msg: None,
                           deadline_s=self.limits.startup_timeout_s)

    def assign(self, nb: nbformat.NotebookNode) -> None:
        """Give a kernel started ahead of its notebook (grader.run.pool) the notebook to run."""
        self.nb = nb
        if self._client is not None:
            self._client.nb = nb

    @property
    def dropped_bytes(self) -> int:
        """Output text this submission's kernels produced beyond the limit."""
        return self._budget.dropped

    async def stop(self) -> None:
        """Shut the kernel down, whatever state it is in, and free what it held."""
        client, self._client = self._client, None
        if client is None or client.km is None:
            return
        km, kc = client.km, client.kc
        client.km = client.kc = None
        with contextlib.suppress(Exception):
            try:
                if await km.is_alive():
                    await km.shutdown_kernel(now=True)
            finally:
                try:
                    await km.cleanup_resources()
                finally:
                    if kc is not None:
                        kc.stop_channels()

    @property
    def client(self) -> CellClient:
        """The running kernel's client; a new one after each start."""
        assert self._client is not None, "kernel not started"
        return self._client

    async def execute(self, code: str, receive: Callable[[dict[str, Any]], None],
                      deadline_s: float, progress: Callable[[], int] = lambda: 0) -> bool:
        """Run grader code in the kernel (see grader.run.messages.execute); True if it had to
        be interrupted."""
        return await execute(self.client, code, receive, deadline_s,
                             self.limits.interrupt_grace_s, progress)
