"""Where a course is found: `--course`, then $GRADER_COURSE, then the current folder, then the
content installed with the package. A course is a folder holding assignments/ (specs and student
notebooks) and, on an instructor's machine only, solutions/ (the answer key)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__
from grader.errors import UsageError
from grader.files import PARTIAL, write_atomic

if TYPE_CHECKING:
    from grader.spec import AssignmentSpec

ENVIRONMENT = "GRADER_COURSE"

_PACKAGE = Path(__file__).resolve().parent
# Where a wheel carries the public content (setup.py copies assignments/ there at build time).
_BUNDLED = _PACKAGE / "content"


@dataclass(frozen=True)
class Course:
    """A course folder, and how it was found (said by `grader check`)."""

    root: Path
    origin: str

    @property
    def assignments(self) -> Path:
        """The folder of specs (NAME.toml) and student notebooks (NAME.ipynb)."""
        return self.root / "assignments"

    def names(self) -> list[str]:
        """The assignments of this course, by name."""
        return sorted(p.stem for p in self.assignments.glob("*.toml"))

    def describe(self) -> str:
        """One line: where the course is and why it was chosen."""
        return f"course {self.root} ({self.origin})"


def _holds_course(folder: Path) -> bool:
    return any((folder / "assignments").glob("*.toml"))


def installed_course() -> Course:
    """The course installed with the package: the wheel's public content, or, running from a
    checkout (an editable install), the checkout itself."""
    if _holds_course(_BUNDLED):
        return Course(_BUNDLED, f"installed with backprop-grader {__version__}")
    return Course(_PACKAGE.parent, "the checkout the grader runs from")


def find_course(explicit: Path | None = None) -> Course:
    """The course every command uses: `explicit` (--course), then $GRADER_COURSE, then the
    current folder if it holds assignments/, then the installed content.

    A course named explicitly (option or variable) that holds no assignments is an error, never
    passed over: the user meant that one.
    """
    if explicit is not None:
        return _named(explicit, "--course")
    if value := os.environ.get(ENVIRONMENT):
        return _named(Path(value), f"${ENVIRONMENT}")
    here = Path.cwd()
    if _holds_course(here):
        return Course(here.resolve(), "the current folder")
    return installed_course()


def _named(folder: Path, origin: str) -> Course:
    if not _holds_course(folder):
        raise UsageError(f"{origin} {folder} is not a course: it holds no assignments/*.toml")
    return Course(folder.resolve(), f"from {origin}")


def secret_paths(spec: AssignmentSpec) -> tuple[Path, ...]:
    """What student code must never read: the answer key where there is one, and the spec,
    except a spec of the installed content, which everyone who installed the package holds (and
    which lies among the interpreter's files, which every kernel reads)."""
    published = spec.source.is_relative_to(_BUNDLED)
    return (*(() if published else (spec.source,)),
            *((spec.reference_path,) if spec.reference_path.exists() else ()))


def write_handout(spec: AssignmentSpec, folder: Path, force: bool = False) -> Path:
    """Copy the student notebook of `spec` to folder/NAME.ipynb, whole or not at all; a file
    already there (a student's work) is replaced only when `force` says so."""
    target = folder / f"{spec.name}.ipynb"
    try:
        data = spec.notebook_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the student notebook of {spec.name}: {exc}") from None
    if target.exists() and not force:
        raise UsageError(f"{target} exists and may hold your work: pass --force to replace it "
                         "with a fresh copy, or --out DIR to write elsewhere")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if force:
            write_atomic(target, data)
        else:
            _write_new(target, data)
    except FileExistsError:
        raise UsageError(f"{target} appeared while writing it: nothing replaced") from None
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc}") from None
    return target


def _write_new(target: Path, data: bytes) -> None:
    # Written aside, then linked in: a link fails where a name exists, so no work is replaced
    # even by a file that appeared since the check, and the notebook appears whole.
    tmp = target.parent / f".{target.name}{PARTIAL}{secrets.token_hex(4)}"
    try:
        write_atomic(tmp, data)
        os.link(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
