"""Confine a student's kernel: namespaces, a throwaway uid, a private filesystem, resource limits.

Three sandboxes, strongest first:

- ``bwrap``: bubblewrap gives the kernel its own network, PID, IPC and UTS namespaces and a
  filesystem made of the interpreter's prefixes (read-only), a private /tmp and home, and the
  folder holding its IPC sockets. When the grader runs as root the kernel also runs under a
  fresh uid with no capabilities, which is what makes RLIMIT_NPROC count only its own processes.
- ``unshare``: util-linux's unshare gives network and PID namespaces only; files stay visible.
- ``none``: resource limits only.

Every mode applies the same rlimits (through prlimit) and a scrubbed environment, and every
kernel is interrupted with a message on its control channel, because a signal sent to the
wrapper process would not reach it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from traitlets import Integer, List, Unicode

from grader.files import alive, scratch_dir
from grader.runner import GraderKernelManager, KernelManagerFactory, Limits

SANDBOXES = ("auto", "bwrap", "unshare", "none")
HOME = "/home/student"
# Throwaway uids for kernels, far above the ranges distributions hand out (users, subuids).
_UID_BASE, _UID_SPAN = 1_500_000_000, 100_000_000
_PROBE_TIMEOUT_S = 30.0


class SandboxUnavailable(Exception):
    """The sandbox asked for cannot run on this machine."""


class ConfinedKernelManager(GraderKernelManager):
    """A python3 kernel started through a wrapper command, interrupted by message.

    `marker` is set in the kernel's environment and `kernel_uid` (when not -1) is the uid it runs
    under; after shutdown every process carrying either is killed, which catches processes that
    left the kernel's process group (setsid, double fork) where no PID namespace holds them.
    """

    wrapper = List(Unicode())
    kernel_env = List(Unicode())
    kernel_uid = Integer(-1)
    marker = Unicode()
    # Memory of the kernel and every process it starts, together (0: no such limit).
    memory_bytes = Integer(0)
    memory_group: Path | None = None

    async def start_kernel(self, **kw: Any) -> None:
        """Start the kernel inside a memory cgroup of its own, where the machine allows one."""
        self.memory_group = memory_cgroup(self.memory_bytes) if self.memory_bytes else None
        if self.memory_group is not None:
            # The shell joins the group and becomes the wrapper: everything after inherits it.
            self.wrapper = ["/bin/sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
                            "sh", str(self.memory_group), *self.wrapper]
        await super().start_kernel(**kw)

    def command(self, *python_args: str) -> list[str]:
        """The confined command line that runs this interpreter with `python_args`."""
        return [*self.wrapper, "/usr/bin/env", "-i", *self.kernel_env, sys.executable,
                *python_args]

    @property
    def kernel_spec(self) -> KernelSpec:
        argv = self.command("-m", "ipykernel_launcher", "-f", "{connection_file}")
        return KernelSpec(argv=argv, display_name="Python 3 (confined)", language="python",
                          interrupt_mode="message", env={})

    def write_connection_file(self, **kwargs: Any) -> None:
        """Write the connection file, readable by the kernel's own uid."""
        super().write_connection_file(**kwargs)
        if self.kernel_uid >= 0:
            os.chown(self.connection_file, self.kernel_uid, self.kernel_uid)

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        """Shut the kernel down, then kill anything it left behind."""
        try:
            await super().shutdown_kernel(now=now, restart=restart)
        finally:
            self._release()

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        """Also run when the kernel died by itself, and shutdown_kernel was never called."""
        try:
            await super().cleanup_resources(restart=restart)
        finally:
            self._release()

    def _release(self) -> None:
        reap(self.marker, self.kernel_uid)
        group, self.memory_group = self.memory_group, None
        if group is not None:
            remove_cgroup(group)


_CGROUPS = Path("/sys/fs/cgroup")


def memory_cgroup(limit_bytes: int) -> Path | None:
    """A fresh cgroup that caps the memory of all its processes together, or None where the
    machine does not let the grader make one (no cgroup filesystem, not root, no controller).

    The address-space rlimit holds each process alone; a notebook that forks would otherwise
    get that much again per process.
    """
    name = f"grader-{os.getpid()}-{secrets.token_hex(6)}"
    if (_CGROUPS / "cgroup.controllers").is_file():  # the unified hierarchy (cgroup v2)
        try:
            enabled = (_CGROUPS / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        group, files = _CGROUPS / name, {"memory.max": limit_bytes, "memory.swap.max": 0}
        if "memory" not in enabled:
            return None
    else:
        group, files = _CGROUPS / "memory" / name, {"memory.limit_in_bytes": limit_bytes}
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        for filename, value in files.items():
            if filename == "memory.swap.max" and not (group / filename).exists():
                continue
            (group / filename).write_text(str(value))
    except OSError:
        remove_cgroup(group)
        return None
    return group


def sweep_cgroups() -> None:
    """Remove the memory cgroups that grader processes now gone left behind (a killed run)."""
    for base in (_CGROUPS, _CGROUPS / "memory"):
        for group in base.glob("grader-*-*"):
            fields = group.name.split("-")
            if len(fields) == 3 and fields[1].isdigit() and not alive(int(fields[1])):
                remove_cgroup(group)


def remove_cgroup(group: Path) -> None:
    """Kill whatever is left in a kernel's cgroup, then remove the group."""
    for _ in range(50):
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # processes still leaving
            time.sleep(0.02)


def reap(marker: str, uid: int = -1) -> int:
    """SIGKILL every process whose environment holds `marker` or that runs as `uid`."""
    killed = 0
    needle = marker.encode()
    for pid in _pids():
        if pid == os.getpid():
            continue
        if (uid >= 0 and _uid_of(pid) == uid) or (needle and needle in _environ_of(pid)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _uid_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def _environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read(1 << 16)
    except OSError:
        return b""


def _prlimit(limits: Limits) -> list[str]:
    argv = ["prlimit", f"--as={limits.memory_bytes}", f"--cpu={int(limits.cpu_s)}",
            f"--fsize={limits.file_bytes}", "--core=0"]
    # RLIMIT_NPROC counts every process of the uid, so it only means "this kernel's processes"
    # under a uid of its own; for a shared uid it would count the grader's processes too.
    if os.geteuid() == 0:
        argv.append(f"--nproc={limits.processes}")
    return [*argv, "--"]


def _environment(home: str, marker: str) -> list[str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin",
                            "/bin"])
    return [f"PATH={path}", f"HOME={home}", "USER=student", "LOGNAME=student", "LANG=C.UTF-8",
            "TMPDIR=/tmp", "PYTHONNOUSERSITE=1", "MPLBACKEND=Agg",
            # The working folder is the student's: a module they write there (say
            # ipykernel_launcher.py) must not replace the kernel the next time it starts.
            "PYTHONSAFEPATH=1",
            # One BLAS thread: the kernel shares the machine with other kernels, and a thread
            # pool would count against the process limit.
            "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
            f"GRADER_KERNEL={marker}"]


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if p != Path("/")]


def _prefixes() -> list[Path]:
    """Folders the interpreter and its packages live in, outside the system folders."""
    found: list[Path] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.realpath(sys.executable)):
        path = Path(os.path.realpath(raw))
        if path.is_file():
            path = path.parent.parent
        if any(path == p or p in path.parents for p in [*found, Path("/usr")]):
            continue
        found = [p for p in found if path not in p.parents] + [path]
    return found


def bwrap_argv(ipc: Path, workdir: Path, limits: Limits, uid: int) -> list[str]:
    """The bubblewrap command that confines one kernel (everything before the kernel's argv)."""
    root = os.geteuid() == 0
    argv = ["bwrap", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    # As root, no user namespace: the kernel then runs under a real, unused uid without
    # capabilities. Otherwise bubblewrap needs a user namespace to work at all.
    argv += (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
              "--unshare-cgroup-try"] if root else ["--unshare-all"])
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache",
             "/etc/ld.so.cache", "--ro-bind-try", "/etc/localtime", "/etc/localtime",
             "--proc", "/proc", "--dev", "/dev"]
    tmpfs_size = ["--size", str(limits.disk_bytes)]
    argv += ["--perms", "1777", *tmpfs_size, "--tmpfs", "/tmp",
             "--perms", "0755", "--dir", "/home", "--perms", "1777", *tmpfs_size, "--tmpfs", HOME]
    made: set[Path] = {Path("/tmp"), Path("/home"), Path(HOME)}

    def bind(kind: str, path: Path, dest: Path | None = None) -> None:
        # bubblewrap creates missing parents as 0700; the kernel's uid must traverse them.
        for parent in _parents(dest or path):
            if parent not in made:
                made.add(parent)
                argv.extend(["--perms", "0755", "--dir", str(parent)])
        argv.extend([kind, str(path), str(dest or path)])

    # After the private /tmp, so that a prefix or the IPC folder under /tmp stays visible.
    for prefix in _prefixes():
        bind("--ro-bind", prefix)
    bind("--bind", ipc)
    for item in sorted(workdir.iterdir()):
        argv += ["--ro-bind", str(item), f"{HOME}/{item.name}"]
    argv += ["--chdir", HOME, "--"]
    if root:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        # bubblewrap drops every capability as root; setpriv needs these two to change uid.
        argv[1:1] = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv


def unshare_argv() -> list[str]:
    """Network and PID namespaces; the kernel dies with unshare (--kill-child)."""
    argv = ["unshare"]
    if os.geteuid() != 0:
        argv += ["--user", "--map-root-user"]
    return [*argv, "--net", "--pid", "--fork", "--kill-child", "--"]


@dataclass(frozen=True)
class Sandbox:
    """The sandbox used for a run: its name goes into the report."""

    name: str

    def factory(self, limits: Limits) -> KernelManagerFactory:
        """A kernel-manager factory that starts each kernel inside this sandbox."""
        return functools.partial(_confined_manager, self.name, limits)


def _confined_manager(mode: str, limits: Limits, runtime: Path,
                      workdir: Path) -> ConfinedKernelManager:
    marker = secrets.token_hex(12)
    uid = -1
    ipc = Path(tempfile.mkdtemp(prefix="ipc-", dir=runtime))
    if mode == "bwrap":
        if os.geteuid() == 0:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            os.chown(ipc, uid, uid)
        wrapper = bwrap_argv(ipc, workdir, limits, uid)
        home = HOME
    else:
        wrapper = unshare_argv() if mode == "unshare" else []
        home = str(workdir)
    wrapper += _prlimit(limits)
    return ConfinedKernelManager(
        kernel_name="python3", transport="ipc", ip=str(ipc / "kernel"),
        connection_file=str(ipc / "kernel.json"), wrapper=wrapper,
        kernel_env=_environment(home, marker), kernel_uid=uid, marker=marker,
        memory_bytes=limits.memory_bytes)


@functools.cache
def _probe(mode: str) -> str | None:
    """None when `mode` runs this interpreter, with numpy and ipykernel, off the network."""
    needed = {"bwrap": ["bwrap", "setpriv", "prlimit"], "unshare": ["unshare", "prlimit"]}[mode]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    runtime = scratch_dir("probe")
    try:
        (runtime / "work").mkdir()
        km = _confined_manager(mode, Limits(), runtime, runtime / "work")
        argv = km.command("-c", "import os, numpy, ipykernel; "
                                "print(os.readlink('/proc/self/ns/net'))")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    if done.stdout.strip() == os.readlink("/proc/self/ns/net"):
        return "the kernel would share the grader's network"
    return None


def choose_sandbox(requested: str) -> Sandbox:
    """The sandbox to use for `requested` (auto: the strongest that works here)."""
    if requested not in SANDBOXES:
        raise SandboxUnavailable(f"unknown sandbox {requested!r}; choose one of {SANDBOXES}")
    if requested == "none":
        return Sandbox("none")
    reasons = []
    for mode in ("bwrap", "unshare"):
        if requested not in ("auto", mode):
            continue
        reason = _probe(mode)
        if reason is None:
            return Sandbox(mode)
        if requested == mode:
            raise SandboxUnavailable(f"sandbox {mode} cannot run here: {reason}")
        reasons.append(f"{mode}: {reason}")
    warnings.warn("no sandbox works on this machine (" + "; ".join(reasons) + "); student code "
                  "runs with resource limits only. Install bubblewrap (apt-get install "
                  "bubblewrap).", RuntimeWarning, stacklevel=2)
    return Sandbox("none")
