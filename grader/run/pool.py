"""Kernels started ahead of the submissions that will run in them, each used once.

Starting a kernel (an interpreter importing ipykernel and numpy) is most of what a submission
costs, and it is work for a CPU while the grader waits. Started ahead, it overlaps with the
grading of earlier submissions (a class run) or with building the cases and reading the
reference (`grader check`).

Each kernel comes in runtime and work folders of its own, from the kernel-manager factory of
the run (the sandbox, its cgroups and limits, exactly as for a kernel started on demand), is
handed to exactly one submission, and is shut down with its folders when that submission is
done: nothing of one student's kernel reaches another's. A restart after a kernel died starts
a fresh one from the same factory, in the same submission's folders.

A long-lived service keeps kernels ready the same way::

    async with KernelPool(limits, km_factory, size=2) as pool:
        report = await grade_notebook(path, spec, seed, limits, km_factory=km_factory,
                                      sandbox=name, kernels=pool)

`grade_notebook` takes one kernel per submission (`await pool.take()`) and the pool starts
another in its place; leaving the `async with` block shuts down every kernel not taken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
from collections import deque
from pathlib import Path

import nbformat

from grader.run.processes import remove_scratch, scratch_dir
from grader.run.session import KernelManagerFactory, KernelSession
from grader.settings import Limits

# Run in a kernel that started before its submission was known: a sandbox that mounts the work
# folder's files into the kernel's home at start (bubblewrap) has not mounted the submission's
# notebook, so the kernel writes its copy there itself, a piece at a time (a notebook can be
# large), read-only once whole as a mounted one would be. Elsewhere the home is the work folder,
# which holds the copy already.
_HAS_FILE = "print(__import__('os').path.exists({name!r}))"
_WRITE_PIECE = """
def __grader_write_piece__(name, data, mode, last):
    import base64, os
    with open(name, mode) as fh:
        fh.write(base64.b64decode(data))
    if last:
        os.chmod(name, 0o444)
__grader_write_piece__({name!r}, {data!r}, {mode!r}, {last!r})
del __grader_write_piece__
"""
_PIECE_BYTES = 1 << 20


class Kernel:
    """A started kernel in fresh runtime and work folders, for exactly one submission."""

    def __init__(self, limits: Limits, km_factory: KernelManagerFactory,
                 submission: Path | None = None) -> None:
        self.runtime = scratch_dir("run")
        self.workdir = self.runtime / "work"
        self._closed = False
        try:
            self.workdir.mkdir()
            if submission is not None:
                shutil.copy2(submission, self.workdir / submission.name)
        except BaseException:
            remove_scratch(self.runtime)
            raise
        self._for = submission
        self.session = KernelSession(nbformat.v4.new_notebook(), limits, km_factory,
                                     self.runtime, self.workdir)
        self._assigned = False

    async def assign(self, nb: nbformat.NotebookNode, submission: Path | None) -> None:
        """Give the kernel its notebook, and a copy of the submission's file in its home
        (there from the start in a kernel started for this submission)."""
        assert not self._assigned, "a kernel runs one submission only"
        assert self._for in (None, submission), "a kernel started for another submission"
        self._assigned = True
        self.session.assign(nb)
        if submission is None or self._for is not None:
            return
        copy = self.workdir / submission.name
        await asyncio.to_thread(shutil.copy2, submission, copy)
        owner = self.workdir.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            # The kernel runs under a uid of its own, which owns its work folder (the folder's
            # files included, as in one made before the kernel started).
            os.chown(copy, owner.st_uid, owner.st_gid)
        if await self._run(_HAS_FILE.format(name=submission.name)) == "True":
            return
        data = await asyncio.to_thread(copy.read_bytes)
        for start in range(0, max(len(data), 1), _PIECE_BYTES):
            piece = base64.b64encode(data[start:start + _PIECE_BYTES]).decode()
            await self._run(_WRITE_PIECE.format(name=submission.name, data=piece,
                                                mode="xb" if start == 0 else "ab",
                                                last=start + _PIECE_BYTES >= len(data)))

    async def _run(self, code: str) -> str:
        """Run grader code in the kernel before any of the student's; what it printed. Raises
        OSError when it fails."""
        printed: list[str] = []
        failed: list[str] = []

        def receive(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                printed.append(str(msg["content"].get("text", "")))
            elif msg["msg_type"] == "error":
                failed.append(str(msg["content"].get("evalue", "")))

        if await self.session.execute(code, receive,
                                      deadline_s=self.session.limits.startup_timeout_s) or failed:
            raise OSError("could not place the submission's notebook in the kernel's home: "
                          f"{failed[0] if failed else 'timed out'}")
        return "".join(printed).strip()

    async def close(self) -> None:
        """Shut the kernel down and remove its folders; again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._shut_down()

    async def _shut_down(self) -> None:
        try:
            await self.session.stop()
        finally:
            # Removing a folder a kernel filled can take a while: not on the event loop, where
            # the deadlines of the kernels graded beside this one run.
            await asyncio.to_thread(remove_scratch, self.runtime)


async def start_kernel(limits: Limits, km_factory: KernelManagerFactory,
                       submission: Path | None = None) -> Kernel:
    """A kernel started now, in folders of its own; with a copy of `submission`'s file in its
    work folder from the start when it is known already."""
    kernel = Kernel(limits, km_factory, submission)
    try:
        await kernel.session.start()
    except BaseException:
        await kernel.close()
        raise
    return kernel


async def discard(task: asyncio.Task[Kernel]) -> None:
    """Close the kernel a task starts or started, cancelling the start if it is still going."""
    if not task.done():
        task.cancel()
        # Waited for without taking its outcome: a start that was cancelled closes its kernel.
        await asyncio.wait([task])
    if not task.cancelled() and task.exception() is None:
        await task.result().close()


class KernelPool:
    """Up to `size` kernels starting or ready ahead of the submissions that take them.

    `total`, when given, caps how many kernels the pool starts ahead in all (a class run knows
    how many it needs); a `take` beyond it starts one on the spot. Leaving the `async with`
    block shuts down every kernel not taken and removes its folders, on every exit path.
    """

    def __init__(self, limits: Limits, km_factory: KernelManagerFactory, size: int,
                 total: int | None = None) -> None:
        self.limits = limits
        self.km_factory = km_factory
        self.size = max(size, 0)
        self._left = total
        self._starting: deque[asyncio.Task[Kernel]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._open = False

    async def __aenter__(self) -> KernelPool:
        self._open = True
        self._fill()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._open = False
        tasks, self._starting = list(self._starting), deque()
        for task in tasks:
            task.cancel()
        for task in tasks:
            await discard(task)
        # Kernels given back are shut down before the pool is left, whatever happened.
        while self._closing:
            await asyncio.wait(list(self._closing))

    def _fill(self) -> None:
        while self._open and len(self._starting) < self.size and self._left != 0:
            if self._left is not None:
                self._left -= 1
            self._starting.append(asyncio.create_task(start_kernel(self.limits,
                                                                   self.km_factory)))

    async def ready(self) -> None:
        """Wait until the kernel `take` would hand out next has started (or failed to)."""
        if self._starting:
            await asyncio.wait([self._starting[0]])

    async def give_back(self, kernel: Kernel) -> None:
        """Shut down a kernel its submission is done with, meanwhile the grading goes on: its
        clean-up (a scan of /proc, cgroups that take a while to empty) keeps no one waiting."""
        if kernel._closed:
            return
        kernel._closed = True  # from now on, closing it again does nothing
        task = asyncio.create_task(kernel._shut_down())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def take(self) -> Kernel:
        """A started kernel no submission had before (the one started longest ago); the pool
        starts another in its place. Raises what starting it raised."""
        if not self._open:
            raise RuntimeError("the kernel pool is not open")
        if not self._starting:
            return await start_kernel(self.limits, self.km_factory)
        task = self._starting.popleft()
        self._fill()
        try:
            return await task
        except asyncio.CancelledError:
            # Cancelled while the kernel came up: it is no one's, so it goes.
            with contextlib.suppress(Exception):
                await discard(task)
            raise
