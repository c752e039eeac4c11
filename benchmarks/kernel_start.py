"""What each sandbox layer costs a kernel: start to ready, then shutdown, N times per layer set.

    .venv/bin/python benchmarks/kernel_start.py          # N = 20
    .venv/bin/python benchmarks/kernel_start.py -n 5     # to try it out

For each set of layers (none; the launcher alone; Landlock; seccomp; both; bubblewrap alone;
bubblewrap with both) it starts a kernel, waits until it answers, runs `import numpy` (what
every notebook does first), shuts it down, and reports the fastest and the median wall time of
that, and the median CPU time of the kernel's own process up to then (where the launcher,
Landlock and seccomp do their work; bubblewrap's setup shows in the wall time). The layer sets
alternate, so that a change of load on the machine weighs on all of them alike; on a shared
machine the fastest run is the better measure of a layer's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import replace

from grader.run.processes import remove_scratch, scratch_dir
from grader.run.sandbox import Sandbox, choose_sandbox
from grader.settings import Limits


def layer_sets() -> dict[str, Sandbox]:
    """The sandboxes to compare, from the full ones this machine offers."""
    full = choose_sandbox("bwrap")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20, help="kernels per layer set (default 20)")
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
