"""The command line as an instructor or a student uses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import main
from grader.report import Report
from tests.notebooks import ASSIGNMENT, SOLUTION, submission


def test_check_exits_0_on_full_marks_and_prints_a_summary(capsys):
    assert main(["check", str(SOLUTION), "--assignment", "derivative_calculation"]) == 0
    out = capsys.readouterr().out
    assert "22/22" in out


def test_check_exits_1_below_full_marks(capsys):
    assert main(["check", str(ASSIGNMENT), "--assignment", "derivative_calculation"]) == 1


def test_check_json_is_a_valid_report(capsys):
    main(["check", str(SOLUTION), "--json"])  # the assignment comes from the metadata
    report = Report.model_validate_json(capsys.readouterr().out)
    assert report.assignment == "derivative_calculation"
    assert report.score == report.max_score


def test_check_exits_2_when_it_cannot_grade(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    assert main(["check", str(broken), "--assignment", "derivative_calculation"]) == 2
    assert main(["check", str(tmp_path / "absent.ipynb"), "--assignment", "x"]) == 2
    assert main(["check", str(SOLUTION), "--assignment", "no_such_assignment"]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment 'no_such_assignment'" in err


def test_grade_writes_a_report_per_student_and_a_csv(tmp_path):
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "alice")
    submission(source, "bob", bodies={"update": "return w + learning_rate * grad"})
    (source / "carol").mkdir()
    submission(source / "carol", "whatever-name", complete=False)
    (source / "dave.ipynb").write_text("not a notebook")
    out = tmp_path / "out"
    assert main(["grade", str(source), "--out", str(out),
                 "--assignment", "derivative_calculation"]) == 0
    reports = {p.stem: Report.model_validate_json(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {"alice", "bob", "carol", "dave"}
    assert reports["alice"].score == reports["alice"].max_score
    assert reports["dave"].status == "invalid"
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert rows["bob"]["update"] == "0" and rows["bob"]["delta2"] == "6"
    assert rows["carol"]["score"] == "0"


def test_the_console_script_has_help_for_every_command():
    for args in ([], ["check"], ["grade"]):
        result = subprocess.run([sys.executable, "-m", "grader.cli", *args, "--help"],
                                capture_output=True, text=True, check=True)
        assert "usage: grader" in result.stdout
    schema = subprocess.run([sys.executable, "-m", "grader.cli", "schema"], capture_output=True,
                            text=True, check=True)
    assert json.loads(schema.stdout)["title"] == "Report"


@pytest.mark.parametrize("command", ["check", "grade"])
@pytest.mark.parametrize("option", ["--cell-timeout", "--call-timeout", "--cpu-time",
                                    "--notebook-timeout", "--memory", "--file-size",
                                    "--processes", "--output-limit"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "lots"])
def test_limits_that_are_not_positive_numbers_exit_2_and_say_which(command, option, value,
                                                                   tmp_path, capsys):
    args = [str(SOLUTION)] if command == "check" else [str(tmp_path), "--out",
                                                       str(tmp_path / "out")]
    with pytest.raises(SystemExit) as refused:
        main([command, *args, option, value, "--assignment", "derivative_calculation"])
    assert refused.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["check", str(SOLUTION), "--seed", "-1"],
                                  ["grade", "class", "--out", "out", "--jobs", "0"]])
def test_a_negative_seed_or_no_jobs_exit_2(args, capsys):
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    assert "must be at least" in capsys.readouterr().err


# A notebook that replaces its kernel's message packer with one that escapes what the default
# refuses to encode, so that lone surrogates reach the grader, then puts one and a terminal
# escape into exception messages: of a cell, and of a function call.
PATCHED_PACKER = ("import json\nfrom jupyter_client.jsonutil import json_default\n"
                  "k = get_ipython().kernel\n"
                  "k.session.pack = lambda obj: json.dumps(obj, default=json_default).encode()")
UNSAFE_RAISE = "raise ValueError('lone \\ud800 and \\x1b[2J')"


def _strings(value: object) -> list[str]:
    """Every string in a parsed JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in _strings(v))]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def unsafe_text_notebook(folder: Path, name: str) -> Path:
    """A notebook whose delta1 and last cell raise messages no report can hold as they are."""
    return submission(folder, name, cells_before=[PATCHED_PACKER], extra_cells=[UNSAFE_RAISE],
                      bodies={"delta1": UNSAFE_RAISE})


def test_check_reports_a_notebook_that_sends_lone_surrogates(tmp_path, capsys):
    path = unsafe_text_notebook(tmp_path, "surrogates")
    assert main(["check", str(path), "--json"]) == 1
    out = capsys.readouterr().out
    report = Report.model_validate_json(out)
    assert report.cells[-1].message == "ValueError: lone \ufffd and \ufffd[2J"
    examples = next(t for t in report.tests if t.name == "delta1: examples")
    assert "raised ValueError: lone \ufffd and \ufffd[2J" in examples.feedback
    assert not [text for text in _strings(json.loads(out)) if "\ud800" in text or "\x1b" in text]
    assert main(["check", str(path)]) == 1  # and as a table
    assert "lone \ufffd" in capsys.readouterr().out


def test_every_grader_error_has_one_root_that_imports_nothing_of_the_grader():
    import ast
    import pickle

    import grader.errors
    from grader.authoring import AuthoringError
    from grader.classrun.gradebook import GradebookError
    from grader.classrun.sources import SourceError
    from grader.run.notebook import UnreadableNotebook
    from grader.run.sandbox import SandboxUnavailable
    from grader.spec import SpecError

    tree = ast.parse(Path(grader.errors.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in imported if name.split(".")[0] == "grader"]
    for error in (grader.errors.UsageError("u"), SpecError("s"), SourceError("o"),
                  SandboxUnavailable("b"), UnreadableNotebook("n"), GradebookError("g"),
                  AuthoringError(["a", "b"])):
        assert isinstance(error, grader.errors.GraderError)
        assert error.exit_status == 2
        # Results may cross processes: each error comes back the same.
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
    assert pickle.loads(pickle.dumps(AuthoringError(["a", "b"]))).problems == ["a", "b"]
