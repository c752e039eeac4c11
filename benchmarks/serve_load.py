"""Load check of `grader serve`: 100 students upload within 30 seconds, over loopback.

Starts a real server (uvicorn, in a process of its own) on a temporary data folder, puts N
students on its roster, and has each one, in a thread of this process, sign in and upload one
of the example notebooks at a moment spread evenly over the upload window, then poll its
submission until the feedback is there. Then it checks that every student got exactly one
report (one row each, graded, none lost, none twice) and prints:

- the time from the start of each upload to its report, p50 and p95 (measured by the client:
  upload answered, then polled every POLL_S, so up to POLL_S late);
- the server's grading throughput (submissions per minute, first upload to last report);
- how long the instructor's dashboard, grades.csv and the summary plot take for the class;
- side by side in the same run, `grader grade` on the same N notebooks with the same number
  of kernels, and the ratio of the two throughputs (what the server costs over a class run).

    .venv/bin/python benchmarks/serve_load.py              # N = 100 in 30 s, 2 kernels
    .venv/bin/python benchmarks/serve_load.py --students 20 --window 10 --no-compare
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.service.store import Store  # noqa: E402
from tests.serving import Client, Server, course_toml  # noqa: E402

EXAMPLES = sorted((ROOT / "examples" / "submissions").glob("*.ipynb"))
ASSIGNMENT = "derivative_calculation"
POLL_S = 0.5
# Whole run's bound: a server that loses a submission makes the check fail, not hang.
GIVE_UP_S = 1200


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(
        values) > 1 else values[0]


def student_run(server: Server, token: str, notebook: Path, at: float, t0: float
                ) -> tuple[int, float, float]:
    """One student: wait for their moment, sign in, upload, poll until graded; returns the
    submission id, the upload's answer time and the upload-to-report time."""
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    client = Client(server, token)
    start = time.monotonic()
    submission = client.submit(ASSIGNMENT, notebook, filename=notebook.name)
    answered = time.monotonic() - start
    while time.monotonic() - start < GIVE_UP_S:
        status = client.get(f"/submissions/{submission}/status").json()
        if status["state"] == "done":
            return submission, answered, time.monotonic() - start
        time.sleep(POLL_S)
    raise RuntimeError(f"submission {submission} not graded in {GIVE_UP_S} s")


def serve_run(folder: Path, students: int, window: float, kernels: int) -> float:
    """The load itself; returns the server's throughput, submissions per minute."""
    config = course_toml(**{ASSIGNMENT: "submissions = 3\nrefill_minutes = 60"}).replace(
        "kernels = 2", f"kernels = {kernels}")
    server = Server(folder / "data", config)
    store = Store(server.data / "server.sqlite")
    tokens = [store.add_user(f"s{i:03}", f"Student {i}", "student") for i in range(students)]
    instructor = store.add_user("prof", "Professor", "instructor")
    store.close()
    server.start()
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=students) as pool:
            runs = [pool.submit(student_run, server, token, EXAMPLES[i % len(EXAMPLES)],
                                window * i / students, t0) for i, token in enumerate(tokens)]
            results = [r.result() for r in runs]
        last_upload = max(t0 + window * i / students for i in range(students))
        elapsed = time.monotonic() - t0
        dashboard = _dashboard_times(Client(server, instructor))
    finally:
        server.stop()
    with sqlite3.connect(server.data / "server.sqlite") as db:
        rows = db.execute("SELECT student, count(*), sum(state = 'done'), "
                          "sum(report_json IS NOT NULL) FROM submissions GROUP BY student"
                          ).fetchall()
        ungraded = db.execute("SELECT id, json_extract(report_json, '$.reason') FROM "
                              "submissions WHERE status != 'graded'").fetchall()
    retried = server.log().count("failed (attempt ")
    if retried:
        print(f"the grader failed {retried} time(s) and tried again (see the server's log)")
    for submission, reason in ungraded:
        print(f"submission {submission} could not be graded: {reason}")
    if ungraded:
        print(server.log()[-4000:])
    lost = students - len(rows)
    twice = [r for r in rows if r[1:] != (1, 1, 1)]
    ids = {r[0] for r in results}
    print(f"students {students}, uploads spread over {window:g} s (last at "
          f"{last_upload - t0:.1f} s), {kernels} kernels")
    print(f"reports: {len(rows)} students with a submission, {lost} lost, "
          f"{len(twice)} with other than exactly one submission and one report, "
          f"{len(ids)} distinct submission ids")
    assert lost == 0 and not twice and len(ids) == students, "a submission lost or doubled"
    assert not ungraded, "the grader failed on some submission"
    answers = [r[1] for r in results]
    feedback = [r[2] for r in results]
    throughput = students / elapsed * 60
    print(f"upload answered:        p50 {_percentile(answers, 50):6.2f} s   "
          f"p95 {_percentile(answers, 95):6.2f} s")
    print(f"upload -> feedback:     p50 {_percentile(feedback, 50):6.1f} s   "
          f"p95 {_percentile(feedback, 95):6.1f} s   (polled every {POLL_S} s)")
    print(f"server throughput:      {throughput:6.1f} submissions/min "
          f"({students} in {elapsed:.1f} s, first upload to last report)")
    print(f"instructor dashboard:   {dashboard[0]:6.2f} s (median of 5), grades.csv "
          f"{dashboard[1]:.2f} s, summary plot {dashboard[2]:.2f} s, {students} students")
    return throughput


def _dashboard_times(client: Client) -> tuple[float, float, float]:
    """Seconds the instructor waits for the dashboard, grades.csv and the summary plot."""
    times = []
    for path in ("", "/grades.csv", "/summary.png"):
        runs = []
        for _ in range(5):
            start = time.monotonic()
            assert client.get(f"/instructor/{ASSIGNMENT}{path}").status_code == 200
            runs.append(time.monotonic() - start)
        times.append(statistics.median(runs))
    return times[0], times[1], times[2]


def class_run(folder: Path, students: int, kernels: int) -> float:
    """`grader grade` on the same notebooks; its throughput, submissions per minute."""
    source = folder / "class"
    source.mkdir()
    for i in range(students):
        shutil.copy(EXAMPLES[i % len(EXAMPLES)], source / f"s{i:03}.ipynb")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(source), "--out",
                    str(folder / "out"), "--assignment", ASSIGNMENT, "--jobs", str(kernels),
                    "--cell-timeout", "20", "--call-timeout", "5", "--quiet"], check=True)
    elapsed = time.monotonic() - start
    throughput = students / elapsed * 60
    print(f"grader grade:           {throughput:6.1f} submissions/min "
          f"({students} in {elapsed:.1f} s, same notebooks, --jobs {kernels})")
    return throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds over which the uploads are spread")
    parser.add_argument("--kernels", type=int, default=2)
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the class run on the same notebooks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        served = serve_run(Path(tmp), args.students, args.window, args.kernels)
        if not args.no_compare:
            batch = class_run(Path(tmp), args.students, args.kernels)
            print(f"ratio server / grader grade throughput: {served / batch:.2f}")
    print("ok: every student got exactly one report")


if __name__ == "__main__":
    main()
