"""The `grader` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from grader import __version__
from grader.course import ENVIRONMENT, Course, find_course, secret_paths, write_handout
from grader.errors import (
    EXIT_FULL,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_UNGRADABLE,
    GraderError,
    UsageError,
)
from grader.grade import grade_notebook, limits_for
from grader.judge.cases import fresh_seed
from grader.judge.speccheck import verify as verify_spec
from grader.outputs.gradescope import gradescope_results
from grader.outputs.terminal import print_report
from grader.report import Report
from grader.run.sandbox import choose_sandbox
from grader.service.commands import add_commands as add_server_commands
from grader.settings import KERNEL_STARTS, SANDBOXES, Limits, default, help_text
from grader.spec import AssignmentSpec, find_spec

_COURSE_HELP = ("folder holding assignments/ (and solutions/, the answer key, for a full "
                f"grade); default: ${ENVIRONMENT}, else the current folder if it holds "
                "assignments/, else the course installed with the grader")


def _add_grading_options(p: argparse.ArgumentParser, one_notebook: bool) -> None:
    p.add_argument("--assignment", metavar="NAME",
                   help="assignment name (assignments/NAME.toml in the course) or a spec path"
                        + ("; defaults to the name recorded in the notebook's metadata"
                           if one_notebook else " (required)"))
    p.add_argument("--course", type=Path, metavar="DIR", help=_COURSE_HELP)
    p.add_argument("--cell-timeout", type=_limit("cell_timeout_s"), metavar="S",
                   help=f"{help_text('cell_timeout_s')} (default: the spec's)")
    p.add_argument("--call-timeout", type=_limit("call_timeout_s"), metavar="S",
                   help=f"{help_text('call_timeout_s')} (default: the spec's)")
    p.add_argument("--sandbox", choices=SANDBOXES, default=default("sandbox"),
                   help=help_text("sandbox"))
    p.add_argument("--kernel-start", choices=KERNEL_STARTS, default=default("kernel_start"),
                   help=help_text("kernel_start"))
    p.add_argument("--memory", type=_limit("memory_bytes"), metavar="MIB",
                   help=f"{help_text('memory_bytes')}, MiB "
                        f"(default {default('memory_bytes') >> 20})")
    p.add_argument("--cpu-time", type=_limit("cpu_s"), metavar="S",
                   help=f"{help_text('cpu_s')} (default {default('cpu_s'):g})")
    p.add_argument("--file-size", type=_limit("file_bytes"), metavar="MIB",
                   help=f"{help_text('file_bytes')}, MiB (default {default('file_bytes') >> 20})")
    p.add_argument("--processes", type=_limit("processes"), metavar="N",
                   help=f"{help_text('processes')} (default {default('processes')})")
    p.add_argument("--notebook-timeout", type=_limit("notebook_timeout_s"), metavar="S",
                   help=f"{help_text('notebook_timeout_s')} "
                        f"(default {default('notebook_timeout_s'):g})")
    p.add_argument("--output-limit", type=_limit("output_bytes"), metavar="BYTES",
                   help=f"{help_text('output_bytes')} (default {default('output_bytes')})")


def _limits(args: argparse.Namespace, spec: AssignmentSpec) -> Limits:
    """The limits the grading options ask for (the sandbox as requested, not yet chosen)."""
    mib = 1 << 20
    return limits_for(spec, args.cell_timeout, args.call_timeout, sandbox=args.sandbox,
                      kernel_start=args.kernel_start,
                      memory_bytes=args.memory and args.memory * mib, cpu_s=args.cpu_time,
                      file_bytes=args.file_size and args.file_size * mib,
                      processes=args.processes, output_bytes=args.output_limit,
                      notebook_timeout_s=args.notebook_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader",
        description="Grade backpropagation notebooks. Each submission runs in a fresh python3 "
                    "kernel; its functions are called on generated cases and judged in the "
                    "grader against the reference solution and finite differences.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check", help="grade one notebook and print its report",
        description="Grade one notebook. Exit 0 on full marks, 1 when graded below full "
                    "marks, 2 when it could not be graded (unreadable file, bad arguments).")
    check.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    _add_grading_options(check, one_notebook=True)
    check.add_argument("--format", choices=["text", "json", "gradescope"], default="text",
                       help="text: a table per function (default); json: the report; "
                            "gradescope: Gradescope's results.json")
    check.add_argument("--json", action="store_const", const="json", dest="format",
                       help="same as --format json")
    mode = check.add_mutually_exclusive_group()
    mode.add_argument("--public", action="store_true",
                      help="self-check without the answer key: worked examples, finite-"
                           "difference and property checks only (the default where the course "
                           "has no answer key, as the installed one)")
    mode.add_argument("--full", action="store_true",
                      help="grade with the answer key, as a class run does: an error where the "
                           "course has none (the default where it has one)")
    check.add_argument("--seed", type=_seed,
                       help="seed for the random cases, to replay a graded report's cases (its "
                            "`seed`); default: a fresh one each run, so no check replays the "
                            "cases of a class run")
    check.set_defaults(run=_cmd_check)

    grade = sub.add_parser(
        "grade", help="grade a class: a folder or zip of notebooks",
        description="Grade every submission in SOURCE, a folder or a .zip of one: each *.ipynb "
                    "(the student id is the file name) or one notebook per sub-folder (the id "
                    "is the folder name). Reports go to a gradebook as each is judged; "
                    "submissions it already holds a valid report for are not run again. The "
                    "gradebook holds the secret every student's hidden cases are drawn from: "
                    "keep it, and never hand it out. Writes "
                    "OUT/<student>.json and OUT/<student>.html per submission, OUT/grades.csv "
                    "and OUT/summary.png. Exit 0 when every submission got a report, 1 when the "
                    "grader itself failed on some (run again to retry them), 2 for bad "
                    "arguments or an unreadable source, 130 when interrupted.")
    grade.add_argument("source", type=Path, metavar="SOURCE")
    grade.add_argument("--out", type=Path, required=True, metavar="OUT",
                       help="folder for the reports (created if needed)")
    _add_grading_options(grade, one_notebook=False)
    grade.add_argument("--jobs", "-j", type=_positive_int, metavar="N",
                       help="submissions graded at once, one kernel each (default: the number "
                            "of CPUs)")
    grade.add_argument("--cluster", metavar="ADDRESS",
                       help="grade on a Dask cluster: the scheduler's address (tcp://HOST:8786, "
                            "tls://...; its workers started with --resources KERNELS=N), or "
                            "local:N to start N local worker processes of one kernel each. "
                            "Needs the dask extra: pip install 'backprop-grader[dask]'")
    grade.add_argument("--kernels-ahead", type=_whole(0, "A count, 0 or more."), metavar="N",
                       dest="ahead",
                       help="kernels started ahead of the submissions that will take them, so "
                            "that no CPU waits for an interpreter to start; each is used by one "
                            "submission only (default: the number of CPUs; 0: start each "
                            "submission's kernel when its grading begins)")
    grade.add_argument("--force", action="store_true",
                       help="grade every submission again, even those the gradebook holds a "
                            "report for")
    grade.add_argument("--gradebook", type=Path, metavar="FILE",
                       help="SQLite gradebook (default: OUT/gradebook.sqlite); a new one makes a "
                            "new secret, so new hidden cases")
    talk = grade.add_mutually_exclusive_group()
    talk.add_argument("--quiet", "-q", action="store_true",
                      help="print nothing but warnings and errors")
    talk.add_argument("--verbose", "-v", action="store_true",
                      help="print a line per submission as its report comes in")
    grade.add_argument("--format", choices=["json", "gradescope"], default="json",
                       help="gradescope: also write OUT/gradescope/<student>.json, Gradescope's "
                            "results.json (OUT/<student>.json, .html, grades.csv and "
                            "summary.png are always written)")
    grade.add_argument("--similarity", action="store_true",
                       help="also flag copied work: write OUT/similarity.csv and "
                            "OUT/similarity.html as `grader similarity` does (grades unchanged)")
    # Every report judged so far is committed; the same command finishes the rest.
    grade.set_defaults(run=_cmd_grade,
                       interrupted="interrupted; run the same command again to grade the rest")

    assign = sub.add_parser(
        "assign", help="write student notebooks from solution notebooks",
        description="Write assignments/NAME.ipynb from solutions/NAME.ipynb and its spec "
                    "assignments/NAME.toml: code between '# BEGIN SOLUTION' and '# END "
                    "SOLUTION' becomes 'raise NotImplementedError()', cells tagged "
                    "'solution-only' are dropped, outputs are cleared. With --check, write "
                    "nothing and exit 1 when a student notebook is out of date. Exit 2 on an "
                    "authoring mistake.")
    assign.add_argument("solutions", type=Path, nargs="*", metavar="SOLUTION",
                        help="solution notebooks (default: every solutions/*.ipynb of the course)")
    assign.add_argument("--check", action="store_true",
                        help="compare instead of writing; also flags assignments/*.ipynb "
                             "that no solution produces")
    assign.add_argument("--course", type=Path, metavar="DIR",
                        help="folder holding assignments/ and solutions/ (default: the "
                             "solution's parent's parent; without SOLUTION, as for `grader check`)")
    assign.set_defaults(run=_cmd_assign)

    _add_export(sub)

    similarity = sub.add_parser(
        "similarity", help="flag pairs of submissions with copied code",
        description="Compare the code cells of every submission in SOURCE (a folder or zip, as "
                    "`grader grade` reads it) with every other, by winnowing fingerprints "
                    "(copydetect: pip install 'backprop-grader[similarity]'). The handout's "
                    "code and passages many submissions share are left out; renamed "
                    "identifiers and reordered cells still match. Writes OUT/similarity.csv "
                    "(the pairs at or above the threshold) and OUT/similarity.html (each such "
                    "pair side by side, shared passages marked). Evidence for a person to "
                    "read: no grade changes. Exit 0 when no pair is flagged, 1 when some are.")
    similarity.add_argument("source", type=Path, metavar="SOURCE")
    similarity.add_argument("--assignment", required=True, metavar="NAME",
                            help="assignment name (its handout's code is left out) or a spec path")
    similarity.add_argument("--course", type=Path, metavar="DIR", help=_COURSE_HELP)
    similarity.add_argument("--out", type=Path, required=True, metavar="OUT",
                            help="folder for similarity.csv and similarity.html")
    similarity.add_argument("--threshold", type=_share, metavar="T",
                            help="flag a pair when one's own code is at least this share found "
                                 "in the other's, 0 to 1 (default 0.7)")
    similarity.set_defaults(run=_cmd_similarity)

    handout = sub.add_parser(
        "handout", help="write an assignment's student notebook into this folder",
        description="Write NAME.ipynb, the student notebook of assignment NAME, into the current "
                    "folder (or --out DIR). A notebook of that name already there is never "
                    "replaced without --force. Without NAME, list the course's assignments.")
    handout.add_argument("name", nargs="?", metavar="NAME")
    handout.add_argument("--out", type=Path, default=Path(), metavar="DIR",
                         help="folder to write to (default: the current folder)")
    handout.add_argument("--force", action="store_true",
                         help="replace DIR/NAME.ipynb when it exists: the work in it is lost")
    handout.add_argument("--course", type=Path, metavar="DIR", help=_COURSE_HELP)
    handout.set_defaults(run=_cmd_handout)

    schema = sub.add_parser("schema", help="print the JSON Schema of the report")
    schema.set_defaults(run=_cmd_schema)
    add_server_commands(sub)
    return parser


def _add_export(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="make an autograder for Gradescope or PrairieLearn",
        description="Write what a course platform needs to grade NAME on every submission: "
                    "a wheel of this grader (built from this checkout unless --wheel), the "
                    "spec, the handout and the reference notebook, and the platform's scripts. "
                    "Submissions are graded in the sandbox inside the platform's container; "
                    "the results file is written even when a notebook cannot be graded.")
    platforms = export.add_subparsers(dest="platform", required=True, metavar="PLATFORM")
    gradescope = platforms.add_parser(
        "gradescope", help="Gradescope's autograder zip (setup.sh, run_autograder)",
        description="Write Gradescope's autograder zip: upload it as the assignment's "
                    "autograder (base image: Ubuntu; setup.sh installs Python 3.11 if the "
                    "image has no Python of at least 3.11).")
    gradescope.add_argument("-o", "--output", type=Path, required=True, metavar="ZIP",
                            help="the zip to write, e.g. autograder.zip")
    gradescope.add_argument("--hidden", choices=["after_due_date", "after_published", "visible"],
                            default="after_due_date",
                            help="when students see the verdicts on hidden cases (default "
                                 "after_due_date); the worked examples are visible at once. "
                                 "Gradescope hides the total score while a test is hidden")
    prairielearn = platforms.add_parser(
        "prairielearn", help="a PrairieLearn external grader (image, entrypoint, question)",
        description="Write (or add to) DIR: image/ (Dockerfile and wheel of the grading "
                    "image), serverFilesCourse/backprop_grader/ (entrypoint run.sh and the "
                    "course files) and questions/NAME/ (info.json with externalGradingOptions, "
                    "question.html): merge the last two into the course repository, build and "
                    "push the image.")
    prairielearn.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                              help="folder to write (created if needed)")
    prairielearn.add_argument("--image", default=f"backprop-grader:{__version__}",
                              help="the grading image's name, as PrairieLearn pulls it (e.g. "
                                   "YOU/backprop-grader:VERSION on Docker Hub; default "
                                   "%(default)s)")
    for p in (gradescope, prairielearn):
        p.add_argument("assignment", metavar="NAME",
                       help="assignment name (assignments/NAME.toml in the course) or a spec path")
        p.add_argument("--course", type=Path, metavar="DIR", help=_COURSE_HELP)
        p.add_argument("--sandbox", choices=SANDBOXES, default=default("sandbox"),
                       help="the sandbox submissions run in on the platform; none confines "
                            "nothing (a notebook could read the answer key): default "
                            "%(default)s, the strongest that works there")
        p.add_argument("--wheel", type=Path, metavar="FILE",
                       help="the backprop_grader wheel to ship (default: built from this "
                            "checkout)")
        p.set_defaults(run=_cmd_export)


def _share(text: str) -> float:
    """A share, from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


def _similarity(source: Path, out: Path, spec: AssignmentSpec, threshold: float | None) -> int:
    """Write the similarity files; 1 when some pair is flagged."""
    from grader.classrun.similarity import DEFAULT_THRESHOLD, compare_class
    from grader.outputs.similarity import write_similarity

    result = compare_class(source, spec, DEFAULT_THRESHOLD if threshold is None else threshold)
    _, page = write_similarity(result, out, spec.title)
    flagged = result.flagged
    print(f"similarity: {len(flagged)} of {len(result.pairs)} pairs at or above "
          f"{result.threshold:g}" + (f"; read {page}" if flagged else ""))
    for p in flagged:
        print(f"  {p.first} and {p.second}: {p.score:.2f}")
    if len(result.pairs) > len(flagged):
        below = result.pairs[len(flagged)]
        print(f"  highest below: {below.first} and {below.second}: {below.score:.2f}")
    return EXIT_PARTIAL if flagged else EXIT_FULL


def _cmd_similarity(args: argparse.Namespace) -> int:
    return _similarity(args.source, args.out, _spec_for(args), args.threshold)


def _cmd_export(args: argparse.Namespace) -> int:
    spec = find_spec(args.assignment, args.course)
    if args.platform == "gradescope":
        from grader.platforms.gradescope import export_gradescope

        out = export_gradescope(spec, args.output, hidden=args.hidden, sandbox=args.sandbox,
                                wheel=args.wheel)
        print(f"wrote {out}: upload it as the autograder of {spec.name} on Gradescope")
    else:
        from grader.platforms.prairielearn import export_prairielearn

        info = export_prairielearn(spec, args.output, image=args.image, sandbox=args.sandbox,
                                   wheel=args.wheel)
        print(f"wrote {args.output}: build and push {args.output / 'image'} as {args.image}, "
              f"then copy serverFilesCourse/ and questions/ into the course ({info})")
    return 0


def _spec_for(args: argparse.Namespace, notebook: Path | None = None) -> AssignmentSpec:
    return _course_and_spec(args, notebook)[1]


def _course_and_spec(args: argparse.Namespace, notebook: Path | None = None
                     ) -> tuple[Course | None, AssignmentSpec]:
    """The assignment the options name, and the course it comes from (None for a spec path)."""
    name = args.assignment
    if name is None and notebook is not None:
        name = _assignment_in_metadata(notebook)
    if name is None:
        raise UsageError("--assignment is required (the notebook does not name its assignment)")
    if name.endswith(".toml"):
        return None, find_spec(name)
    course = find_course(args.course)
    return course, find_spec(name, course.root)


def _assignment_in_metadata(notebook: Path) -> str | None:
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
        name = meta.get("grader", {}).get("assignment")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return name if isinstance(name, str) and name.isidentifier() else None


def _cmd_check(args: argparse.Namespace) -> int:
    if not args.notebook.is_file():
        raise UsageError(f"no such file: {args.notebook}")
    course, spec = _course_and_spec(args, args.notebook)
    has_key = spec.reference_path.is_file()
    # --full without a key is refused by grade_notebook, which names the course.
    public = args.public or (not args.full and not has_key)
    why = ("--public" if args.public else "--full" if args.full
           else "this course has no answer key" if public else "with the answer key")
    where = course.describe() if course else f"spec {spec.source}"
    print(f"grader: {spec.name} from {where}; {'public' if public else 'full'} mode ({why})",
          file=sys.stderr)
    verify_spec(spec, public)
    # Fresh cases unless asked: what a student can run never replays a class run's cases.
    seed = args.seed if args.seed is not None else fresh_seed()
    limits = _limits(args, spec)
    # Chosen here, once, and checked to hide the answer key (and a spec not published).
    box = choose_sandbox(limits.sandbox, hide=secret_paths(spec),
                         kernel_start=limits.kernel_start)
    try:
        report = asyncio.run(grade_notebook(args.notebook, spec, seed, limits,
                                            km_factory=box.factory(limits), sandbox=box.name,
                                            public=public))
    except GraderError:
        raise  # already says what went wrong
    except Exception as exc:  # a kernel that cannot start, a full disk: not the student's
        raise GraderError(f"could not grade {args.notebook}: {type(exc).__name__}: {exc}"
                          ) from exc
    if args.format == "json":
        print(report.model_dump_json(indent=2))
    elif args.format == "gradescope":
        print(json.dumps(gradescope_results(report), indent=2))
    else:
        print_report(report)
    if report.status == "invalid":
        return EXIT_UNGRADABLE
    return EXIT_FULL if report.score >= report.max_score else EXIT_PARTIAL


def _whole(minimum: int, what: str) -> Callable[[str], int]:
    """An argument type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__doc__ = what
    return parse


_positive_int = _whole(1, "A whole number of at least 1 (a count).")
_seed = _whole(0, "A whole number of at least 0, as numpy's random generators take.")


def _limit(field: str) -> Callable[[str], Any]:
    """An argument type for a Limits field: its number type, checked against the field's own
    constraints, so that a limit Limits would refuse is refused before any grading. Options in
    MiB are checked before scaling, which keeps their sign."""
    info = Limits.model_fields[field]
    kind = info.annotation
    assert kind is int or kind is float
    adapter = TypeAdapter(Annotated[kind, *info.metadata])
    noun = "a whole number" if kind is int else "a number of seconds"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, not {text!r}") from None
        try:
            return adapter.validate_python(value)
        except ValidationError as refused:
            rule = refused.errors()[0]["msg"].removeprefix("Input should be ")
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}") from None

    parse.__doc__ = f"A value of Limits.{field}."
    return parse


def _cmd_grade(args: argparse.Namespace) -> int:
    from grader.classrun.batch import grade_class
    from grader.outputs.progress import Verbosity

    spec = _spec_for(args)
    # The spec's own slips stop the run before any submission is graded.
    verify_spec(spec)
    if args.similarity:
        from grader.classrun.similarity import require_copydetect

        require_copydetect()  # before grading, not after an hour of it
    # grade_class chooses the sandbox, once for the class.
    limits = _limits(args, spec)
    if args.cluster is not None and args.jobs is not None:
        raise UsageError("--jobs does not apply with --cluster: each worker runs as many kernels "
                         "as its KERNELS resource (local:N: one per worker)")
    verbosity = (Verbosity.QUIET if args.quiet else
                 Verbosity.VERBOSE if args.verbose else Verbosity.NORMAL)
    status = grade_class(args.source, args.out, spec, limits, jobs=args.jobs, force=args.force,
                         gradebook=args.gradebook, verbosity=verbosity,
                         gradescope=args.format == "gradescope", cluster=args.cluster,
                         ahead=args.ahead)
    if args.similarity:
        # Flags are evidence for a person: they never change the grading run's status.
        _similarity(args.source, args.out, spec, None)
    return status


def _cmd_assign(args: argparse.Namespace) -> int:
    from grader import authoring

    solutions: list[Path] = args.solutions
    if not solutions:
        course = find_course(args.course).root
        solutions = authoring.solutions_in(course)
        if not solutions:
            raise UsageError(f"no solution notebooks in {course / 'solutions'}")
    failed, stale = False, False
    produced: set[Path] = set()
    for solution in solutions:
        if not solution.is_file():
            raise UsageError(f"no such file: {solution}")
        try:
            student = authoring.build_student_notebook(solution, args.course)
        except authoring.AuthoringError as exc:
            print("\n".join(f"grader: error: {p}" for p in exc.problems), file=sys.stderr)
            failed = True
            continue
        produced.add(student.path)
        try:
            answers = authoring.example_answers(student.spec)
        except (authoring.AuthoringError, GraderError) as exc:
            print(f"grader: error: {exc}", file=sys.stderr)
            failed = True
            continue
        if not args.check:
            student.write()
            print(f"{solution} -> {student.path}")
            if answers.stale():
                answers.write()
                print(f"{solution} -> {answers.path} [example_answers]")
        else:
            if difference := student.difference():
                stale = True
                print(f"{student.path} is out of date ({difference}); run: grader assign "
                      f"{solution}")
            if changed := answers.stale():
                stale = True
                print(f"{answers.path}: [example_answers] are out of date for "
                      f"{', '.join(changed)}; run: grader assign {solution}")
    if args.check and not args.solutions:
        for orphan in authoring.orphans(find_course(args.course).root, produced):
            stale = True
            print(f"{orphan} has no solution notebook in solutions/")
    if failed:
        return EXIT_UNGRADABLE
    return EXIT_PARTIAL if stale else EXIT_FULL


def _cmd_handout(args: argparse.Namespace) -> int:
    course = find_course(args.course)
    if args.name is None:
        print(f"grader: {course.describe()}", file=sys.stderr)
        names = course.names()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:{width}}  {find_spec(name, course.root).title}")
        return EXIT_FULL
    written = write_handout(find_spec(args.name, course.root), args.out, force=args.force)
    print(f"wrote {written}; check it with: grader check {written}")
    return EXIT_FULL


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Report.model_json_schema(mode="serialization"), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the only place where an exception becomes an exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except GraderError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        if hint := getattr(args, "interrupted", None):
            print(f"grader: {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`grader check NB | head`): silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
