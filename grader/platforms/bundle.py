"""What every platform bundle carries: a wheel of this grader and one assignment's course files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grader.errors import GraderError
from grader.spec import AssignmentSpec

# Left out of the copy a wheel is built from: what the package never ships, and what a build
# would otherwise pick up from the checkout (an old build/ folder, say).
_NOT_SHIPPED = shutil.ignore_patterns(".*", "build", "dist", "out", "__pycache__", "*.egg-info",
                                      "tests", "benchmarks", "examples")


class ExportError(GraderError):
    """A platform bundle cannot be made."""


def checkout() -> Path:
    """The source checkout this grader runs from (where its pyproject.toml is)."""
    return Path(__file__).resolve().parent.parent.parent


def build_wheel(dest: Path) -> Path:
    """A wheel of this grader, built from a copy of the checkout it runs from, in `dest`."""
    source = checkout()
    if not (source / "pyproject.toml").is_file():
        raise ExportError("this grader is not installed from a source checkout, so no wheel of "
                          "it can be built: pass --wheel with a backprop_grader wheel")
    with tempfile.TemporaryDirectory(prefix="grader-wheel-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=_NOT_SHIPPED)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                   "--wheel-dir", str(dest), str(copy)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExportError(f"could not build a wheel of the grader from {source}:\n"
                          f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return wheel_in(dest)


def wheel_in(folder: Path) -> Path:
    """The one backprop_grader wheel in `folder`."""
    found = sorted(folder.glob("backprop_grader-*.whl"))
    if len(found) != 1:
        raise ExportError(f"expected one backprop_grader wheel in {folder}, found {len(found)}")
    return found[0]


def checked_wheel(path: Path) -> Path:
    """A wheel the user named, checked to be a backprop_grader wheel."""
    if not path.is_file():
        raise ExportError(f"no such wheel: {path}")
    if not (path.name.startswith("backprop_grader-") and path.suffix == ".whl"):
        raise ExportError(f"{path} is not a backprop_grader wheel (backprop_grader-*.whl)")
    return path


def course_files(spec: AssignmentSpec) -> dict[str, Path]:
    """The files grading `spec` needs, by their path in a course folder: the spec, the handout,
    the reference notebook."""
    root = spec.source.parent.parent
    files = {"spec": spec.source, "handout": spec.notebook_path,
             "reference notebook": spec.reference_path}
    out: dict[str, Path] = {}
    for what, path in files.items():
        if not path.is_file():
            raise ExportError(f"the {what} of {spec.name} is missing ({path}): a bundle without "
                              "it could not grade against the answer key")
        try:
            out[path.resolve().relative_to(root.resolve()).as_posix()] = path
        except ValueError:
            raise ExportError(f"the {what} of {spec.name} ({path}) lies outside its course "
                              f"folder {root}") from None
    return out


def copy_course(spec: AssignmentSpec, dest: Path) -> None:
    """Copy the files grading `spec` needs into the course folder `dest`."""
    for name, path in course_files(spec).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
