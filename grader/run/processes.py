"""Run folders and their locks, and the end of what kernels leave: kill, scan /proc, sweep.

Every piece of work gets a scratch folder inside its process's run folder, whose lock tells a
later sweep that the run is alive; once a run is gone (killed), a sweep kills its kernels and
removes its folders and cgroups.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from grader.files import remove_tree

# What the grader names after a run or a kernel, so that a sweep finds it once the run is gone:
# the run's folder grader-<run token>, each kernel's cgroups grader-<run token>-<kernel token>.
_PREFIX = "grader-"
RUN_FOLDER = re.compile(_PREFIX + r"([0-9a-f]{16})")
# The lock file in a run's folder, held (flock) for as long as the run uses the folder.
LOCK = ".lock"
# Every kernel's environment holds MARKER=<run token>-<kernel token>.
MARKER = "GRADER_KERNEL"


def leftover_name(token: str) -> str:
    """The name of what belongs to a run or a kernel (`token`: its run token, or its marker)."""
    return _PREFIX + token


@dataclass
class _Run:
    folder: Path
    lock_fd: int
    users: int = 0  # scratch folders in use


# By process and temp folder: a forked child gets a run of its own, so that its clean-up never
# removes the folder its parent still works in.
_runs: dict[tuple[int, Path], _Run] = {}
_guard = threading.Lock()


def _base() -> Path:
    # The path stays short, because an IPC socket's path must fit in 107 bytes.
    base = Path(tempfile.gettempdir())
    return base if len(str(base)) <= 40 else Path("/tmp")


def _open_run(base: Path) -> _Run:
    """A fresh run folder whose lock this process holds.

    A sweep takes a folder without a lock file for someone else's and leaves it, so the lock is
    made under another name and renamed into place once held: the folder never shows a free lock
    while its run lives.
    """
    while True:
        token = secrets.token_hex(8)
        folder = base / leftover_name(token)
        try:
            folder.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    pending = folder / f"{LOCK}-{secrets.token_hex(4)}"
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(pending, folder / LOCK)
    # A kernel under a uid of its own must reach its folders inside; it may list none of them.
    os.chmod(folder, 0o711)
    return _Run(folder, fd)


def scratch_dir(kind: str) -> Path:
    """A private folder for one piece of work (a submission's kernels, an unpacked zip).

    It lives in this process's run folder, whose lock tells a later sweep that the run is alive.
    Give it back with remove_scratch.
    """
    with _guard:
        key = (os.getpid(), _base())
        run = _runs.get(key)
        if run is None:
            run = _runs[key] = _open_run(key[1])
        run.users += 1
    try:
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=run.folder))
    except BaseException:
        _release(run)
        raise


def run_token(folder: Path) -> str:
    """The token of the run a scratch folder belongs to."""
    match = RUN_FOLDER.fullmatch(folder.parent.name)
    if match is None:
        raise ValueError(f"{folder} is not a scratch folder")
    return match.group(1)


def kernel_marker(folder: Path) -> str:
    """A fresh marker for a kernel working in a scratch folder: <run token>-<kernel token>."""
    return f"{run_token(folder)}-{secrets.token_hex(6)}"


def remove_scratch(folder: Path) -> None:
    """Remove a scratch folder, whatever was left in it; the run's folder and lock go with its
    last one. What cannot be removed is left to a later sweep, with a warning."""
    problems = remove_tree(folder)
    if problems:
        warnings.warn(f"could not remove all of {folder}: {problems[0]}", RuntimeWarning,
                      stacklevel=2)
    with _guard:
        run = next((r for (pid, _), r in _runs.items()
                    if pid == os.getpid() and r.folder == folder.parent), None)
    if run is not None:
        _release(run)


def _release(run: _Run) -> None:
    with _guard:
        run.users -= 1
        if run.users > 0:
            return
        del _runs[os.getpid(), run.folder.parent]
    # Removed while still locked, so that no sweep takes it meanwhile. A folder that still holds
    # something (a kernel's leftover that would not go) keeps its lock file, free once closed:
    # a later sweep takes it then, and a folder without one it would leave alone.
    with contextlib.suppress(OSError):
        if os.listdir(run.folder) == [LOCK]:
            os.unlink(run.folder / LOCK)
            os.rmdir(run.folder)
    os.close(run.lock_fd)


def kill_processes(*, uid: int = -1, needles: Iterable[bytes] = ()) -> int:
    """SIGKILL every other process that runs as `uid`, or whose command line or environment
    holds one of `needles`; how many. The one scanner of /proc for what kernels leave behind."""
    needles = [n for n in needles if n]
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if (uid >= 0 and _uid_of(entry.path) == uid) or (
                needles and any(n in _read(f"{entry.path}/cmdline") + b"\0"
                                + _read(f"{entry.path}/environ") for n in needles)):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:  # gone meanwhile, or not ours to kill
                continue
    return killed


def _uid_of(proc: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in _read(f"{proc}/status").splitlines():
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
    return -1


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 16)
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def sweep_scratch(release: Callable[[str], list[str]]) -> list[str]:
    """Clean up after runs that are gone (killed): their kernels, what `release` frees for
    their token (cgroups), and their folders; the problems met, as warnings.

    A run is gone when the lock in its folder is free. Its PID says nothing: another PID
    namespace sharing this temp folder would look dead by PID while its kernels run.
    """
    problems: list[str] = []
    for base in {_base(), Path(tempfile.gettempdir()), Path("/tmp")}:
        try:
            candidates = [e for e in os.scandir(base) if RUN_FOLDER.fullmatch(e.name)]
        except OSError:
            continue
        for entry in candidates:
            token = RUN_FOLDER.fullmatch(entry.name).group(1)  # type: ignore[union-attr]
            try:
                fd = os.open(f"{entry.path}/{LOCK}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:  # no lock: not a run's folder, or one still being made
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive
                kill_processes(needles=[f"{MARKER}={token}-".encode(), entry.path.encode()])
                problems += release(token)
                problems += remove_tree(Path(entry.path))
            except Exception as exc:  # a sweep never stops a run from starting
                problems.append(f"{entry.path}: {type(exc).__name__}: {exc}")
            finally:
                os.close(fd)
    return problems
