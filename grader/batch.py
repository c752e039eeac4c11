"""Grade a class: every submission in a folder, one report each."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
from pathlib import Path

from grader.cases import derive_seed
from grader.grade import grade_notebook
from grader.report import Report
from grader.runner import Limits
from grader.spec import AssignmentSpec


class SourceError(Exception):
    """The class folder cannot be read as submissions."""


def find_submissions(source: Path) -> dict[str, Path]:
    """Student id -> notebook: `<id>.ipynb` files, or `<id>/` folders holding one notebook."""
    if not source.is_dir():
        raise SourceError(f"{source} is not a folder")
    found: dict[str, list[Path]] = {}
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            found.setdefault(entry.stem, []).append(entry)
        elif entry.is_dir():
            notebooks = sorted(p for p in entry.glob("*.ipynb") if not p.name.startswith("."))
            if len(notebooks) > 1:
                names = ", ".join(p.name for p in notebooks)
                raise SourceError(f"{entry} holds several notebooks ({names}); keep one")
            if notebooks:
                found.setdefault(entry.name, []).append(notebooks[0])
    clashes = {k: v for k, v in found.items() if len(v) > 1}
    if clashes:
        detail = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in clashes.items())
        raise SourceError(f"two submissions map to the same student id ({detail})")
    return {k: v[0] for k, v in found.items()}


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, fsync, rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grades_csv(reports: dict[str, Report], spec: AssignmentSpec) -> str:
    """One row per student: a column per function, then total, max and status."""
    functions = [f.name for f in spec.functions]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", *functions, "score", "max_score", "status"])
    for student, report in sorted(reports.items()):
        scores = report.function_scores()
        writer.writerow([student, *(f"{scores.get(f, (0.0, 0.0))[0]:g}" for f in functions),
                         f"{report.score:g}", f"{report.max_score:g}", report.status])
    return out.getvalue()


def grade_class(source: Path, out: Path, spec: AssignmentSpec, limits: Limits,
                salt: str = "") -> int:
    """Grade every submission in `source` into `out`; 0 when each got a report."""
    from grader.cli import UsageError

    try:
        submissions = find_submissions(source)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, Report] = {}
    for student, path in submissions.items():
        seed = derive_seed(spec.name, student, salt)
        report = asyncio.run(grade_notebook(path, spec, seed, limits))
        write_atomic(out / f"{student}.json", report.model_dump_json(indent=2))
        reports[student] = report
        print(f"{student:<24} {report.score:>5g}/{report.max_score:g}  {report.status}")
    write_atomic(out / "grades.csv", grades_csv(reports, spec))
    return 0
