"""Time `grader grade` against executing the same notebooks one by one with plain nbclient.

Builds N synthetic submissions from the example class (mixed correct and wrong work), then runs,
one after another in this process's lifetime:

1. plain nbclient, sequentially: the floor of doing the work naively;
2. `grader grade --jobs 1`, with the default sandbox and with `--sandbox none`;
3. `grader grade` with the default jobs;
4. the same command again over the already graded folder;
5. `grader grade` with the default jobs on a class of BIG_N, for the grader's peak memory.

and prints wall times, ratios and the grader process's own peak RSS (its RUSAGE_SELF, kernels
excluded). Run it with the project's interpreter:

    .venv/bin/python benchmarks/batch.py            # N = 100 and 400
    .venv/bin/python benchmarks/batch.py --quick    # N = 10 and 40, to try it out

With --kill it then SIGKILLs a run of N once half the class is graded, runs the same command
again and checks the gradebook, the reports and grades.csv: nothing lost, nothing graded twice.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from grader.report import Report

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "examples" / "submissions"
ASSIGNMENT = "derivative_calculation"

# Runs the grader's own entry point and reports the peak RSS of that process alone.
_GRADER = ("import resource, sys\n"
           "from grader.cli import main\n"
           "status = main(sys.argv[1:])\n"
           "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
           "file=sys.stderr)\n"
           "sys.exit(status)\n")


def build_class(folder: Path, n: int) -> None:
    """N submissions cycling through the example class: correct, wrong, unfinished, erroring."""
    templates = sorted(TEMPLATES.glob("*.ipynb"))
    folder.mkdir(parents=True)
    for i in range(n):
        nb = nbformat.read(templates[i % len(templates)], as_version=4)
        # Each file differs, as real submissions do: the gradebook keys on content.
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"Submitted by student {i:04d}."))
        nbformat.write(nb, folder / f"student_{i:04d}.ipynb")


def plain_nbclient(folder: Path) -> float:
    """Seconds to execute every notebook in turn, each in a fresh python3 kernel."""
    started = time.perf_counter()
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        # allow_errors: run every cell, as the grader does, even after a failing one.
        # The kernel's own stderr (a TCP warning per kernel) would bury the figures.
        NotebookClient(nb, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(folder)}}
                       ).execute(stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Run:
    seconds: float
    maxrss_mib: float


def grader(folder: Path, out: Path, *options: str) -> Run:
    """Wall time and peak RSS of one `grader grade` process."""
    command = [sys.executable, "-c", _GRADER, "grade", str(folder), "--out", str(out),
               "--assignment", ASSIGNMENT, "--quiet", *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"grader failed ({done.returncode}):\n{done.stderr}")
    kib = next(int(line.split()[1]) for line in done.stderr.splitlines()
               if line.startswith("maxrss_kib "))
    return Run(seconds, kib / 1024)


def _graded(out: Path) -> dict[str, str]:
    """student -> finished_at, straight from the gradebook."""
    try:
        with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
            return dict(db.execute("SELECT student, finished_at FROM reports"))
    except sqlite3.Error:  # not created yet
        return {}


def kill_and_resume(folder: Path, out: Path, n: int) -> str:
    """SIGKILL a run once half the class is graded, run it again, and check nothing was lost."""
    command = [sys.executable, "-m", "grader.cli", "grade", str(folder), "--out", str(out),
               "--assignment", ASSIGNMENT, "--quiet"]
    # Its own session, so the kill reaches the kernels as well as the grader.
    proc = subprocess.Popen(command, start_new_session=True)
    while proc.poll() is None and len(_graded(out)) < n // 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _graded(out)
    subprocess.run(command, check=True)
    graded = _graded(out)
    reports = [Report.model_validate_json(p.read_text()) for p in out.glob("*.json")]
    with (out / "grades.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    problems = []
    if len(graded) != n or len(reports) != n or len({r["student"] for r in rows}) != len(rows):
        problems.append(f"{len(graded)} gradebook rows, {len(reports)} reports, {len(rows)} "
                        f"grades.csv rows for {n} submissions")
    if any(graded[s] != finished for s, finished in kept.items()):
        problems.append("a report kept from the killed run was graded again")
    if list(out.glob(".*.partial-*")):
        problems.append("half-written files were left behind")
    outcome = "; ".join(problems) or "ok"
    return (f"killed with {len(kept)}/{n} reports in the gradebook, re-ran: {len(graded)} "
            f"reports, {len(graded) - len(kept)} graded by the re-run: {outcome}")


def _verdict(value: float, limit: float) -> str:
    return "ok" if value <= limit else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="class size for the timings")
    parser.add_argument("--big-n", type=int, default=400, help="class size for the memory check")
    parser.add_argument("--quick", action="store_true", help="N = 10 and BIG_N = 40")
    parser.add_argument("--kill", action="store_true",
                        help="also SIGKILL a run of N midway and check that re-running it "
                             "finishes with nothing lost or graded twice")
    args = parser.parse_args()
    n, big_n = (10, 40) if args.quick else (args.n, args.big_n)

    work = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    try:
        build_class(work / "class", n)
        build_class(work / "big", big_n)
        print(f"N = {n} submissions; memory also at N = {big_n}", flush=True)
        plain = plain_nbclient(work / "class")
        print(f"plain nbclient, sequential      {plain:8.1f} s", flush=True)
        one = grader(work / "class", work / "out-1", "--jobs", "1")
        print(f"grader grade --jobs 1           {one.seconds:8.1f} s", flush=True)
        # The same without the sandbox: what grading itself adds to executing.
        bare = grader(work / "class", work / "out-bare", "--jobs", "1", "--sandbox", "none")
        print(f"  the same, --sandbox none      {bare.seconds:8.1f} s", flush=True)
        default = grader(work / "class", work / "out")
        print(f"grader grade (default jobs)     {default.seconds:8.1f} s", flush=True)
        again = grader(work / "class", work / "out")
        print(f"grader grade, graded already    {again.seconds:8.1f} s", flush=True)
        big = grader(work / "big", work / "out-big")
        print(f"grader grade, N = {big_n:<5}         {big.seconds:8.1f} s", flush=True)
        if args.kill:
            print(kill_and_resume(work / "class", work / "out-killed", n), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("default jobs / plain nbclient", default.seconds / plain, 0.6),
        ("--jobs 1 / plain nbclient", one.seconds / plain, 1.15),
        ("  --sandbox none", bare.seconds / plain, 1.15),
        ("re-run / first run", again.seconds / default.seconds, 0.05),
        (f"peak RSS N={big_n} / N={n}", big.maxrss_mib / default.maxrss_mib, 1.2),
    ]
    print(f"\ngrader peak RSS: {default.maxrss_mib:.0f} MiB at N = {n}, "
          f"{big.maxrss_mib:.0f} MiB at N = {big_n}")
    print(f"{'ratio':<32}{'measured':>10}{'target':>10}")
    for label, value, limit in rows:
        print(f"{label:<32}{value:>10.3f}{'<= ' + format(limit, 'g'):>10}  "
              f"{_verdict(value, limit)}")


if __name__ == "__main__":
    main()
