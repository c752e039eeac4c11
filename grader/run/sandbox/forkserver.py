"""The fork server: one trusted interpreter that has imported ipykernel and numpy, and forks a
kernel for each request, which confines itself before a line of the student's code runs.

    python -c SOURCE LAUNCHER_SOURCE CONFIG      (CONFIG: {"pivot_root": its syscall number,
                                                  "folder": the server's folder})

It runs as root, outside any sandbox, and never runs a student's code: it only reads requests
from the grader on stdin (one JSON object a line) and answers on stdout. It has no thread but
its main one and no socket (both checked before every fork, and answered with an error instead
of a child), so that a fork copies no lock held by another thread and no connection. Each
child is a fresh copy of the clean server: whatever a kernel changes in its modules dies with it.

A request {"op": "spawn", "id", "bwrap", "root", "uid", "cgroups", "rlimits", "env", "launcher",
"output", "argv"} makes three processes. The first joins the kernel's cgroups, unshares the
mount, PID, network, IPC, UTS and cgroup namespaces, and waits for the second, PID 1 of the new
PID namespace, which builds the kernel's filesystem by carrying out the bubblewrap options
"bwrap" (the very options that start a fresh kernel with bubblewrap) on a fresh tmpfs mounted
on "root", pivots into it, forks the kernel (PID 2) and waits for it. The kernel drops every
capability for good and changes to "uid", sets its rlimits and environment, applies the
launcher's Landlock ruleset and seccomp filter, then runs "argv" (`-m ipykernel_launcher -f
CONNECTION_FILE`, or `-c CODE` for a probe) with stdout and stderr to "output" (null: nowhere).
The kernel's end ends its namespace.
{"op": "signal", "id", "signal"} signals a child's first process, which answers SIGTERM by
killing the kernel's namespace and waiting for its end. The answers: {"id", "pid"}
once forked, {"id", "error"} when not, {"id", "exit"} when the child ended (a status as
subprocess reports it). End of input: every child is killed and the server exits.
"""

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import resource
import runpy
import select
import signal
import stat
import sys

import numpy

# What a kernel imports as it starts, and the grader's harness, paid for once here. None of
# them starts a thread or opens a socket on import (the check before each fork would refuse).
PRELOADED = (
    "ipykernel.ipkernel", "ipykernel.kernelapp", "ipykernel_launcher", "ipykernel.debugger",
    "IPython.core.completerlib", "IPython.core.debugger", "IPython.core.logger",
    "IPython.core.oinspect", "IPython.extensions.storemagic", "zmq", "sqlite3",
    "tornado.platform.asyncio", "tornado.queues", "encodings.idna",
)
for _name in PRELOADED:
    importlib.import_module(_name)

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x20000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_DUMPABLE, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 4, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What bubblewrap's --dev gives, of the devices a kernel may use.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)
launcher = {"__name__": "grader_launcher"}
exec(compile(sys.argv[1], "launcher", "exec"), launcher)
PIVOT_ROOT = json.loads(sys.argv[2])["pivot_root"]


class Refused(Exception):
    """A step of a kernel's confinement failed: the kernel does not start."""


def check(result, step):
    if result < 0:
        code = ctypes.get_errno()
        raise Refused(f"{step}: {os.strerror(code)}")
    return result


def mount(source, target, kind, flags, data=None):
    check(libc.mount(source and source.encode(), target.encode(), kind and kind.encode(),
                     ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def fork_safety():
    """Why this process must not fork now (a thread, a socket), or None."""
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        return f"{len(threads)} threads"
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                return f"a socket (fd {fd})"
    return None


# --- the filesystem, as bubblewrap would make it ------------------------------------------------

def _submounts(path):
    """Mount points at or beneath `path`, from the mount table."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4]
            for code in ("\\040", "\\011", "\\012", "\\134"):
                point = point.replace(code, chr(int(code[1:], 8)))
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return found


def _make_parents(path):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755)


def _bind(source, dest, writable, device=False):
    info = os.stat(source)
    _make_parents(dest)
    if stat.S_ISDIR(info.st_mode):
        os.makedirs(dest, mode=0o755, exist_ok=True)
    elif not os.path.exists(dest):
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    mount(source, dest, None, MS_BIND | MS_REC)
    # As bubblewrap binds: never a set-user-ID file, and no device but the devices themselves
    # (a bind keeps its source's flags otherwise, writable ones too).
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if device else MS_NODEV)
    for point in _submounts(dest):
        mount(None, point, None, flags | (0 if writable else MS_RDONLY))


def _devices(dest):
    mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", f"{dest}/{name}", True, device=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dest}/{name}")
    os.mkdir(f"{dest}/shm", 0o755)


def build_root(options, root):
    """Carry out bubblewrap's filesystem options on a fresh tmpfs at `root`; the rest of the
    options as the kernel's process settings: (hostname, new session, chdir)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    settings = {"hostname": None, "session": False, "chdir": "/", "remount_ro": []}
    perms, size = None, None
    args = list(options)
    while args:
        option = args.pop(0)
        if option in ("--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-net",
                      "--unshare-uts", "--unshare-cgroup-try"):
            continue  # done by the fork: its namespaces, its parent's death
        if option == "--cap-add":
            args.pop(0)  # every capability is dropped below, as setpriv does
        elif option == "--new-session":
            settings["session"] = True
        elif option == "--hostname":
            settings["hostname"] = args.pop(0)
        elif option == "--perms":
            perms = int(args.pop(0), 8)
        elif option == "--size":
            size = int(args.pop(0))
        elif option == "--dir":
            path = root + args.pop(0)
            _make_parents(path)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755 if perms is None else perms)
            perms = None
        elif option == "--tmpfs":
            path = root + args.pop(0)
            os.makedirs(path, mode=0o755, exist_ok=True)
            data = f"mode={0o755 if perms is None else perms:o}"
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
                  data + (f",size={size}" if size is not None else ""))
            perms, size = None, None
        elif option == "--symlink":
            target, path = args.pop(0), root + args.pop(0)
            _make_parents(path)
            os.symlink(target, path)
        elif option in ("--ro-bind", "--ro-bind-try", "--bind"):
            source, path = args.pop(0), root + args.pop(0)
            if option == "--ro-bind-try" and not os.path.exists(source):
                continue
            _bind(source, path, option == "--bind")
        elif option == "--proc":
            path = root + args.pop(0)
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif option == "--dev":
            path = root + args.pop(0)
            os.makedirs(path, mode=0o755, exist_ok=True)
            _devices(path)
        elif option == "--remount-ro":
            settings["remount_ro"].append(args.pop(0))
        elif option == "--chdir":
            settings["chdir"] = args.pop(0)
        else:
            raise Refused(f"bubblewrap option {option} is not supported by the fork server")
    os.chdir(root)
    check(libc.syscall(ctypes.c_long(PIVOT_ROOT), b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    for path in settings["remount_ro"]:
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return settings


# --- becoming the kernel ------------------------------------------------------------------------

class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_privileges(uid, last_cap):
    """Change to `uid` with no capability left, in any set, for good (setpriv's work)."""
    for cap in range(last_cap + 1):
        check(libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), "drop a capability")
    check(libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0),
          "clear ambient capabilities")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    data = (CapData * 2)()
    check(libc.capset(ctypes.byref(CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


def parent_alive(pipe):
    """Whether the first process still holds the write end of `pipe`."""
    poller = select.poll()
    poller.register(pipe, select.POLLIN)
    return not poller.poll(0)


def exit_code(run):
    """Run `run` as the whole life of a forked process: its exit status, never a return into
    the server's loop."""
    try:
        run()
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"the forked process failed: {type(exc).__name__}: {exc}\n")
        code = 70
    atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def namespace_init(request, pipe, last_cap):
    """PID 1 of the kernel's namespaces, as bubblewrap's own: build the kernel's filesystem,
    start the kernel as PID 2 (a process may signal itself, never its namespace's PID 1), and
    end with it, which ends every process left in the namespace."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)
    # Dies with the first process.
    launcher["prctl"](launcher["PR_SET_PDEATHSIG"], signal.SIGKILL)
    if not parent_alive(pipe):
        os._exit(70)
    os.close(pipe)
    settings = build_root(request["bwrap"], request["root"])
    if settings["hostname"]:
        name = settings["hostname"].encode()
        check(libc.sethostname(name, ctypes.c_size_t(len(name))), "sethostname")
    if settings["session"]:
        os.setsid()
    kernel = os.fork()
    if kernel == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        exit_code(lambda: become_kernel(request, settings, last_cap))
    drop_privileges(0, last_cap)  # uid 0 of no use: nothing left to do but wait
    launcher["prctl"](launcher["PR_SET_PDEATHSIG"], signal.SIGKILL)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        if pid == kernel:
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))


def become_kernel(request, settings, last_cap):
    """PID 2: confine this process for good, then run the request's argv."""
    if not isinstance(request["uid"], int) or request["uid"] <= 0:
        raise Refused("a forked kernel needs a uid of its own, not root's")
    drop_privileges(request["uid"], last_cap)
    # A change of uid makes the process undumpable (its /proc entries root's), which a kernel
    # started by exec is not; and it clears the parent-death signal.
    check(libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(1), 0, 0, 0), "dumpable")
    launcher["prctl"](launcher["PR_SET_PDEATHSIG"], signal.SIGKILL)
    if os.getppid() != 1:
        os._exit(70)
    for name, value in request["rlimits"].items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
    os.environ.clear()
    os.environ.update(item.split("=", 1) for item in request["env"])
    os.chdir(settings["chdir"])
    # State a fresh interpreter would draw for itself, not the server's copy.
    import tempfile
    tempfile.tempdir = None
    numpy.random.seed()
    if "random" in sys.modules:
        sys.modules["random"].seed()
    config = request["launcher"]
    if launcher["prctl"](launcher["PR_SET_NO_NEW_PRIVS"], 1) != 0:
        launcher["fail"]("no_new_privs")
    if config["landlock"] is not None:
        launcher["apply_landlock"](config["landlock"])
    if config["seccomp"] is not None:
        launcher["apply_seccomp"](config["seccomp"])
    argv = request["argv"]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c"]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})


def first_process(request, server):
    """The forked child: into the kernel's cgroups and new namespaces, then wait for it."""
    launcher["prctl"](launcher["PR_SET_PDEATHSIG"], signal.SIGKILL)
    if os.getppid() != server:
        os._exit(70)
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as every interpreter starts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel is interrupted by message
    output = os.open(request["output"] or "/dev/null",
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last_cap = int(fh.read())
    for group in request["cgroups"]:
        with open(f"{group}/cgroup.procs", "w") as fh:
            fh.write(str(os.getpid()))
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if libc.unshare(flags | CLONE_NEWCGROUP) != 0:  # a kernel without cgroup namespaces
        check(libc.unshare(flags), "unshare")
    read, write = os.pipe()
    init = 0

    def end_kernel(signum, _frame):
        # The end of the kernel's PID namespace: this process returns from waitpid only once
        # every process in it is gone.
        if init:
            os.kill(init, signal.SIGKILL)
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, end_kernel)
    init = os.fork()
    if init == 0:
        os.close(write)
        exit_code(lambda: namespace_init(request, read, last_cap))
    os.close(read)
    while True:
        try:
            _, status = os.waitpid(init, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


# --- the server ---------------------------------------------------------------------------------

def send(message):
    os.write(1, (json.dumps(message) + "\n").encode())


def spawn(request, children):
    reason = fork_safety()
    if reason is not None:
        send({"id": request["id"], "error": f"the fork server would fork with {reason}"})
        return
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            first_process(request, server)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(2, f"cannot start the kernel: {type(exc).__name__}: {exc}\n".encode())
        os._exit(70)
    children[pid] = request["id"]
    send({"id": request["id"], "pid": pid})


def reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            send({"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)})


def handle(line, children):
    request = json.loads(line)
    if request["op"] == "spawn":
        spawn(request, children)
    elif request["op"] == "signal":
        pid = next((p for p, i in children.items() if i == request["id"]), None)
        if pid is not None:  # not yet reaped, so the pid is still this child's
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, request["signal"])


def serve():
    children = {}
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    send({"ready": os.getpid()})
    pending = b""
    while True:
        try:
            readable, _, _ = select.select([0, wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
            reap(children)
        if 0 in readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    handle(line, children)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(0)


serve()
