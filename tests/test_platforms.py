"""The Gradescope bundle and the PrairieLearn grader, run in temporary roots laid out like the
platforms' containers, with the grader from the wheel they ship."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from grader.cli import main
from tests.notebooks import submission

SCHEMAS = Path(__file__).parent / "schemas"
GRADESCOPE = json.loads((SCHEMAS / "gradescope_results.schema.json").read_text())
PRAIRIELEARN = json.loads((SCHEMAS / "prairielearn_results.schema.json").read_text())
SIGN_FLIPPED = {"delta2": "return (y - y_hat) * sigmoid_prime(z2)"}
NAME = "derivative_calculation"


def _install(wheel: Path, target: Path) -> dict[str, str]:
    """Install the shipped wheel (without its dependencies, which the test venv has) and the
    environment that makes the platform scripts run it with this venv's Python."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(target), str(wheel)], check=True)
    return {**os.environ, "GRADER_PYTHON": sys.executable, "PYTHONPATH": str(target)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "autograder.zip"
    assert main(["export", "gradescope", NAME, "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def gradescope(bundle, tmp_path_factory):
    """Run the bundle's run_autograder on the given submission files; its results.json."""
    root = tmp_path_factory.mktemp("autograder")
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    # Gradescope copies run_autograder to the root; zipfile keeps no modes.
    shutil.copyfile(root / "source" / "run_autograder", root / "run_autograder")
    env = _install(next((root / "source").glob("*.whl")),
                   tmp_path_factory.mktemp("site")) | {"AUTOGRADER_ROOT": str(root)}

    def run(files: dict[str, bytes | Path], inside_submission: bool = False, **extra: str
            ) -> dict:
        shutil.rmtree(root / "submission", ignore_errors=True)
        (root / "submission").mkdir()
        for name, data in files.items():
            if isinstance(data, Path):
                (root / "submission" / name).symlink_to(data)
            else:
                (root / "submission" / name).write_bytes(data)
        shutil.rmtree(root / "results", ignore_errors=True)
        subprocess.run(["bash", str(root / "run_autograder")], env=env | extra, check=True,
                       cwd=root / "submission" if inside_submission else root, timeout=600)
        results = json.loads((root / "results" / "results.json").read_text())
        jsonschema.Draft202012Validator(GRADESCOPE).validate(results)
        return results

    run.root = root  # type: ignore[attr-defined]
    return run


def test_the_bundle_holds_what_gradescope_asks_for(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        scripts = {name: zf.read(name).decode() for name in ("setup.sh", "run_autograder")}
    wheels = [n for n in names if n.endswith(".whl")]
    assert len(wheels) == 1 and wheels[0].startswith("backprop_grader-")
    assert {"setup.sh", "run_autograder", f"course/assignments/{NAME}.toml",
            f"course/assignments/{NAME}.ipynb", f"course/solutions/{NAME}.ipynb"} <= names
    assert all(modes[n] & stat.S_IXUSR for n in scripts)
    assert wheels[0] in setup
    for name, text in scripts.items():
        assert text.startswith("#!/usr/bin/env bash\n")
        # Both scripts parse; the root is a variable, /autograder by default.
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
        assert '"${AUTOGRADER_ROOT:-/autograder}"' in text, name


def test_a_correct_notebook_gets_full_marks_and_hidden_verdicts_wait(gradescope, tmp_path):
    results = gradescope({"mine.ipynb": submission(tmp_path).read_bytes()})
    assert results["score"] == 22
    shown = {t["name"] for t in results["tests"] if t["visibility"] == "visible"}
    later = {t["name"] for t in results["tests"] if t["visibility"] == "after_due_date"}
    assert shown and all(name.endswith(": examples") for name in shown)
    assert later and shown | later == {t["name"] for t in results["tests"]}


def test_a_wrong_notebook_loses_points_on_the_wrong_function(gradescope, tmp_path):
    results = gradescope({"mine.ipynb": submission(tmp_path, bodies=SIGN_FLIPPED).read_bytes()})
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert 0 < results["score"] < 22
    assert failed and all(t["name"].startswith("delta2") for t in failed)


@pytest.mark.parametrize(("files", "says"), [
    ({"mine.ipynb": b"{not json"}, "could not be graded"),
    ({}, "no notebook"),
    ({"solution.py": b"print(1)\n"}, "no notebook (.ipynb) was submitted (found: solution.py)"),
    ({"a.ipynb": b"{}", "b.ipynb": b"{}"}, "2 notebooks were submitted"),
])
def test_what_cannot_be_graded_still_gets_results_saying_why(gradescope, files, says):
    results = gradescope(files)
    assert results["score"] == 0
    assert says in results["output"].lower()


# A module named like one the grader imports, which writes full marks and stops the grader.
FORGED_JSON = b"""import os, pathlib
gradescope = os.environ.get("AUTOGRADER_ROOT")
root = pathlib.Path(gradescope or os.environ["GRADE_ROOT"])
(root / "results").mkdir(exist_ok=True)
(root / "results" / "results.json").write_text(
    '{"score": 100, "output": "forged", "tests": []}' if gradescope else
    '{"gradable": true, "score": 1, "output": "forged", "tests": []}')
os._exit(0)
"""


@pytest.mark.parametrize("platform", ["gradescope", "prairielearn"])
def test_files_submitted_beside_the_notebook_are_never_imported_by_the_grader(platform, request):
    """A platform may start its script in the submission folder; a submitted json.py must not
    stand in for the module of that name in the grader's own process."""
    run = request.getfixturevalue(platform)
    results = run({"json.py": FORGED_JSON}, inside_submission=True)
    assert results.get("output") != "forged"
    assert results.get("score", 0) == 0 and not results.get("gradable")


def test_a_notebook_cannot_read_the_answer_key_in_the_bundle(gradescope, tmp_path):
    """The bundle holds the reference notebook and the spec beside the submission: a notebook
    that reads either to answer right earns nothing from it."""
    course = gradescope.root / "source" / "course"
    secrets = [course / "solutions" / f"{NAME}.ipynb", course / "assignments" / f"{NAME}.toml"]
    assert all(p.is_file() for p in secrets)
    # delta2 is right only where a secret file could be read.
    body = (f"for p in {[str(p) for p in secrets]!r}:\n"
            "    try:\n"
            "        open(p).read()\n"
            "    except OSError:\n"
            "        return (y - y_hat) * sigmoid_prime(z2)\n"
            "return (y_hat - y) * sigmoid_prime(z2)")
    results = gradescope({"mine.ipynb": submission(tmp_path, bodies={"delta2": body})
                          .read_bytes()})
    delta2 = [t for t in results["tests"] if "delta2" in t["name"]]
    assert delta2 and all(t["score"] < t["max_score"] for t in delta2)


def test_a_link_to_the_reference_notebook_is_not_graded_as_the_submission(gradescope):
    """A submission that is a link to the bundle's reference notebook (which the grader's own
    process can read) would earn the reference's full marks."""
    reference = gradescope.root / "source" / "course" / "solutions" / f"{NAME}.ipynb"
    results = gradescope({"mine.ipynb": reference})
    assert results["score"] == 0 and "mine.ipynb is a link" in results["output"]
    # A link to its folder is not searched.
    assert gradescope({"work": reference.parent})["score"] == 0


def test_a_grader_that_cannot_start_still_writes_results(gradescope, tmp_path):
    results = gradescope({"mine.ipynb": submission(tmp_path).read_bytes()},
                         GRADER_PYTHON="/bin/false")
    assert results["score"] == 0 and "exit status 1" in results["output"]


def test_a_missing_course_file_is_the_graders_fault_not_the_students(gradescope, tmp_path):
    spec = gradescope.root / "source" / "course" / "assignments" / f"{NAME}.toml"
    spec.rename(tmp_path / "spec.toml")
    try:
        results = gradescope({"mine.ipynb": submission(tmp_path).read_bytes()})
    finally:
        (tmp_path / "spec.toml").rename(spec)
    assert results["score"] == 0
    assert "unknown assignment" in results["output"] and "tell your instructor" in results["output"]


def test_hidden_verdicts_can_wait_for_publication(tmp_path):
    out = tmp_path / "autograder.zip"
    assert main(["export", "gradescope", NAME, "-o", str(out), "--hidden", "after_published",
                 "--wheel", str(_a_wheel(tmp_path))]) == 0
    with zipfile.ZipFile(out) as zf:
        assert "--hidden after_published" in zf.read("run_autograder").decode()


def _a_wheel(folder: Path) -> Path:
    wheel = folder / "backprop_grader-0-py3-none-any.whl"
    wheel.write_bytes(b"")
    return wheel


# --- PrairieLearn ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prairielearn(tmp_path_factory):
    """Export, lay out /grade as PrairieLearn does, and run the entrypoint the question names."""
    out = tmp_path_factory.mktemp("pl")
    assert main(["export", "prairielearn", NAME, "-o", str(out), "--image",
                 "me/backprop-grader:1"]) == 0
    info = json.loads((out / "questions" / NAME / "info.json").read_text())
    options = info["externalGradingOptions"]
    root = tmp_path_factory.mktemp("grade")
    for shared in options["serverFilesCourse"]:
        shutil.copytree(out / "serverFilesCourse" / shared, root / "serverFilesCourse" / shared)
    entrypoint, *arguments = options["entrypoint"].split()
    assert entrypoint.startswith("/grade/")
    script = root / entrypoint.removeprefix("/grade/")
    env = _install(next((out / "image").glob("*.whl")), tmp_path_factory.mktemp("site"))
    env |= {"GRADE_ROOT": str(root)}

    def run(files: dict[str, bytes], inside_submission: bool = False) -> dict:
        shutil.rmtree(root / "student", ignore_errors=True)
        (root / "student").mkdir()
        for name, data in files.items():
            (root / "student" / name).write_bytes(data)
        # As PrairieLearn does: chmod +x, then run, with the results folder not yet made.
        shutil.rmtree(root / "results", ignore_errors=True)
        script.chmod(0o755)
        subprocess.run([str(script), *arguments], env=env, check=True, timeout=600,
                       cwd=root / "student" if inside_submission else None)
        results = json.loads((root / "results" / "results.json").read_text())
        jsonschema.Draft202012Validator(PRAIRIELEARN).validate(results)
        return results

    run.out, run.info = out, info  # type: ignore[attr-defined]
    return run


def test_the_prairielearn_question_names_the_image_and_entrypoint(prairielearn):
    options = prairielearn.info["externalGradingOptions"]
    assert options["enabled"] is True and options["image"] == "me/backprop-grader:1"
    assert prairielearn.info["gradingMethod"] == "External"
    assert 0 < options["timeout"] <= 600
    dockerfile = (prairielearn.out / "image" / "Dockerfile").read_text()
    wheel = next((prairielearn.out / "image").glob("backprop_grader-*.whl")).name
    assert re.search(rf"^COPY {re.escape(wheel)} ", dockerfile, re.MULTILINE)
    html = (prairielearn.out / "questions" / NAME / "question.html").read_text()
    assert f'file-names="{NAME}.ipynb"' in html and "<pl-external-grader-results>" in html


def test_prairielearn_scores_a_notebook_between_0_and_1(prairielearn, tmp_path):
    right = prairielearn({f"{NAME}.ipynb": submission(tmp_path).read_bytes()})
    assert right["gradable"] is True and right["score"] == 1
    wrong = prairielearn({f"{NAME}.ipynb": submission(tmp_path, "w", bodies=SIGN_FLIPPED)
                         .read_bytes()})
    assert 0 < wrong["score"] < 1
    assert sum(t["points"] for t in wrong["tests"]) / sum(
        t["max_points"] for t in wrong["tests"]) == pytest.approx(wrong["score"])


@pytest.mark.parametrize("files", [{f"{NAME}.ipynb": b"{not json"}, {}])
def test_an_ungradable_notebook_costs_no_attempt_on_prairielearn(prairielearn, files):
    results = prairielearn(files)
    assert results["gradable"] is False and results["format_errors"]


def test_exporting_again_keeps_the_question_and_its_uuid(prairielearn):
    info_path = prairielearn.out / "questions" / NAME / "info.json"
    info = json.loads(info_path.read_text())
    info["title"] = "Renamed by the instructor"
    info_path.write_text(json.dumps(info))
    wheel = next((prairielearn.out / "image").glob("*.whl"))
    assert main(["export", "prairielearn", NAME, "-o", str(prairielearn.out), "--wheel",
                 str(wheel)]) == 0
    again = json.loads(info_path.read_text())
    assert again["uuid"] == info["uuid"] and again["title"] == "Renamed by the instructor"


def test_a_course_without_its_answer_key_is_not_exported(tmp_path, capsys):
    course = tmp_path / "course"
    shutil.copytree(Path(__file__).parent.parent / "assignments", course / "assignments")
    assert main(["export", "gradescope", NAME, "--course", str(course), "-o",
                 str(tmp_path / "autograder.zip")]) == 2
    assert "reference notebook" in capsys.readouterr().err
    assert not (tmp_path / "autograder.zip").exists()
