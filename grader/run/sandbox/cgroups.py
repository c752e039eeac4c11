"""A kernel's cgroups: one memory limit, one process limit and one CPU share for the kernel and
everything it starts.

Where the grader may make cgroups (root, a cgroup filesystem with the memory, pids or cpu
controller, v1 or v2), each kernel gets a group of its own per controller, named after its
marker (grader.run.processes.leftover_name): its processes share one memory limit (the
address-space rlimit holds each process alone) and one process limit (RLIMIT_NPROC counts per
uid, and not at all for uid 0), and they compete for the CPU as one, so that a notebook that
starts 48 busy processes still gets only one kernel's share and cannot push a neighbour past
its timeouts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time
from pathlib import Path

from grader.run.processes import kernel_marker, leftover_name, remove_scratch, scratch_dir

CONTROLLERS = ("memory", "pids", "cpu")
# A kernel's share of the CPU against its neighbours': the controllers' defaults, written out
# so that a changed default on the machine does not change it.
_CPU_SHARES_V1, _CPU_WEIGHT_V2 = 1024, 100


@functools.cache
def hierarchies() -> dict[str, tuple[Path, int]]:
    """For each controller the machine mounts, where its hierarchy is and its version (1, 2)."""
    found: dict[str, tuple[Path, int]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, kind = head.split(), tail.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        mount = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
        if kind[0] == "cgroup":
            for controller in set(CONTROLLERS) & set(kind[2].split(",")):
                found.setdefault(controller, (mount, 1))
        elif kind[0] == "cgroup2":
            try:
                enabled = (mount / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            for controller in set(CONTROLLERS) & set(enabled):
                found.setdefault(controller, (mount, 2))
    return found


def _settings(controller: str, version: int, memory_bytes: int,
              processes: int) -> dict[str, int]:
    if controller == "memory":
        if version == 1:
            return {"memory.limit_in_bytes": memory_bytes}
        return {"memory.max": memory_bytes, "memory.swap.max": 0}
    if controller == "pids":
        return {"pids.max": processes}
    return {"cpu.shares": _CPU_SHARES_V1} if version == 1 else {"cpu.weight": _CPU_WEIGHT_V2}


def kernel_cgroups(marker: str, memory_bytes: int, processes: int) -> dict[str, Path]:
    """Fresh cgroups for one kernel, by controller; those the machine does not allow are
    missing (none at all without root or a cgroup filesystem)."""
    wanted: dict[Path, dict[str, int]] = {}
    controllers: dict[Path, list[str]] = {}
    for controller, (mount, version) in hierarchies().items():
        group = mount / leftover_name(marker)
        wanted.setdefault(group, {}).update(_settings(controller, version, memory_bytes, processes))
        controllers.setdefault(group, []).append(controller)
    made: dict[str, Path] = {}
    for group, settings in wanted.items():
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            for filename, value in settings.items():
                if filename == "memory.swap.max" and not (group / filename).exists():
                    continue  # no swap accounting on this machine
                (group / filename).write_text(str(value))
        except OSError:
            remove_cgroup(group)
            continue
        made |= dict.fromkeys(controllers[group], group)
    return made


@functools.cache
def cpu_shares() -> bool:
    """Whether kernels get a CPU share of their own here (a cpu cgroup can be made)."""
    # Named as a kernel of this run, so that were the run killed meanwhile, the sweep of its
    # folder would remove these groups too.
    folder = scratch_dir("cgroup-probe")
    try:
        groups = kernel_cgroups(kernel_marker(folder), 1 << 30, 64)
        for group in set(groups.values()):
            remove_cgroup(group)
    finally:
        remove_scratch(folder)
    return "cpu" in groups


def remove_cgroup(group: Path) -> None:
    """Kill whatever is left in a kernel's cgroup, then remove the group."""
    for _ in range(250):
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


def release_run(token: str) -> list[str]:
    """Remove the cgroups of every kernel of a run that is gone; what could not be removed."""
    problems = []
    for mount, _version in set(hierarchies().values()):
        with contextlib.suppress(OSError):
            for group in mount.glob(leftover_name(f"{token}-*")):
                remove_cgroup(group)
                if group.exists():
                    problems.append(f"cgroup {group} would not go")
    return problems
