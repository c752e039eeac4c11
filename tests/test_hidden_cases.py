"""The hidden cases stay hidden: nothing a student can run or read reproduces a class run's cases.

The attack these tests replay: a notebook without any derivative code, only a table of answers
computed offline for the cases the student expects to be graded on (those a public self-check
draws, or those an assignment name and a student id would give), looked up by input.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader.classrun.batch import grade_class
from grader.classrun.gradebook import SECRET_BYTES, Gradebook
from grader.classrun.keys import student_seed
from grader.cli import main
from grader.grade import limits_for
from grader.judge.cases import Case, call_args, fresh_seed, keyed_seed, make_cases
from grader.judge.reference import handout_namespace, reference_namespace
from grader.outputs.gradescope import gradescope_results
from grader.outputs.html import feedback_html
from grader.outputs.progress import Verbosity
from grader.outputs.terminal import plain_text, print_report
from grader.report import Report, Visibility
from grader.spec import AssignmentSpec
from tests.notebooks import submission

STUDENT = "mallory"
# What a table notebook returns for inputs it holds no answer for.
NOT_IN_TABLE = 123.0


def _key(function: str, args: Sequence[Any]) -> str:
    """A call as text, the same in the grader and in the kernel (the table cell repeats it)."""
    return json.dumps([function, *[[list(np.shape(a)),
                                    np.round(np.asarray(a, dtype=float), 9).ravel().tolist()]
                                   for a in args]])


def _calls(spec: AssignmentSpec, cases: Sequence[Case]) -> dict[str, tuple[str, list[Any]]]:
    """Every call the harness makes on these cases in a self-check: the graded functions."""
    calls = {}
    for case in cases:
        for f in spec.functions:
            args = call_args(spec, f.name, case)
            calls[_key(f.name, args)] = (f.name, args)
    return calls


def _old_seed(*parts: str) -> int:
    """The seed a student's cases had when it was derived from the assignment and the id."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big") >> 1


SPY = '''
import json as _json
import numpy as _np

_SPYING = False


def _spy(name, *args):
    """Write down what the grader calls; the answer does not matter."""
    if _SPYING:
        with open({log!r}, "a") as fh:
            fh.write(_json.dumps([name, *[[list(_np.shape(a)),
                                           _np.asarray(a, dtype=float).ravel().tolist()]
                                          for a in args]]) + "\\n")
    return _np.zeros(_np.shape(args[0]))
'''

TABLE = '''
import json as _json
import numpy as _np

_TABLE = _json.loads({table!r})


def _answer(name, *args):
    """The answer computed offline for exactly these inputs; nonsense for any other."""
    key = _json.dumps([name, *[[list(_np.shape(a)),
                                _np.round(_np.asarray(a, dtype=float), 9).ravel().tolist()]
                               for a in args]])
    if key not in _TABLE:
        return _np.zeros(_np.shape(args[0])) + {fallback!r}
    shape, flat = _TABLE[key]
    return flat[0] if shape == [] else _np.array(flat).reshape(shape)
'''

PARAMETERS = {"sigmoid_prime": "z", "delta2": "y_hat, y, z2", "delta1": "delta2, w2, z1",
              "update": "w, grad, learning_rate"}


def _bodies(through: str) -> dict[str, str]:
    return {name: f"return {through}({name!r}, {params})" for name, params in PARAMETERS.items()}


def _spy_notebook(folder: Path, log: Path) -> Path:
    # Recording starts in a last cell: only the grader's calls are written down, not those of
    # the notebook's own "try it" cells.
    return submission(folder, STUDENT, bodies=_bodies("_spy"),
                      cells_before=[SPY.format(log=str(log))], extra_cells=["_SPYING = True"])


def _recorded(log: Path) -> dict[str, tuple[str, list[Any]]]:
    calls = {}
    for line in log.read_text().splitlines():
        function, *args = json.loads(line)
        values = [float(flat[0]) if shape == [] else np.array(flat).reshape(shape)
                  for shape, flat in args]
        calls[_key(function, values)] = (function, values)
    return calls


def _table_notebook(folder: Path, spec: AssignmentSpec,
                    calls: dict[str, tuple[str, list[Any]]]) -> Path:
    """The cheat: answers for `calls`, computed outside the notebook (here with the reference,
    the best an offline computation can do), and looked up by input."""
    reference = reference_namespace(spec)
    table = {}
    for key, (function, args) in calls.items():
        answer = np.asarray(reference[function](*args), dtype=float)
        table[key] = [list(answer.shape), answer.ravel().tolist()]
    cell = TABLE.format(table=json.dumps(table), fallback=NOT_IN_TABLE)
    return submission(folder, STUDENT, bodies=_bodies("_answer"), cells_before=[cell])


def _hidden_points(report: Report) -> float:
    return sum(t.score for t in report.tests if t.visibility is Visibility.HIDDEN)


def _long_numbers(text: str) -> list[str]:
    # A seed has 63 random bits: 19 digits, fewer than 12 once in about 90 million draws.
    return re.findall(r"\d{12,}", text)


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, so that print_report draws its rich tables."""

    def isatty(self) -> bool:
        return True


def _student_views(report: Report, spec: AssignmentSpec) -> dict[str, str]:
    """Everything of a report that reaches a student: page, Gradescope results, terminal."""
    terminal = _Terminal()
    print_report(report, terminal)
    return {"html": feedback_html(report, spec.title),
            "gradescope": json.dumps(gradescope_results(report)),
            "text": plain_text(report), "terminal": terminal.getvalue()}


@pytest.fixture(scope="module")
def self_checks(tmp_path_factory: pytest.TempPathFactory):
    """Two self-checks of a spy notebook, as a student runs them on their own machine:
    (the report of the first, the calls of the first, the calls of the second, the second's
    terminal output)."""
    folder = tmp_path_factory.mktemp("spy")
    results = []
    for run, fmt in enumerate(["--json", "--format=text"]):
        log = folder / f"calls-{run}.jsonl"
        (folder / str(run)).mkdir()
        notebook = _spy_notebook(folder / str(run), log)
        out = io.StringIO()
        # No sandbox: on their own machine a student runs what they like, and the spy writes
        # to a file of the host.
        with contextlib.redirect_stdout(out):
            status = main(["check", str(notebook), "--public", "--sandbox", "none", fmt])
        assert status == 1, out.getvalue()  # graded, below full marks
        results.append((out.getvalue(), _recorded(log)))
    (first_out, first_calls), (second_out, second_calls) = results
    return Report.model_validate_json(first_out), first_calls, second_calls, second_out


@pytest.fixture(scope="module")
def cheat(self_checks, spec, tmp_path_factory: pytest.TempPathFactory):
    """A table notebook holding the answers of the first self-check's cases and of the cases
    the old seed derivation gives the student."""
    _, recorded, _, _ = self_checks
    old = _calls(spec, make_cases(spec, handout_namespace(spec), _old_seed(spec.name, STUDENT)))
    return _table_notebook(tmp_path_factory.mktemp("cheat"), spec, recorded | old)


@pytest.fixture(scope="module")
def class_run(cheat, spec, tmp_path_factory: pytest.TempPathFactory):
    """The cheat graded in a class beside an honest student: (source, OUT)."""
    source = tmp_path_factory.mktemp("class")
    (source / f"{STUDENT}.ipynb").write_bytes(cheat.read_bytes())
    submission(source, "ada")
    out = tmp_path_factory.mktemp("out")
    assert grade_class(source, out, spec, limits_for(spec, 5.0, 2.0), verbosity=Verbosity.QUIET,
                       gradescope=True) == 0
    return source, out


def _reports(out: Path) -> dict[str, Report]:
    return {p.stem: Report.model_validate_json(p.read_text()) for p in out.glob("*.json")}


def _rows(gradebook: Path) -> dict[str, tuple]:
    with contextlib.closing(sqlite3.connect(gradebook)) as db:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT student, seed, started_at, finished_at FROM reports")}


def test_seeds_come_from_the_secret_and_every_part():
    secret, other = b"s" * SECRET_BYTES, b"t" * SECRET_BYTES
    seed = keyed_seed(secret, "a", "alice")
    assert seed == keyed_seed(secret, "a", "alice")
    assert len({seed, keyed_seed(other, "a", "alice"), keyed_seed(secret, "b", "alice"),
                keyed_seed(secret, "a", "bob")}) == 4
    assert 0 <= seed < 2**63
    assert fresh_seed() != fresh_seed()


def test_a_gradebook_makes_its_secret_once(tmp_path):
    with Gradebook(tmp_path / "a.sqlite") as book:
        secret = book.secret
    assert len(secret) == SECRET_BYTES
    with Gradebook(tmp_path / "a.sqlite") as book:
        assert book.secret == secret
    with Gradebook(tmp_path / "b.sqlite") as book:
        assert book.secret != secret


def test_a_gradebook_with_a_weak_secret_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    Gradebook(out / "gradebook.sqlite").close()
    with contextlib.closing(sqlite3.connect(out / "gradebook.sqlite")) as db:
        db.execute("UPDATE secret SET value = ?", (b"guessable",))
        db.commit()
    source = tmp_path / "class"
    source.mkdir()
    (source / "x.ipynb").write_text("{")
    assert main(["grade", str(source), "--out", str(out), "-q",
                 "--assignment", "derivative_calculation"]) == 2
    assert "damaged secret" in capsys.readouterr().err


def test_two_gradebooks_draw_different_cases(tmp_path, spec):
    source = tmp_path / "class"
    source.mkdir()
    for student in ("alice", "bob"):
        (source / f"{student}.ipynb").write_text("{")  # unreadable: a report without a kernel
    seeds = []
    for out in (tmp_path / "one", tmp_path / "two"):
        assert grade_class(source, out, spec, limits_for(spec), verbosity=Verbosity.QUIET) == 0
        seeds.append({s: r.seed for s, r in _reports(out).items()})
    assert seeds[0].keys() == seeds[1].keys() == {"alice", "bob"}
    namespace = handout_namespace(spec)
    for student in ("alice", "bob"):
        assert seeds[0][student] != seeds[1][student]
        hidden = [[c.variables["x"] for c in make_cases(spec, namespace, s[student])
                   if not c.visible] for s in seeds]
        assert not np.isin(np.concatenate([np.ravel(x) for x in hidden[0]]),
                           np.concatenate([np.ravel(x) for x in hidden[1]])).any()


def test_a_table_of_answers_for_the_self_checks_cases_earns_nothing_in_class(
        class_run, self_checks, spec):
    _, out = class_run
    reports = _reports(out)
    assert reports["ada"].score == spec.max_score
    cheat = reports[STUDENT]
    assert cheat.status == "graded"
    assert _hidden_points(cheat) == 0, [(t.name, t.score) for t in cheat.tests if t.score]
    # The worked examples are public, and so are their answers: the table has them.
    assert cheat.score == sum(t.max_score for t in cheat.tests
                              if t.visibility is Visibility.VISIBLE) > 0
    with Gradebook(out / "gradebook.sqlite") as book:
        assert cheat.seed == student_seed(spec, STUDENT, book.secret)
    public, _, _, _ = self_checks
    assert cheat.seed not in (public.seed, _old_seed(spec.name, STUDENT))


def test_the_table_earns_full_marks_on_the_cases_it_was_made_for(cheat, self_checks, spec,
                                                                 capsys):
    # The control: the same table on the cases it holds scores everything, so the class run's
    # zero is the hidden cases' doing. `--seed` replays a report's cases, and no view a student
    # gets shows the seed.
    public, _, _, _ = self_checks
    old = _old_seed(spec.name, STUDENT)
    assert main(["check", str(cheat), "--seed", str(old)]) == 0
    assert str(old) not in capsys.readouterr().out
    assert main(["check", str(cheat), "--seed", str(public.seed), "--format", "gradescope"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["score"] == spec.max_score
    assert str(public.seed) not in json.dumps(results)


def test_two_self_checks_draw_different_cases(self_checks, spec):
    public, first, second, _ = self_checks
    assert public.mode == "public"
    examples = _calls(spec, [c for c in make_cases(spec, handout_namespace(spec), 0)
                             if c.visible])
    # The examples are called in both; no hidden input recurs.
    assert examples.keys() <= first.keys() & second.keys()
    assert first.keys() - examples.keys() and second.keys() - examples.keys()
    assert not (first.keys() & second.keys()) - examples.keys()


def test_a_rerun_with_the_same_gradebook_draws_the_same_cases_and_grades_nothing(
        class_run, spec, tmp_path):
    source, out = class_run
    gradebook = out / "gradebook.sqlite"
    before = _rows(gradebook)
    # Into another OUT: the cases follow the gradebook, not the folder.
    assert grade_class(source, tmp_path / "again", spec, limits_for(spec, 5.0, 2.0),
                       gradebook=gradebook, verbosity=Verbosity.QUIET) == 0
    assert _rows(gradebook) == before
    assert _reports(tmp_path / "again") == _reports(out)


def test_no_view_a_student_gets_shows_the_seed(class_run, self_checks, spec):
    _, out = class_run
    cheat = _reports(out)[STUDENT]
    # The instructor's record keeps it: OUT/<student>.json and the gradebook.
    assert _rows(out / "gradebook.sqlite")[STUDENT][0] == cheat.seed
    files = {"page": (out / f"{STUDENT}.html").read_text(),
             "gradescope file": (out / "gradescope" / f"{STUDENT}.json").read_text()}
    public, _, _, self_check_terminal = self_checks
    for report in (cheat, public):
        views = _student_views(report, spec) | files
        assert not [name for name, text in views.items() if str(report.seed) in text]
    assert "points" in self_check_terminal
    assert not _long_numbers(self_check_terminal)


def test_every_check_draws_fresh_cases_unless_given_a_seed(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{")  # an invalid report still names its seed, and needs no kernel
    seeds = []
    for extra in ([], [], ["--public"], ["--seed", "42"]):
        assert main(["check", str(broken), "--assignment", "derivative_calculation",
                     "--sandbox", "none", "--json", *extra]) == 2
        seeds.append(Report.model_validate_json(capsys.readouterr().out).seed)
    assert len(set(seeds[:3])) == 3 and seeds[3] == 42


@pytest.mark.parametrize("leak", [
    pytest.param("return _SEEN[-1][-1]", id="returned"),
    pytest.param("raise ValueError(repr(_SEEN))", id="raised"),
])
def test_no_worked_example_feedback_quotes_another_functions_hidden_inputs(leak, spec, grade,
                                                                        tmp_path):
    # sigmoid_prime keeps every input it is given; delta2, on its worked examples, hands them
    # back in the two places feedback quotes: the value returned and an exception's message.
    notebook = submission(tmp_path, cells_before=["_SEEN = []"], bodies={
        "sigmoid_prime": "_SEEN.append(np.ravel(z).tolist())\ns = sigmoid(z)\nreturn s * (1 - s)",
        "delta2": leak})
    report = grade(notebook)
    shown = report.model_dump_json()  # every test's feedback and case details included
    assert report.status == "graded" and "delta2" in shown
    # Four decimals of each hidden input: feedback quotes values to six.
    hidden = {f"{abs(v):.6f}"[:-2] for c in make_cases(spec, reference_namespace(spec), 7)
              if not c.visible for v in np.ravel(c.variables["z1"])}
    assert not [digits for digits in hidden if digits in shown]
