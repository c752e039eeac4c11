"""Install once, check anywhere: the package built from this repository, installed into a fresh
venv, hands out and self-checks a notebook in an empty folder with no course around it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader import __version__
from tests.notebooks import CORRECT, ROOT, fill

PUBLIC = sorted(f"{name}{suffix}" for name in ("derivative_calculation", "vectorized_backprop",
                                               "training_and_gradient_check")
                for suffix in (".toml", ".ipynb"))


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build` (an sdist, then the wheel built from it) on a copy of the checkout."""
    base = tmp_path_factory.mktemp("build")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache"))
    assert (source / "solutions" / "derivative_calculation.ipynb").is_file()
    done = _run(sys.executable, "-m", "build", "--outdir", base / "dist", source, cwd=base)
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "dist"


def test_the_packages_carry_specs_and_handouts_never_solutions(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    content = sorted(n.removeprefix("grader/content/assignments/") for n in names
                     if n.startswith("grader/content/"))
    assert content == PUBLIC
    for name in PUBLIC:
        packed = zipfile.ZipFile(wheel).read(f"grader/content/assignments/{name}")
        assert packed == (ROOT / "assignments" / name).read_bytes()
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert sorted(Path(m).name for m in members if "/assignments/" in m) == PUBLIC
    for listing in (names, members):
        assert not [n for n in listing if "solutions/" in n]


def test_installed_it_hands_out_and_self_checks_in_an_empty_folder(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    # A venv of its own: pip resolves the dependencies as a student's pip does, so the test
    # fails if one is missing from pyproject or only the checkout provides a file.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = _run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", wheel,
               cwd=tmp_path)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    home = tmp_path / "student"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRADER_COURSE", "PYTHONPATH", "VIRTUAL_ENV")}
    grader = env_dir / "bin" / "grader"

    done = _run(grader, "handout", "derivative_calculation", cwd=home, env=env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in home.iterdir()] == ["derivative_calculation.ipynb"]

    done = _run(grader, "check", "derivative_calculation.ipynb", cwd=home, env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # graded: the stubs score nothing
    installed = next((env_dir / "lib").glob("python3*/site-packages/grader/content"))
    assert done.stderr.splitlines()[0] == (
        f"grader: derivative_calculation from course {installed} (installed with "
        f"backprop-grader {__version__}); public mode (this course has no answer key)")
    assert "derivative_calculation.ipynb (derivative_calculation): 0/10 points" in done.stdout
    assert "Self-check without the answer key" in done.stdout

    # The student's work, with the extension's cells: in the grading kernel they load the
    # installed grader and check nothing, without an error.
    notebook = home / "derivative_calculation.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    for function, body in CORRECT.items():
        fill(nb, function, body)
    nb.cells[:0] = [nbformat.v4.new_code_cell("%load_ext grader")]
    nb.cells.append(nbformat.v4.new_code_cell("%grader check"))
    nbformat.write(nb, notebook)
    done = _run(grader, "check", notebook.name, cwd=home, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(derivative_calculation): 10/10 points" in done.stdout
    assert "note: cell" not in done.stdout
