"""The layers a kernel applies to its own process: a Landlock ruleset and a seccomp filter.

Both are built here, in the grader, as plain data (paths with access rights; a BPF program);
launcher.py, the kernel's `python -c`, only installs them before ipykernel starts. No
kernel, no files: what this module returns is decided from the machine's architecture and the
Landlock ABI its kernel offers.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import platform
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LAUNCHER_SOURCE = (Path(__file__).parent / "launcher.py").read_text()

# --- Landlock ---------------------------------------------------------------------------------

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
_LANDLOCK_CREATE_RULESET_VERSION = 1

# Filesystem rights, and the ABI version that brought each (linux/landlock.h).
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
_FS_BY_ABI = {1: (1 << 13) - 1, 2: FS_REFER, 3: FS_TRUNCATE, 5: FS_IOCTL_DEV}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

READ = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
# A device file the kernel may use (/dev/null, ...): read, write, `> /dev/null` (truncate), isatty.
DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV
# The folder of the kernel's IPC sockets: it reads its connection file and makes and removes its
# sockets there, nothing else (no folders, no files of its own).
SOCKETS = FS_READ_FILE | FS_READ_DIR | FS_MAKE_SOCK | FS_REMOVE_FILE


@functools.cache
def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when it offers none."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_long(0),
                           ctypes.c_long(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def all_fs_rights(abi: int) -> int:
    """Every filesystem right the ABI knows: handled, so denied unless a rule grants it."""
    rights = 0
    for since, bits in _FS_BY_ABI.items():
        if abi >= since:
            rights |= bits
    return rights


def landlock_ruleset(abi: int, read: Sequence[str], write: Sequence[str],
                     sockets: Sequence[str], devices: Sequence[str]) -> dict[str, Any]:
    """The ruleset for the launcher: `read` and `write` beneath those folders, `sockets` in
    the IPC folder, `devices` for those device files; everything else denied, TCP bind and
    connect too (ABI 4+), and signals and abstract sockets outside the kernel (ABI 6+)."""
    handled = all_fs_rights(abi)
    rules = [(p, READ) for p in read] + [(p, handled) for p in write]
    rules += [(p, SOCKETS) for p in sockets] + [(p, DEVICE) for p in devices]
    return {
        "handled_fs": handled,
        "handled_net": NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
        "scoped": SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
        "rules": [[path, access & handled] for path, access in rules],
    }


# --- seccomp ----------------------------------------------------------------------------------

# Host-wide facilities a notebook never needs, each a way to reach past the kernel's own
# process tree: keyrings (a key outlives the kernel and is shared across kernels), System V and
# POSIX IPC (likewise), tracing and reading other processes, BPF and perf, io_uring (a second
# way to make system calls), namespaces (a user namespace hands out capabilities), mounts,
# modules, swap, reboot, clocks, accounting, handles that open files by inode.
DENIED = (
    "keyctl", "add_key", "request_key",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
    "msgget", "msgsnd", "msgrcv", "msgctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "process_madvise",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "quotactl", "quotactl_fd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "swapon", "swapoff", "reboot", "acct", "syslog", "vhangup", "lookup_dcookie",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
    "open_by_handle_at", "name_to_handle_at",
    # A kernel binds its sockets and never connects: no connection to any socket on the
    # machine, the host's (a container runtime's, a desktop bus's) and other kernels' alike.
    "connect",
)
# The numbers, from the kernel's uapi headers (asm/unistd_64.h; asm-generic/unistd.h for arm64).
_X86_64 = {
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
    "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "process_madvise": 440,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "fanotify_init": 300,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "unshare": 272, "setns": 308,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428,
    "mount_setattr": 442, "quotactl": 179, "quotactl_fd": 443,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320,
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "syslog": 103, "vhangup": 153,
    "lookup_dcookie": 212,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
    "open_by_handle_at": 304, "name_to_handle_at": 303,
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "futimesat": 261,
    "utimensat": 280, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "setxattrat": 463,
    "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "removexattrat": 466,
    "connect": 42, "clone": 56, "clone3": 435, "socket": 41, "socketpair": 53,
}
_AARCH64 = {
    "keyctl": 219, "add_key": 217, "request_key": 218,
    "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197, "semget": 190, "semop": 193,
    "semctl": 191, "semtimedop": 192, "msgget": 186, "msgsnd": 189, "msgrcv": 188,
    "msgctl": 187,
    "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183,
    "mq_notify": 184, "mq_getsetattr": 185,
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "pidfd_getfd": 438, "process_madvise": 440,
    "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "fanotify_init": 262,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "unshare": 97, "setns": 268,
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428,
    "mount_setattr": 442, "quotactl": 60, "quotactl_fd": 443,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
    "kexec_file_load": 294,
    "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89, "syslog": 116, "vhangup": 58,
    "lookup_dcookie": 18,
    "settimeofday": 170, "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266,
    "open_by_handle_at": 265, "name_to_handle_at": 264,
    # arm64 has only the *at forms (and fchmod, fchown) of these.
    "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchownat": 54, "fchown": 55,
    "utimensat": 88, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "setxattrat": 463,
    "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16, "removexattrat": 466,
    "connect": 203, "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199,
}
# AUDIT_ARCH_* of linux/audit.h: a filter checks it first, or a 64-bit process could reach the
# same kernel through another ABI's numbers (int 0x80 on x86_64).
_ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}
_X32_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers

_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_ABS, _JEQ, _JGE, _JSET, _AND, _RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (low words)
# A file's metadata: Landlock governs opening, writing and making files, not their modes,
# owners, times or extended attributes, and a process may change those of every file it owns
# (uid 0 owns most of the machine's; a throwaway uid its IPC folder). These calls do nothing and
# report success: IPython copies a file into its profile with shutil.copy, whose chmod must not
# stop the kernel, and no notebook needs a file's metadata changed.
IGNORED = (
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
)
_CLONE_NEW_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_AF_UNIX, _SOCK_STREAM, _SOCK_TYPE_MASK = 1, 1, 0xF


def syscall_numbers(machine: str | None = None) -> dict[str, int] | None:
    """The system call numbers the filter uses on this machine; None where it has none."""
    arch = _ARCHES.get(machine or platform.machine())
    return dict(arch[1]) if arch else None


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The kernel's seccomp filter as a BPF program (struct sock_filter[]); None on an
    architecture this module has no numbers for.

    It fails with EPERM every call in DENIED and clone with a flag that makes a namespace, skips
    every call in IGNORED as if it had succeeded;
    clone3, whose flags a filter cannot read, with ENOSYS, so that the C library falls back to
    clone; and socket and socketpair of any kind but a Unix stream socket (no network, no
    datagram sent to a Unix socket of the machine) with EOPNOTSUPP, the one error for which
    ZeroMQ, asking for the network interfaces, goes on instead of aborting the kernel. A call of
    another architecture kills.
    """
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, numbers = arch

    def deny(code: int) -> tuple[int, int, int, int]:
        return (_RET, 0, 0, _RET_ERRNO | code)

    allow = (_RET, 0, 0, _RET_ALLOW)
    program = [(_LD_ABS, 0, 0, _ARCH), (_JEQ, 1, 0, audit_arch), (_RET, 0, 0, _RET_KILL_PROCESS),
               (_LD_ABS, 0, 0, _NR)]
    if audit_arch == _ARCHES["x86_64"][0]:
        program += [(_JGE, 0, 1, _X32_BIT), deny(errno.EPERM)]
    for names, code in ((DENIED, errno.EPERM), (IGNORED, 0)):  # errno 0: skipped, "succeeded"
        for name in names:
            if name in numbers:  # an architecture without a call has nothing to refuse
                program += [(_JEQ, 0, 1, numbers[name]), deny(code)]
    program += [(_JEQ, 0, 1, numbers["clone3"]), deny(errno.ENOSYS)]
    program += [(_JEQ, 0, 4, numbers["clone"]), (_LD_ABS, 0, 0, _ARG0),
                (_JSET, 0, 1, _CLONE_NEW_NAMESPACES), deny(errno.EPERM), allow]
    program += [(_JEQ, 1, 0, numbers["socket"]), (_JEQ, 0, 7, numbers["socketpair"]),
                (_LD_ABS, 0, 0, _ARG0), (_JEQ, 0, 4, _AF_UNIX),
                (_LD_ABS, 0, 0, _ARG1), (_AND, 0, 0, _SOCK_TYPE_MASK),
                (_JEQ, 0, 1, _SOCK_STREAM), allow, deny(errno.EOPNOTSUPP)]
    program.append(allow)
    return b"".join(struct.pack("<HBBI", *op) for op in program)
