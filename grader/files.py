"""Files the grader writes and removes: never half-written, and removed whatever a kernel left."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

# Temporary files of write_atomic carry this mark, so leftovers of a killed run can be removed.
PARTIAL = ".partial-"


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
