"""How long an instructor waits for the dashboard of a large class.

Fills a server's records with STUDENTS students of SUBMISSIONS graded submissions each (the
report of one real example notebook, graded here once, made distinct per submission by its file
name, so that no cache serves one student's report for another's), starts `grader serve` on a
loopback port and times, as the instructor, the dashboard, grades.csv and the summary plot: the
first request after the start (nothing parsed or drawn yet) and the fastest of five after it.

    .venv/bin/python benchmarks/serve_dashboard.py                 # 500 students, 4 each
    .venv/bin/python benchmarks/serve_dashboard.py --students 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.grade import grade_notebook, limits_for  # noqa: E402
from grader.service.store import Store  # noqa: E402
from grader.spec import find_spec  # noqa: E402
from tests.serving import Client, Server, course_toml  # noqa: E402

ASSIGNMENT = "derivative_calculation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=500)
    parser.add_argument("--submissions", type=int, default=4)
    args = parser.parse_args()
    spec = find_spec(ASSIGNMENT, ROOT)
    example = ROOT / "examples" / "submissions" / "barbara_liskov.ipynb"
    report = asyncio.run(grade_notebook(example, spec, 1, limits_for(spec)))
    with tempfile.TemporaryDirectory(prefix="serve-dashboard-") as tmp:
        server = Server(Path(tmp) / "data", course_toml(**{ASSIGNMENT: ""}))
        store = Store(server.data / "server.sqlite")
        instructor = store.add_user("prof", "Professor", "instructor")
        for i in range(args.students):
            student = f"s{i:04}"
            store.add_user(student, f"Student {i}", "student")
            for k in range(args.submissions):
                name = f"{student}-{k}.ipynb"
                submission = store.add_submission(
                    student=student, assignment=ASSIGNMENT, filename=name,
                    folder=f"{ASSIGNMENT}/{student}-{k}", content_hash="h", deadline=None,
                    late=False, multiplier=1, capacity=args.submissions, refill_s=60)
                store.claim()
                store.finish(submission, report.model_copy(update={"submission": name}))
        store.close()
        server.start()
        try:
            client = Client(server, instructor)
            print(f"{args.students} students, {args.submissions} graded submissions each")
            for path, what in (("", "dashboard"), ("/grades.csv", "grades.csv"),
                               ("/summary.png", "summary plot")):
                times = []
                for _ in range(6):
                    start = time.monotonic()
                    assert client.get(f"/instructor/{ASSIGNMENT}{path}").status_code == 200
                    times.append(time.monotonic() - start)
                print(f"{what:13} first {times[0]:6.3f} s   then {min(times[1:]):6.3f} s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
