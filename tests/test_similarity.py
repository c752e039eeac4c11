"""Copied-work flags: a copy with renamed identifiers and reordered cells is flagged, independent
solutions are not, the page escapes every student string, and no grade changes."""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from html.parser import HTMLParser

import nbformat

from grader.cli import main
from tests.classmates import write_class
from tests.notebooks import submission

NAME = "derivative_calculation"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)


def _flagged(out) -> list[tuple[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "similarity.csv").read_text())))
    return [(r["first"], r["second"]) for r in rows]


def test_the_copied_pair_and_nothing_else_is_flagged(tmp_path, capsys):
    (tmp_path / "class").mkdir()
    copied = write_class(tmp_path / "class")
    out = tmp_path / "out"
    assert main(["similarity", str(tmp_path / "class"), "--assignment", NAME,
                 "--out", str(out)]) == 1
    assert _flagged(out) == [copied]
    page = (out / "similarity.html").read_text()
    assert page.count("<mark>") >= 4 and all(name in page for name in copied)
    assert "marie_curie and pierre_copy: 0.9" in capsys.readouterr().out
    # Lowered far enough, the threshold flags the independent solutions that look most alike.
    assert main(["similarity", str(tmp_path / "class"), "--assignment", NAME,
                 "--out", str(out), "--threshold", "0.2"]) == 1
    assert len(_flagged(out)) > 1


def test_the_page_escapes_student_names_and_code_and_reads_zips(tmp_path):
    attack = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>"
    lines = "\n".join(f"    total_{i} = np.sum(np.asarray(z) * {i}) + len({attack!r})"
                      for i in range(12))
    body = f"{lines}\ns = sigmoid(z)\nreturn s * (1 - s)"
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("<em>one", "two"):
            path = submission(tmp_path, "x", bodies={"sigmoid_prime": body.strip()})
            zf.write(path, f"{name}/work.ipynb")
    out = tmp_path / "out"
    assert main(["similarity", str(archive), "--assignment", NAME, "--out", str(out)]) == 1
    page = (out / "similarity.html").read_text()
    tags = _Tags()
    tags.feed(page)
    assert not tags.seen & {"script", "img", "em"}
    assert "&lt;script&gt;" in page and "&lt;em&gt;one" in page


def test_without_copydetect_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "copydetect", None)
    assert main(["similarity", str(tmp_path), "--assignment", NAME, "--out",
                 str(tmp_path / "out")]) == 2
    assert "backprop-grader[similarity]" in capsys.readouterr().err
    # Before any grading: nothing is written.
    submission(tmp_path, "ada")
    assert main(["grade", str(tmp_path), "--assignment", NAME, "--out", str(tmp_path / "out"),
                 "--similarity"]) == 2
    assert "backprop-grader[similarity]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grade_with_similarity_flags_without_changing_a_grade(tmp_path):
    source = tmp_path / "class"
    source.mkdir()
    copied = write_class(source)
    # A small class: the copied pair and one other, graded for real.
    keep = {f"{name}.ipynb" for name in copied} | {"ada_lovelace.ipynb"}
    for path in source.iterdir():
        if path.name not in keep:
            path.unlink()
    out, plain = tmp_path / "out", tmp_path / "plain"
    assert main(["grade", str(source), "--out", str(out), "--assignment", NAME, "--quiet",
                 "--similarity"]) == 0
    assert main(["grade", str(source), "--out", str(plain), "--assignment", NAME,
                 "--quiet"]) == 0
    assert _flagged(out) == [copied]
    assert not (plain / "similarity.csv").exists()
    for name in ("ada_lovelace", *copied):
        graded = json.loads((out / f"{name}.json").read_text())
        again = json.loads((plain / f"{name}.json").read_text())
        assert graded["score"] == again["score"] and graded["status"] == "graded"
    nbformat.validate(nbformat.read(source / f"{copied[1]}.ipynb", as_version=4))
