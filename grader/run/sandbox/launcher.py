"""Confine this process for good, then become an IPython kernel: the kernel's `python -c`.

It runs in the kernel's own process before ipykernel, so before any line of the student's code,
and what it applies holds for every process the kernel starts: a Landlock ruleset (the files the
kernel may read and write; no TCP; no signal or abstract socket outside itself) and a seccomp
filter (no keyrings, namespaces, mounts, ...). It is passed as source text and imports only the
standard library, so nothing of the grader needs to be readable in there. The grader builds
what it installs (grader/run/sandbox/confinement.py).

    python -c SOURCE CONFIG -m ipykernel_launcher -f CONNECTION_FILE
    python -c SOURCE CONFIG -c CODE        (the grader's probe of a sandbox)

CONFIG is JSON: "parent", a process whose death kills this one (0: none); "landlock", null or
{"handled_fs", "handled_net", "scoped", "rules": [[path, access], ...]}; "seccomp", null or the
filter program in hex. Any step that fails ends the process with a message on stderr: a kernel
that cannot be confined as asked does not start. The fork server (forkserver.py) runs this source
under another name and calls its functions in each kernel it forks.
"""

import ctypes
import json
import os
import runpy
import signal
import stat
import sys

PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 22, 38
SECCOMP_MODE_FILTER = 2
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
# The rights a rule on a file (not a folder) may hold: execute, write, read, truncate, ioctl.
FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def fail(step):
    sys.stderr.write(f"cannot confine the kernel: {step}: {os.strerror(ctypes.get_errno())}\n")
    os._exit(70)


def syscall(number, *args):
    return libc.syscall(ctypes.c_long(number), *args)


def prctl(option, value, pointer=None):
    return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), pointer, ctypes.c_ulong(0),
                      ctypes.c_ulong(0))


def apply_landlock(spec):
    attr = RulesetAttr(spec["handled_fs"], spec["handled_net"], spec["scoped"])
    ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                      ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        fail("landlock_create_ruleset")
    for path, access in spec["rules"]:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:  # a path this machine lacks grants nothing
            continue
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                access &= FILE_RIGHTS
            rule = PathBeneathAttr(access, fd)
            if access and syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset),
                                  ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                  ctypes.c_uint32(0)) < 0:
                fail(f"landlock_add_rule {path}")
        finally:
            os.close(fd)
    if syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
        fail("landlock_restrict_self")
    os.close(ruleset)


def apply_seccomp(program_hex):
    program = bytes.fromhex(program_hex)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog)) != 0:
        fail("seccomp")


def main():
    config = json.loads(sys.argv[1])
    command = sys.argv[2:]
    # Required by both layers, and no setuid program can undo them.
    if prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        fail("no_new_privs")
    if config["parent"]:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            fail("pdeathsig")
        if os.getppid() != config["parent"]:  # the grader died before the line above
            os._exit(70)
    if config["landlock"] is not None:
        apply_landlock(config["landlock"])
    if config["seccomp"] is not None:
        apply_seccomp(config["seccomp"])
    if command[:1] == ["-m"] and len(command) > 1:
        sys.argv = [command[1], *command[2:]]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    elif command[:1] == ["-c"] and len(command) > 1:
        sys.argv = ["-c", *command[2:]]
        exec(compile(command[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.stderr.write("usage: CONFIG -m MODULE [ARG...] | CONFIG -c CODE\n")
        os._exit(64)


if __name__ == "__main__":
    main()
