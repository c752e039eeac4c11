"""Grade the one notebook a platform hands over and write its results file, whatever happens.

The scripts `grader export` writes run this inside Gradescope's and PrairieLearn's containers:
`python -m grader.platforms.autograde PLATFORM --root ROOT --course DIR --assignment NAME`.
A results file is written even when nothing can be graded (no notebook, two notebooks, a grader
that fails): the student then reads why instead of a platform's bare error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.course import secret_paths
from grader.errors import GraderError
from grader.files import write_atomic
from grader.grade import grade_notebook, limits_for
from grader.judge.cases import fresh_seed
from grader.outputs.gradescope import HIDDEN_VISIBILITIES, gradescope_failure, gradescope_results
from grader.outputs.prairielearn import prairielearn_failure, prairielearn_results
from grader.report import Report
from grader.run.sandbox import choose_sandbox
from grader.settings import SANDBOXES
from grader.spec import find_spec


class NoNotebook(GraderError):
    """The submission holds no notebook, or more than one."""


@dataclass(frozen=True)
class Platform:
    """Where a platform puts the submission and wants the results, and how it reads them."""

    submission: str  # folder, relative to the root
    results: str  # file, relative to the root
    graded: Callable[[Report, str], dict[str, Any]]  # (report, hidden visibility)
    ungradable: Callable[[str, float], dict[str, Any]]  # (reason, seconds spent)


PLATFORMS = {
    "gradescope": Platform("submission", "results/results.json", gradescope_results,
                           gradescope_failure),
    "prairielearn": Platform("student", "results/results.json",
                             lambda r, hidden: prairielearn_results(r),
                             lambda reason, _: prairielearn_failure(reason)),
}


def the_notebook(folder: Path) -> Path:
    """The one notebook in the submission folder (searched below it too); NoNotebook otherwise."""
    if not folder.is_dir():
        raise NoNotebook("No file was submitted: submit your notebook (.ipynb).")
    found = sorted(p for p in folder.rglob("*.ipynb")
                   if not any(part.startswith(".") or part == "__MACOSX"
                              for part in p.relative_to(folder).parts))
    if not found:
        others = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if p.is_file())[:5]
        seen = f" (found: {', '.join(others)})" if others else ""
        raise NoNotebook(f"No notebook (.ipynb) was submitted{seen}: submit your notebook.")
    if len(found) > 1:
        names = ", ".join(p.relative_to(folder).as_posix() for p in found[:5])
        raise NoNotebook(f"{len(found)} notebooks were submitted ({names}): submit exactly one, "
                         "so that it is clear which one is graded.")
    # A link is read by the grader's own process, which can read the reference notebook.
    notebook = found[0]
    if notebook.is_symlink() or not notebook.resolve().is_relative_to(folder.resolve()):
        raise NoNotebook(f"{notebook.relative_to(folder).as_posix()} is a link, not a file: "
                         "submit the notebook itself.")
    return notebook


def results_for(platform: Platform, root: Path, course: Path, assignment: str, sandbox: str,
                hidden: str) -> dict[str, Any]:
    """The results document for the submission under `root`; never raises."""
    started = time.monotonic()
    try:
        notebook = the_notebook(root / platform.submission)
        spec = find_spec(assignment, course)
        limits = limits_for(spec, sandbox=sandbox)
        box = choose_sandbox(limits.sandbox, hide=secret_paths(spec),
                             kernel_start=limits.kernel_start)
        report = asyncio.run(grade_notebook(notebook, spec, fresh_seed(), limits,
                                            km_factory=box.factory(limits), sandbox=box.name))
        return platform.graded(report, hidden)
    except NoNotebook as exc:
        return platform.ungradable(str(exc), time.monotonic() - started)
    except GraderError as exc:
        # The course or the machine, not the student: the message says so.
        print(f"grader: error: {exc}", file=sys.stderr)
        return platform.ungradable(f"The grader could not grade this submission: {exc}. This "
                                   "is not a verdict on your notebook: tell your instructor.",
                                   time.monotonic() - started)
    except Exception as exc:
        traceback.print_exc()  # the platform shows the log to the instructor only
        return platform.ungradable(f"The grader failed ({type(exc).__name__}: {exc}). This is "
                                   "not a verdict on your notebook: tell your instructor.",
                                   time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Grade and write the platform's results file; exit 1 only when it cannot be written."""
    parser = argparse.ArgumentParser(prog="python -m grader.platforms.autograde",
                                     description=__doc__)
    parser.add_argument("platform", choices=sorted(PLATFORMS))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--course", type=Path, required=True)
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--sandbox", choices=SANDBOXES, default="auto")
    parser.add_argument("--hidden", choices=HIDDEN_VISIBILITIES, default="visible")
    args = parser.parse_args(argv)
    platform = PLATFORMS[args.platform]
    document = results_for(platform, args.root, args.course, args.assignment, args.sandbox,
                           args.hidden)
    target = args.root / platform.results
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
