"""Where a class run and a single check spend their time, side by side with plain nbclient.

Builds N clean submissions (the shipped student notebook with correct answers, each made
distinct), then measures in this one run, one row after another:

- plain nbclient, sequential: `NotebookClient.execute` on each notebook in turn;
- each grader row (`grader grade` with the row's options, in a process of its own);
- `grader check` of one notebook against plain nbclient executing that notebook: cold (the
  kernel starts when the check begins) and warm (a kernel of a KernelPool already started, as a
  long-lived service keeps them);
- with --memory, the grader's peak RSS at N and at 4 N submissions.

For each class row it prints the wall time as a ratio of plain nbclient's, the machine's busy
CPU-seconds per notebook and its idle share, from /proc/stat around the row: what the machine
paid, so other users' work on a shared machine counts too (the load average is printed beside
each row). Rows are grader options, so a new way of starting kernels is one more
`--row NAME=OPTIONS`:

    .venv/bin/python benchmarks/speed.py                       # N = 100
    .venv/bin/python benchmarks/speed.py -n 20 --check-runs 3  # a quick look
    .venv/bin/python benchmarks/speed.py --memory              # also peak RSS at 100 and 400
    .venv/bin/python benchmarks/speed.py --row "mine=--jobs 2 --kernels-ahead 4"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.grade import grade_notebook, limits_for  # noqa: E402
from grader.judge import reference  # noqa: E402
from grader.run.pool import KernelPool  # noqa: E402
from grader.run.sandbox import choose_sandbox  # noqa: E402
from grader.spec import find_spec  # noqa: E402
from tests.notebooks import submission  # noqa: E402

ASSIGNMENT = "derivative_calculation"
# The grader rows measured unless --row names others: options of `grader grade`.
ROWS = {
    "--jobs 1": ["--jobs", "1"],
    "--jobs 1, fresh kernels, none ahead": ["--jobs", "1", "--kernel-start", "fresh",
                                            "--kernels-ahead", "0"],
    "default": [],
    "default, fresh kernels": ["--kernel-start", "fresh"],
    "default, fresh kernels, none ahead": ["--kernel-start", "fresh", "--kernels-ahead", "0"],
}
# The targets, as ratios of plain nbclient: the default (forked kernels where the sandbox
# allows, kernels ahead) at most 0.2, and at most 0.35 with fresh kernels.
TARGETS = {"default": 0.2, "default, fresh kernels": 0.35, "--jobs 1": 0.8}
# Runs the grader's entry point and reports that process's peak RSS (kernels excluded).
_GRADER = ("import resource, sys\n"
           "from grader.cli import main\n"
           "status = main(sys.argv[1:])\n"
           "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
           "file=sys.stderr)\n"
           "sys.exit(status)\n")
_TICK = os.sysconf("SC_CLK_TCK")


def build_class(folder: Path, n: int) -> list[Path]:
    """N clean submissions, each a distinct file (the gradebook keys on content)."""
    folder.mkdir(parents=True)
    return [submission(folder, f"student_{i:04d}", extra_cells=[f"# submitted by {i:04d}"])
            for i in range(n)]


@dataclass
class Cost:
    """What one row cost: wall seconds, the machine's busy and idle CPU-seconds (/proc/stat),
    and the grader's peak RSS where measured."""

    wall: float = 0.0
    busy: float = 0.0
    idle: float = 0.0
    maxrss_mib: float = 0.0


def _machine() -> tuple[float, float]:
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / _TICK, idle / _TICK


@contextmanager
def measured() -> Iterator[Cost]:
    """The cost of the block, filled in when it ends."""
    cost = Cost()
    busy, idle = _machine()
    started = time.perf_counter()
    yield cost
    cost.wall = time.perf_counter() - started
    end_busy, end_idle = _machine()
    cost.busy, cost.idle = end_busy - busy, end_idle - idle


def plain_execute(path: Path) -> None:
    """Execute one notebook in a fresh python3 kernel, every cell, as nbclient does."""
    nb = nbformat.read(path, as_version=4)
    # The kernel's own stderr (a warning per kernel) would bury the figures.
    NotebookClient(nb, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}
                   ).execute(stderr=subprocess.DEVNULL)


def plain_class(paths: list[Path]) -> Cost:
    """Plain sequential nbclient over the class."""
    with measured() as cost:
        for path in paths:
            plain_execute(path)
    return cost


def grader_class(folder: Path, out: Path, options: list[str]) -> Cost:
    """`grader grade` over the class, in a process of its own."""
    command = [sys.executable, "-c", _GRADER, "grade", str(folder), "--out", str(out),
               "--assignment", ASSIGNMENT, "--quiet", *options]
    with measured() as cost:
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"grader failed ({done.returncode}):\n{done.stderr}")
    kib = next(int(line.split()[1]) for line in done.stderr.splitlines()
               if line.startswith("maxrss_kib "))
    cost.maxrss_mib = kib / 1024
    return cost


def check_walls(path: Path, runs: int) -> tuple[float, float, float]:
    """Median wall seconds of plain nbclient on one notebook, of a cold check and of a warm
    one, taken in turn `runs` times."""
    spec = find_spec(ASSIGNMENT)
    limits = limits_for(spec)
    box = choose_sandbox(limits.sandbox, hide=(spec.source, spec.reference_path))
    factory = box.factory(limits)

    def plain() -> float:
        started = time.perf_counter()
        plain_execute(path)
        return time.perf_counter() - started

    async def cold() -> float:
        # As `grader check` does it: the reference is read, while the kernel starts.
        reference._namespace_of.cache_clear()
        started = time.perf_counter()
        await grade_notebook(path, spec, 1, limits, km_factory=factory, sandbox=box.name)
        return time.perf_counter() - started

    async def warm() -> float:
        # As a service does it: the reference read and a kernel started before the submission.
        async with KernelPool(limits, factory, size=1) as pool:
            await pool.ready()
            started = time.perf_counter()
            await grade_notebook(path, spec, 1, limits, km_factory=factory, sandbox=box.name,
                                 kernels=pool)
            return time.perf_counter() - started

    asyncio.run(cold())  # the first check of a process pays for imports: not counted
    walls: dict[str, list[float]] = {"plain": [], "cold": [], "warm": []}
    for _ in range(runs):
        walls["plain"].append(plain())
        walls["cold"].append(asyncio.run(cold()))
        walls["warm"].append(asyncio.run(warm()))
    return tuple(statistics.median(walls[k]) for k in ("plain", "cold", "warm"))  # type: ignore


def check_commands(path: Path, runs: int) -> tuple[float, float]:
    """Median wall seconds of a `python` command executing the notebook with plain nbclient and
    of the `grader check` command, each a fresh process (imports, the sandbox's probe)."""
    plain = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
             "from benchmarks.speed import plain_execute; from pathlib import Path; "
             "plain_execute(Path(sys.argv[2]))", str(ROOT), str(path)]
    check = [sys.executable, "-m", "grader.cli", "check", str(path), "--assignment", ASSIGNMENT]

    def timed(command: list[str]) -> float:
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"{command[2]} failed ({done.returncode}):\n{done.stderr}")
        return time.perf_counter() - started

    walls: dict[str, list[float]] = {"plain": [], "check": []}
    for _ in range(runs):
        walls["plain"].append(timed(plain))
        walls["check"].append(timed(check))
    return statistics.median(walls["plain"]), statistics.median(walls["check"])


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _rows(given: list[str]) -> dict[str, list[str]]:
    if not given:
        return ROWS
    rows: dict[str, list[str]] = {}
    for text in given:
        name, _, options = text.partition("=")
        rows[name.strip()] = shlex.split(options)
    return rows


def main() -> None:
    """Build the class, measure every row, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="submissions in the class (100)")
    parser.add_argument("--row", action="append", default=[], metavar="NAME=OPTIONS",
                        help="a grader row: its name and `grader grade` options (repeatable; "
                             "default: " + "; ".join(ROWS) + ")")
    parser.add_argument("--check-runs", type=int, default=5,
                        help="checks of one notebook per path, the median kept (5)")
    parser.add_argument("--memory", action="store_true",
                        help="also the grader's peak RSS at N and 4 N submissions, default row")
    args = parser.parse_args()
    rows = _rows(args.row)

    work = Path(tempfile.mkdtemp(prefix="grader-speed-"))
    try:
        paths = build_class(work / "class", args.n)
        print(f"N = {args.n} clean submissions, {os.cpu_count()} CPUs, load average "
              f"{_load()} at the start", flush=True)
        print(f"{'row':<30}{'wall s':>8}{'ratio':>7}{'CPU-s/nb':>10}{'idle %':>8}"
              f"{'load after':>17}", flush=True)
        plain = plain_class(paths)
        costs = {"plain nbclient, sequential": plain}
        _print_row("plain nbclient, sequential", plain, plain, args.n)
        for i, (name, options) in enumerate(rows.items()):
            costs[name] = grader_class(work / "class", work / f"out-{i}", options)
            _print_row(name, costs[name], plain, args.n)
        print(f"\ngrader check of one notebook, median of {args.check_runs}:", flush=True)
        alone, cold, warm = check_walls(paths[0], args.check_runs)
        print(f"  in this process: plain nbclient {alone:.2f} s; cold check {cold:.2f} s "
              f"({cold / alone:.2f}x); warm check {warm:.2f} s ({warm / alone:.2f}x)", flush=True)
        alone, command = check_commands(paths[0], args.check_runs)
        print(f"  as commands: python running plain nbclient {alone:.2f} s; `grader check` "
              f"{command:.2f} s ({command / alone:.2f}x)", flush=True)
        if args.memory:
            big = build_class(work / "big", 4 * args.n)
            small_rss = costs["default"].maxrss_mib if "default" in costs else (
                grader_class(work / "class", work / "out-mem", []).maxrss_mib)
            big_rss = grader_class(work / "big", work / "out-big", []).maxrss_mib
            print(f"\ngrader peak RSS: {small_rss:.0f} MiB at N = {args.n}, {big_rss:.0f} MiB "
                  f"at N = {len(big)} ({big_rss / small_rss:.2f}x)", flush=True)
        print(f"\nload average at the end: {_load()}")
        for name, target in TARGETS.items():
            if name in costs:
                ratio = costs[name].wall / plain.wall
                print(f"target {name}: {ratio:.3f}x plain nbclient, target <= {target}: "
                      f"{'met' if ratio <= target else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_row(name: str, cost: Cost, plain: Cost, n: int) -> None:
    total = cost.busy + cost.idle
    idle = 100 * cost.idle / total if total else 0.0
    print(f"{name:<30}{cost.wall:>8.1f}{cost.wall / plain.wall:>7.3f}{cost.busy / n:>10.3f}"
          f"{idle:>8.0f}{_load():>17}", flush=True)


if __name__ == "__main__":
    main()
