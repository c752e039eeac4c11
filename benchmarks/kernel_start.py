"""What each sandbox layer costs a kernel: start to ready, then shutdown, N times per layer set.

    .venv/bin/python benchmarks/kernel_start.py          # N = 20
    .venv/bin/python benchmarks/kernel_start.py -n 5     # to try it out
    .venv/bin/python benchmarks/kernel_start.py --starts # forked against fresh kernels
    .venv/bin/python benchmarks/kernel_start.py --class 40  # the same, grading a class

For each set of layers (none; the launcher alone; Landlock; seccomp; both; bubblewrap alone;
bubblewrap with both) it starts a kernel, waits until it answers, runs `import numpy` (what
every notebook does first), shuts it down, and reports the fastest and the median wall time of
that, and the median CPU time of the kernel's own process up to then (where the launcher,
Landlock and seccomp do their work; bubblewrap's setup shows in the wall time). The layer sets
alternate, so that a change of load on the machine weighs on all of them alike; on a shared
machine the fastest run is the better measure of a layer's own cost.

With --starts it compares instead the two ways kernels start in the full sandbox: afresh, and
forked from the fork server. Blocks of N kernels (start, `import numpy`, shutdown, one after
another) alternate between the two, each block in a process of its own and a cpuacct cgroup of
its own (cgroup v1, as root), which counts the CPU time of the block's process and of
everything it starts: kernels, bubblewrap, and the fork server, whose start (importing
ipykernel and numpy) is part of the block. Wall and CPU time are divided by N.

With --class N it grades a class of N submissions (benchmarks/batch.py's) with `grader grade
--kernel-start fresh`, then `fork`, ROUNDS times, each run in a cpuacct cgroup of its own: the
wall and CPU time of the whole command (grader, kernels, fork server) per notebook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from grader.run.processes import remove_scratch, scratch_dir
from grader.run.sandbox import Sandbox, choose_sandbox, forking
from grader.settings import Limits


def layer_sets() -> dict[str, Sandbox]:
    """The sandboxes to compare, from the full ones this machine offers."""
    full = choose_sandbox("bwrap", kernel_start="fresh")
    fallback = choose_sandbox("landlock")
    bare = replace(fallback, landlock_abi=0, seccomp=False)
    return {
        "none": Sandbox("none"),
        "launcher only (python -c, no layer)": bare,
        "landlock": replace(bare, landlock_abi=fallback.landlock_abi),
        "seccomp": replace(bare, seccomp=True),
        "landlock+seccomp": fallback,
        "bwrap alone": replace(full, landlock_abi=0, seccomp=False),
        "bwrap+landlock+seccomp": full,
    }


async def one_kernel(box: Sandbox) -> tuple[float, float]:
    """Wall seconds from start to a finished `import numpy` and shutdown; the kernel's CPU
    seconds."""
    runtime = scratch_dir("run")
    (runtime / "work").mkdir()
    printed: list[str] = []
    started = time.perf_counter()
    km = box.factory(Limits())(runtime, runtime / "work")
    try:
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        reply = await kc.execute_interactive(
            "import numpy, os\nprint(sum(os.times()[:2]))", timeout=60,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    finally:
        remove_scratch(runtime)
    return time.perf_counter() - started, float("".join(printed))


async def run(n: int) -> None:
    boxes = layer_sets()
    walls: dict[str, list[float]] = {name: [] for name in boxes}
    cpus: dict[str, list[float]] = {name: [] for name in boxes}
    for _ in range(n):
        for name, box in boxes.items():
            wall, cpu = await one_kernel(box)
            walls[name].append(wall)
            cpus[name].append(cpu)
    base = min(walls["none"])
    print(f"{'layers':<38} {'fastest s':>9} {'+ms':>5} {'median s':>9} {'kernel CPU s':>13}")
    for name in boxes:
        fastest = min(walls[name])
        print(f"{name:<38} {fastest:9.3f} {1000 * (fastest - base):5.0f} "
              f"{statistics.median(walls[name]):9.3f} {statistics.median(cpus[name]):13.3f}")


def _accounting_group() -> Path:
    """A fresh cpuacct cgroup holding this process, so every process it starts."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        kind = tail.split()
        if kind[:1] == ["cgroup"] and "cpuacct" in kind[2].split(","):
            group = Path(head.split()[4]) / f"kernel-start-{os.getpid()}"
            group.mkdir()
            (group / "cgroup.procs").write_text(str(os.getpid()))
            return group
    sys.exit("--starts needs a cpuacct cgroup (cgroup v1) and root, to count CPU time")


async def block(start: str, n: int) -> None:
    """N kernels started `start` (fork, fresh) one after another: prints the wall and CPU
    seconds per kernel, the fork server's start and end included."""
    group = _accounting_group()
    try:
        box = choose_sandbox("bwrap", kernel_start=start)
        forking.shutdown_fork_server()  # the probe's: the block starts its own
        usage = group / "cpuacct.usage"
        wall, cpu = time.perf_counter(), int(usage.read_text())
        for _ in range(n):
            await one_kernel(box)
        forking.shutdown_fork_server()
        wall, cpu = time.perf_counter() - wall, int(usage.read_text()) - cpu
    finally:
        Path(group.parent, "cgroup.procs").write_text(str(os.getpid()))
        group.rmdir()
    print(json.dumps({"sandbox": box.name, "wall": wall / n, "cpu": cpu / 1e9 / n}))


def _accounted(argv: list[str]) -> tuple[float, float]:
    """Run `argv` in a cpuacct cgroup of its own: its wall and CPU seconds, descendants'
    included."""
    group = _accounting_group()  # this process's, whose children start in it
    try:
        usage = group / "cpuacct.usage"
        wall, cpu = time.perf_counter(), int(usage.read_text())
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - wall, (int(usage.read_text()) - cpu) / 1e9
    finally:
        Path(group.parent, "cgroup.procs").write_text(str(os.getpid()))
        group.rmdir()


def compare_class(n: int, rounds: int) -> None:
    """Grade a class of `n`, with fresh and with forked kernels, alternating; per notebook."""
    sys.path.insert(0, str(Path(__file__).parent))
    from batch import build_class

    with tempfile.TemporaryDirectory(prefix="kernel-start-") as folder:
        source = Path(folder) / "class"
        build_class(source, n)
        seen: dict[str, list[tuple[float, float]]] = {"fresh": [], "fork": []}
        for round_ in range(rounds):
            for start in seen:
                seen[start].append(_accounted([
                    str(Path(sys.executable).parent / "grader"), "grade", str(source), "--out",
                    f"{folder}/out-{start}-{round_}", "--assignment", "derivative_calculation",
                    "-q", "--kernel-start", start]))
    print(f"a class of {n}, graded {rounds} times each way, default jobs")
    print(f"{'kernel start':<14} {'wall s/notebook':>16} {'CPU s/notebook':>15}")
    medians = {start: (statistics.median(w for w, _ in runs) / n,
                       statistics.median(c for _, c in runs) / n)
               for start, runs in seen.items()}
    for start, (wall, cpu) in medians.items():
        print(f"{start:<14} {wall:16.3f} {cpu:15.3f}")
    print(f"{'fork / fresh':<14} {medians['fork'][0] / medians['fresh'][0]:16.3f} "
          f"{medians['fork'][1] / medians['fresh'][1]:15.3f}")


def compare_starts(n: int, rounds: int) -> None:
    """Blocks of forked and fresh kernels, alternating; the medians, side by side."""
    seen: dict[str, list[dict[str, float]]] = {"fresh": [], "fork": []}
    for _ in range(rounds):
        for start in seen:
            done = subprocess.run([sys.executable, __file__, "--block", start, "-n", str(n)],
                                  capture_output=True, text=True, check=True)
            seen[start].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{rounds} blocks of {n} kernels each: start, import numpy, shutdown")
    print(f"{'sandbox':<30} {'wall s/kernel':>14} {'CPU s/kernel':>13}")
    medians = {}
    for start, blocks in seen.items():
        medians[start] = {k: statistics.median(b[k] for b in blocks) for k in ("wall", "cpu")}
        print(f"{blocks[0]['sandbox']:<30} {medians[start]['wall']:14.3f} "
              f"{medians[start]['cpu']:13.3f}")
    print(f"{'fork / fresh':<30} {medians['fork']['wall'] / medians['fresh']['wall']:14.3f} "
          f"{medians['fork']['cpu'] / medians['fresh']['cpu']:13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20, help="kernels per layer set or block "
                        "(default 20)")
    parser.add_argument("--starts", action="store_true",
                        help="compare forked and fresh kernels instead of the layer sets")
    parser.add_argument("--class", dest="class_size", type=int, metavar="N",
                        help="compare forked and fresh kernels grading a class of N")
    parser.add_argument("--rounds", type=int, default=3,
                        help="blocks or class runs of each kind (default 3)")
    parser.add_argument("--block", choices=["fork", "fresh"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        asyncio.run(block(args.block, args.n))
    elif args.starts:
        compare_starts(args.n, args.rounds)
    elif args.class_size:
        compare_class(args.class_size, args.rounds)
    else:
        asyncio.run(run(args.n))


if __name__ == "__main__":
    main()
