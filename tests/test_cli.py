"""The command line as an instructor or a student uses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

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
