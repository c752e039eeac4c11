"""Files the grader writes, the scratch folders it works in, and the clean-up of both: nothing is
left half-written or behind, even when a run is killed, and nothing a kernel leaves in a folder
it may write can break the clean-up or a later run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import signal
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Temporary files of write_atomic carry this mark, so leftovers of a killed run can be removed.
PARTIAL = ".partial-"
# A run's folder: grader-<token>, where <token> also names its kernels' cgroups and markers.
RUN_FOLDER = re.compile(r"grader-([0-9a-f]{16})")
# The lock file in a run's folder, held (flock) for as long as the run uses the folder.
LOCK = ".lock"
# Every kernel's environment holds MARKER=<run token>-<kernel token>.
MARKER = "GRADER_KERNEL"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same folder, fsync, rename: never a half-written file."""
    # Not mkstemp: its files are private (0600), while reports get the umask's usual modes.
    tmp = path.parent / f".{path.name}{PARTIAL}{secrets.token_hex(4)}"
    try:
        with tmp.open("xb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        folder = base / f"grader-{token}"
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


def remove_tree(path: Path) -> list[str]:
    """Remove `path` and everything beneath it without following a link; the problems met.

    A kernel may have filled a folder it could write with anything: thousands of nested folders
    (deeper than a path may be long), a hundred thousand files, names with newlines, links out
    of the folder, folders of mode 000, fifos. So this never recurses, never builds a long path,
    never follows or opens anything but a folder, and keeps going past what it cannot remove:
    each folder met is first moved up to the top, then emptied and removed.
    """
    problems: list[str] = []
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return problems
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(path)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
        return problems
    try:
        top = _open_folder(str(path), None)
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    try:
        queue = ["."]
        while queue:
            name = queue.pop()
            try:
                fd = top if name == "." else _open_folder(name, top)
            except OSError as exc:
                problems.append(f"{path}/{name!r}: {exc.strerror}")
                continue
            try:
                for entry in _entries(fd):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            queue.append(_move_up(entry.name, fd, top))
                        else:
                            os.unlink(entry.name, dir_fd=fd)
                    except OSError as exc:
                        problems.append(f"{path}/.../{entry.name!r}: {exc.strerror}")
            finally:
                if fd != top:
                    os.close(fd)
            if name != ".":
                try:
                    os.rmdir(name, dir_fd=top)
                except OSError as exc:
                    problems.append(f"{path}/{name!r}: {exc.strerror}")
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"{path}: {exc.strerror}")
    return problems


def _open_folder(name: str, parent: int | None) -> int:
    """Open a folder (never a link to one) that this process may empty.

    A kernel that shares the grader's uid can leave folders of mode 000 or 0500; root may
    empty them regardless, anyone else must make them writable first.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except PermissionError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise
        os.chmod(name, 0o700, dir_fd=parent)
        fd = os.open(name, flags, dir_fd=parent)
    if os.geteuid() != 0:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o700)
    return fd


def _move_up(name: str, parent: int, top: int) -> str:
    """Move a folder to the top of the tree being removed; its new name there."""
    moved = f".rm-{secrets.token_hex(8)}"
    try:
        os.rename(name, moved, src_dir_fd=parent, dst_dir_fd=top)
    except PermissionError:  # a folder moves only when it is writable (its ".." changes)
        os.chmod(name, 0o700, dir_fd=parent)
        os.rename(name, moved, src_dir_fd=parent, dst_dir_fd=top)
    return moved


def _entries(fd: int) -> list[os.DirEntry[str]]:
    # Read whole before changing the folder: renaming while iterating may skip or repeat names.
    with os.scandir(fd) as it:
        return list(it)


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
