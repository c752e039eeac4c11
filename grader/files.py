"""Files the grader writes and the scratch folders it works in, so that nothing is left
half-written or behind, even when a run is killed."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
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


def scratch_dir(kind: str) -> Path:
    """A private folder for one run's files.

    Its name carries this process's id, so that a later run can sweep what a killed one left
    behind; and its path stays short, because an IPC socket's path must fit in 107 bytes.
    """
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix=f"grader-{kind}-{os.getpid()}-", dir=base))


def sweep_scratch() -> int:
    """Remove what grader processes that are gone left behind: their scratch folders, and any
    kernel still running from one (a grader killed while a kernel started can orphan it).
    How many folders were removed."""
    removed = 0
    for base in {Path(tempfile.gettempdir()), Path("/tmp")}:
        for entry in base.glob("grader-*-*-*"):
            fields = entry.name.split("-")
            if len(fields) < 4 or not fields[2].isdigit() or alive(int(fields[2])):
                continue
            _kill_processes_using(entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _kill_processes_using(folder: Path) -> None:
    """SIGKILL every process whose command line names `folder` (a kernel's sockets live there)."""
    needle = str(folder).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue


def alive(pid: int) -> bool:
    """Whether a process of this id exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not ours to sweep
        return True
    return True
