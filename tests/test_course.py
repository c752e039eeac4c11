"""Which course a command uses, `grader handout`, and grading where there is no answer key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grader.cli import main
from grader.course import ENVIRONMENT, find_course, installed_course
from tests.notebooks import ROOT, submission


def _course(folder: Path, *names: str) -> Path:
    """A course without its answer key, holding the named assignments."""
    (folder / "assignments").mkdir(parents=True)
    for name in names:
        for suffix in (".toml", ".ipynb"):
            shutil.copy(ROOT / "assignments" / f"{name}{suffix}", folder / "assignments")
    return folder


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty current folder, and no course named in the environment."""
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_course_is_found_from_the_option_then_the_variable_then_here_then_installed(
        tmp_path, elsewhere, monkeypatch):
    option = _course(tmp_path / "option", "derivative_calculation")
    variable = _course(tmp_path / "variable", "vectorized_backprop")
    assert find_course() == installed_course()
    _course(elsewhere, "training_and_gradient_check")
    assert find_course().root == elsewhere and find_course().origin == "the current folder"
    monkeypatch.setenv(ENVIRONMENT, str(variable))
    assert find_course().root == variable and find_course().origin == f"from ${ENVIRONMENT}"
    assert find_course(option).root == option


def test_a_named_course_that_is_not_one_is_an_error_not_passed_over(tmp_path, elsewhere,
                                                                    monkeypatch, capsys):
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path / "missing"))
    assert main(["handout"]) == 2
    assert f"${ENVIRONMENT} {tmp_path / 'missing'} is not a course" in capsys.readouterr().err
    assert main(["handout", "--course", str(elsewhere)]) == 2
    assert f"--course {elsewhere} is not a course" in capsys.readouterr().err


def test_handout_writes_the_student_notebook_and_never_replaces_work(elsewhere, capsys):
    assert main(["handout", "derivative_calculation"]) == 0
    written = elsewhere / "derivative_calculation.ipynb"
    shipped = (ROOT / "assignments" / "derivative_calculation.ipynb").read_bytes()
    assert written.read_bytes() == shipped
    written.write_text("my work")
    assert main(["handout", "derivative_calculation"]) == 2
    assert "exists and may hold your work: pass --force" in capsys.readouterr().err
    assert written.read_text() == "my work"
    assert [p.name for p in elsewhere.iterdir()] == [written.name]  # nothing left aside
    assert main(["handout", "derivative_calculation", "--force"]) == 0
    assert written.read_bytes() == shipped
    assert main(["handout", "vectorized_backprop", "--out", "hw/2"]) == 0
    assert (elsewhere / "hw" / "2" / "vectorized_backprop.ipynb").is_file()


def test_handout_lists_the_assignments(elsewhere, capsys):
    assert main(["handout", "no_such_thing"]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment 'no_such_thing'" in err
    assert ("known assignments: derivative_calculation, softmax_cross_entropy, "
            "training_and_gradient_check, vectorized_backprop") in err
    assert main(["handout"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["derivative_calculation", "Derivative", "calculation",
                                           "for", "a", "two-node", "sigmoid", "network"]
    assert installed_course().describe() in err


def test_check_names_the_course_and_self_checks_where_there_is_no_answer_key(
        tmp_path, elsewhere, capsys):
    _course(elsewhere, "derivative_calculation")
    notebook = submission(tmp_path)
    assert main(["check", str(notebook), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mode"] == "public"
    assert captured.err.splitlines() == [
        f"grader: derivative_calculation from course {elsewhere} (the current folder); public "
        "mode (this course has no answer key)"]
    # Asked for, a full grade is refused, naming the course; so is a class run.
    assert main(["check", str(notebook), "--full"]) == 2
    refusal = (f"no answer key for derivative_calculation in the course at {elsewhere} "
               f"({elsewhere / 'solutions' / 'derivative_calculation.ipynb'} is missing)")
    assert refusal in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--assignment", "derivative_calculation"]) == 2
    assert refusal in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_check_grades_in_full_where_the_course_has_its_answer_key(tmp_path, elsewhere, capsys):
    notebook = submission(tmp_path)
    assert main(["check", str(notebook), "--json", "--course", str(ROOT)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mode"] == "full"
    assert (f"from course {ROOT} (from --course); full mode (with the answer key)"
            in captured.err)


def test_a_course_beside_the_submission_is_never_the_one_used(tmp_path, elsewhere, capsys):
    """A student's folder holding assignments/ and solutions/ of their own making, next to
    their notebook: checked from elsewhere, the installed course grades it, and the planted
    answer key (code the grader would run in its own process) never runs."""
    theirs = _course(tmp_path / "unpacked", "derivative_calculation")
    (theirs / "solutions").mkdir()
    planted = tmp_path / "planted-ran"
    reference = json.loads((ROOT / "solutions" / "derivative_calculation.ipynb").read_text())
    reference["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [],
                               "execution_count": None,
                               "source": f"open({str(planted)!r}, 'w').close()"})
    (theirs / "solutions" / "derivative_calculation.ipynb").write_text(json.dumps(reference))
    notebook = submission(theirs)
    assert main(["check", str(notebook), "--json"]) == 0
    assert f"from {installed_course().describe()}" in capsys.readouterr().err
    assert not planted.exists()


def test_a_notebook_cannot_name_a_spec_file_for_its_own_check(tmp_path, elsewhere, capsys):
    """A spec is trusted code (its expressions run in the grader's process): the assignment a
    notebook's metadata names is taken only as a name, never as a path to a spec it brought."""
    theirs = _course(tmp_path / "theirs", "derivative_calculation")
    notebook = submission(tmp_path)
    nb = json.loads(notebook.read_text())
    for named in (str(theirs / "assignments" / "derivative_calculation.toml"),
                  "../theirs/assignments/derivative_calculation"):
        nb["metadata"]["grader"] = {"assignment": named}
        notebook.write_text(json.dumps(nb))
        assert main(["check", str(notebook)]) == 2
        assert "--assignment is required" in capsys.readouterr().err
