"""Exports read the report only: Gradescope results, HTML feedback pages, the class picture."""

from __future__ import annotations

import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from grader.cli import main
from grader.judge.cases import make_cases
from grader.judge.reference import reference_namespace
from grader.outputs.gradescope import gradescope_results
from grader.outputs.html import feedback_html
from grader.outputs.plot import summary_png
from grader.outputs.progress import ClassConsole, Verbosity
from grader.outputs.terminal import plain_text, print_report
from grader.outputs.wording import header_lines
from grader.report import PUBLIC_MODE_NOTE, Report, TestKind, TestResult, TestStatus, Visibility
from tests.notebooks import submission

GRADESCOPE_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "gradescope_results.schema.json").read_text())
SIGN_FLIPPED = {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}


class _Tags(HTMLParser):
    """The tags and attribute names a browser would see in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)
        self.attributes |= {name for name, _ in attrs}


def _validate(document: dict) -> None:
    jsonschema.Draft202012Validator(GRADESCOPE_SCHEMA).validate(document)


def test_the_gradescope_schema_rejects_what_gradescope_would():
    jsonschema.Draft202012Validator.check_schema(GRADESCOPE_SCHEMA)
    good = {"score": 1, "tests": [{"name": "t", "score": 1, "max_score": 1, "status": "passed",
                                   "output": "", "visibility": "visible"}]}
    _validate(good)
    for bad in ({**good["tests"][0], "status": "ok"}, {**good["tests"][0], "visibility": "all"}):
        with pytest.raises(jsonschema.ValidationError):
            _validate({"score": 1, "tests": [bad]})


def test_check_prints_valid_gradescope_results(tmp_path, capsys):
    notebook = submission(tmp_path, bodies=SIGN_FLIPPED)
    assert main(["check", str(notebook), "--assignment", "derivative_calculation",
                 "--format", "gradescope"]) == 1
    results = json.loads(capsys.readouterr().out)
    _validate(results)
    assert results["score"] == sum(t["score"] for t in results["tests"])
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert failed and all(t["name"].startswith("delta2") for t in failed)
    assert all(t["tags"] == ["delta2.sign_flipped"] for t in failed)


def test_an_ungradable_notebook_still_gives_valid_gradescope_results(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    assert main(["check", str(broken), "--assignment", "derivative_calculation",
                 "--format", "gradescope"]) == 2
    results = json.loads(capsys.readouterr().out)
    _validate(results)
    assert results["score"] == 0 and "could not be graded" in results["output"].lower()


def _hidden_numbers(spec, seed: int) -> set[str]:
    """Every input value of the hidden cases, written the way the grader writes numbers."""
    numbers = set()
    for case in make_cases(spec, reference_namespace(spec), seed):
        if case.visible:
            continue
        for value in case.variables.values():
            for v in np.ravel(np.asarray(value, dtype=np.float64)):
                text = f"{v:.6g}"
                if len(text.lstrip("-")) >= 6:  # 0 and 1 are labels, found anywhere
                    numbers.add(text)
    return numbers


def test_the_feedback_page_shows_visible_cases_and_hides_hidden_inputs(tmp_path, grade, spec):
    report = grade(submission(tmp_path, bodies=SIGN_FLIPPED), seed=3)
    page = feedback_html(report, spec.title)
    hidden = _hidden_numbers(spec, 3)
    assert hidden
    assert not [n for n in hidden if n in page]
    visible = [t for t in report.tests if t.visibility is Visibility.VISIBLE and t.details]
    assert visible
    for t in visible:
        for d in t.details:
            assert d.got in page and d.expected in page
    failing = [t for t in report.tests if t.status is not TestStatus.PASSED]
    assert all(t.mistake and t.mistake in page for t in failing)


def test_the_feedback_page_is_self_contained_and_escapes_the_student(tmp_path, grade, spec):
    attack = '<script>alert("hi")</script><img src="http://example.com/x.png">'
    report = grade(submission(tmp_path, bodies={"update": f"raise ValueError({attack!r})"}))
    page = feedback_html(report, spec.title)
    assert "&lt;script&gt;" in page
    tags = _Tags()
    tags.feed(page)
    assert not tags.seen & {"script", "img", "link", "iframe", "object", "embed"}
    assert not tags.attributes & {"src", "href", "style", "onload", "onerror"}
    assert "@import" not in page and "url(" not in page


def test_grade_writes_pages_gradescope_files_and_the_class_picture(tmp_path):
    source = tmp_path / "class"
    source.mkdir()
    submission(source, "ada")
    submission(source, "claude", bodies=SIGN_FLIPPED)
    out = tmp_path / "out"
    assert main(["grade", str(source), "--out", str(out), "--assignment",
                 "derivative_calculation", "--format", "gradescope", "--quiet"]) == 0
    for student in ("ada", "claude"):
        assert (out / f"{student}.html").read_text().startswith("<!DOCTYPE html>")
        _validate(json.loads((out / "gradescope" / f"{student}.json").read_text()))
    claude = json.loads((out / "gradescope" / "claude.json").read_text())
    assert claude["score"] < json.loads((out / "gradescope" / "ada.json").read_text())["score"]
    assert (out / "summary.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_gradescope_results_carry_every_test_with_its_points(tmp_path, grade):
    report = grade(submission(tmp_path, bodies=SIGN_FLIPPED))
    results = gradescope_results(report)
    _validate(results)
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [
        (t.name, t.score, t.max_score) for t in report.tests]


def test_schema_command_describes_mistakes_and_the_mode(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "mode" in schema["properties"]
    assert "mistake" in schema["$defs"]["TestResult"]["properties"]
    # A test is named by its fields; the display name, computed from them, is written too.
    assert {"function", "group", "name"} <= set(schema["$defs"]["TestResult"]["properties"])
    assert schema["$defs"]["TestResult"]["description"]


def test_a_written_report_matches_the_schema_and_reads_back(tmp_path, grade, capsys):
    report = grade(submission(tmp_path, bodies=SIGN_FLIPPED))
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(schema).validate(json.loads(report.model_dump_json()))
    assert Report.model_validate_json(report.model_dump_json()) == report
    assert all(t.name == f"{t.function}: {t.group}" for t in report.tests)


def _report(spec, student: str, failing: tuple[str, ...] = (), **fields) -> Report:
    """A report made by hand: full marks on every function but the failing ones."""
    if fields.get("status") == "invalid":
        tests = []
    else:
        tests = [TestResult(group="hidden cases", function=f.name,
                            kind=TestKind.REFERENCE, max_score=f.max_score,
                            score=0 if f.name in failing else f.max_score,
                            status=TestStatus.FAILED if f.name in failing else TestStatus.PASSED,
                            visibility=Visibility.HIDDEN, feedback="")
                 for f in spec.functions]
    return Report(**{"status": "graded", **fields}, assignment=spec.name,
                  submission=f"{student}.ipynb", score=sum(t.score for t in tests),
                  max_score=spec.max_score, seed=1, grader_version="test", duration_s=1,
                  tests=tests)


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, so that print_report draws its rich tables."""

    def isatty(self) -> bool:
        return True


def test_every_renderer_shows_the_header_in_one_order(spec):
    report = _report(spec, "ada", status="invalid", reason="the file is not JSON",
                     mode="public", notes=["first note", "second note"])
    lines = header_lines(report)
    assert lines[1:] == ["Could not be graded: the file is not JSON", PUBLIC_MODE_NOTE,
                         "Note: first note", "Note: second note"]
    terminal = _Terminal()
    print_report(report, terminal)
    views = {"text": plain_text(report), "terminal": terminal.getvalue(),
             "html": html.unescape(feedback_html(report, spec.title)),
             "gradescope": gradescope_results(report)["output"]}
    for name, view in views.items():
        # A terminal styles each line and wraps the long ones.
        flat = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", view).split())
        places = [flat.find(" ".join(line.split())) for line in lines[1:]]
        assert -1 not in places and places == sorted(places), (name, places)


def test_the_terminal_and_the_picture_agree_on_full_marks(spec, capsys, monkeypatch):
    from matplotlib.axes import Axes

    first = spec.functions[0].name
    reports = {"ada": _report(spec, "ada"), "claude": _report(spec, "claude", (first,)),
               "grace": _report(spec, "grace", status="invalid", reason="no notebook")}
    drawn: list[dict[str, float]] = []
    barh = Axes.barh

    def spy(self, names, widths, *args, **kwargs):
        drawn.append(dict(zip(names, widths, strict=True)))
        return barh(self, names, widths, *args, **kwargs)

    monkeypatch.setattr(Axes, "barh", spy)
    summary_png(reports, spec)
    with ClassConsole(Verbosity.NORMAL, total=3, kept=3) as console:
        console.summary(reports, spec, graded=0)
    shown = dict(re.findall(r"(\w+)\s*│\s*\d+/3 \((\d+)%\)", capsys.readouterr().out))
    [pictured] = drawn  # no mistake in this class: the only bars are the functions'
    assert shown == {name: f"{percent:.0f}" for name, percent in pictured.items()}
    assert shown[first] == "33"  # the invalid submission counts as one without full marks
