"""Time grading a class on a local Dask cluster against `--jobs` on the same machine, side by side.

Builds N submissions from the example class (as benchmarks/batch.py does), then, one after
another in this process's lifetime:

1. `grader grade --jobs 2`;
2. `grader grade --cluster local:2` (two worker processes of one kernel each), from a gradebook
   holding the same secret, and checks that both gave the same reports;
3. what a cluster costs before the first submission: a local cluster started, the course
   installed on its workers and their sandboxes checked (`Cluster.open`);
4. Dask's own cost per submission: N tasks that carry a notebook's bytes, take one KERNELS slot
   and send back a report's JSON, without any kernel, committed and released as they arrive;
5. the coordinator's own cost per report: validating its JSON and committing it to the gradebook.

    .venv/bin/python benchmarks/cluster.py            # N = 40
    .venv/bin/python benchmarks/cluster.py --n 100
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster, as_completed

from grader.classrun.cluster import RESOURCE, Cluster
from grader.classrun.gradebook import Gradebook, GradingKey
from grader.grade import limits_for
from grader.report import Report
from grader.spec import find_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import ASSIGNMENT, build_class


def grader(folder: Path, out: Path, book: Path, *options: str) -> float:
    """Wall time of one `grader grade` process."""
    command = [sys.executable, "-m", "grader.cli", "grade", str(folder), "--out", str(out),
               "--gradebook", str(book), "--assignment", ASSIGNMENT, "--quiet", *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"grader failed ({done.returncode}):\n{done.stderr}")
    return time.perf_counter() - started


def _mean_duration(out: Path) -> float:
    """Mean seconds a submission took where it was graded (its report's duration_s)."""
    durations = [Report.model_validate_json(p.read_text()).duration_s for p in out.glob("*.json")]
    return sum(durations) / len(durations)


def _reports(out: Path) -> dict[str, dict]:
    return {p.stem: Report.model_validate_json(p.read_text()).model_dump(exclude={"duration_s"})
            for p in out.glob("*.json")}


def _echo(notebook: bytes, report: str) -> str:
    """A grading task without the grading: what Dask moves and schedules, and nothing else."""
    return report if notebook else ""


def dask_overhead(notebooks: list[bytes], report: str) -> float:
    """Seconds per task of Dask alone on a local cluster of two one-kernel workers, the tasks
    queued and collected as a class run does."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, resources={RESOURCE: 1}) as local, \
            Client(local, set_as_default=False) as client:
        client.submit(_echo, b"warm", report, pure=False).result()  # workers got the function
        started = time.perf_counter()
        futures = [client.submit(_echo, nb, report, resources={RESOURCE: 1}, pure=False)
                   for nb in notebooks]
        for future in as_completed(futures, loop=client.loop):
            Report.model_validate_json(future.result())
            future.release()
        return (time.perf_counter() - started) / len(notebooks)


def coordinator_cost(folder: Path, report: str, n: int) -> float:
    """Seconds per report of validating its JSON and committing it, one transaction each."""
    key = GradingKey("0" * 64, "build", "1" * 64, 1, "{}")
    with Gradebook(folder / "commit.sqlite") as book:
        started = time.perf_counter()
        for i in range(n):
            book.record(f"student_{i:05d}", key, Report.model_validate_json(report), "now")
        return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="class size")
    args = parser.parse_args()
    n = args.n
    work = Path(tempfile.mkdtemp(prefix="grader-bench-cluster-"))
    try:
        build_class(work / "class", n)
        Gradebook(work / "jobs.sqlite").close()
        shutil.copy(work / "jobs.sqlite", work / "cluster.sqlite")  # the same seeds
        print(f"N = {n} submissions", flush=True)
        jobs = grader(work / "class", work / "out-jobs", work / "jobs.sqlite", "--jobs", "2")
        print(f"grader grade --jobs 2               {jobs:8.1f} s", flush=True)
        cluster = grader(work / "class", work / "out-cluster", work / "cluster.sqlite",
                         "--cluster", "local:2")
        print(f"grader grade --cluster local:2      {cluster:8.1f} s", flush=True)
        print(f"  mean duration_s per report: --jobs {_mean_duration(work / 'out-jobs'):.2f} s, "
              f"--cluster {_mean_duration(work / 'out-cluster'):.2f} s", flush=True)
        same = _reports(work / "out-jobs") == _reports(work / "out-cluster")
        print(f"same reports (but their durations): {'yes' if same else 'NO'}", flush=True)

        spec = find_spec(ASSIGNMENT)
        started = time.perf_counter()
        with Cluster.open("local:2", spec, limits_for(spec)):
            opened = time.perf_counter() - started
        print(f"local:2 started, course installed   {opened:8.1f} s", flush=True)

        notebooks = sorted((work / "class").glob("*.ipynb"))
        report = (work / "out-cluster" / f"{notebooks[0].stem}.json").read_text()
        per_task = dask_overhead([p.read_bytes() for p in notebooks], report)
        print(f"Dask alone, per submission          {per_task * 1000:8.1f} ms", flush=True)
        per_commit = coordinator_cost(work, report, max(n, 200))
        print(f"validate + commit, per report       {per_commit * 1000:8.1f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_submission = jobs / n
    print(f"\n{'figure':<44}{'measured':>10}")
    print(f"{'--cluster local:2 / --jobs 2':<44}{cluster / jobs:>10.3f}")
    print(f"{'(cluster - start-up) / --jobs 2':<44}{(cluster - opened) / jobs:>10.3f}")
    print(f"{'--jobs 2 wall time per submission, ms':<44}{per_submission * 1000:>10.1f}")
    print(f"{'Dask per submission / wall per submission':<44}{per_task / per_submission:>10.3f}")
    print(f"{'commits per second, one coordinator':<44}{1 / per_commit:>10.0f}")


if __name__ == "__main__":
    main()
