"""Build hook: the package carries the course's public content, copied from assignments/.

The repository keeps assignments/ at its root, the one copy authors edit and `grader assign`
writes; a wheel copies its specs and student notebooks into grader/content/assignments/, where
the installed grader finds them. solutions/ (the answer key) is never copied. An editable install
needs no copy: the grader finds the checkout's assignments/ in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PUBLIC = ("*.toml", "*.ipynb")


class BuildWithCourse(build_py):
    """build_py, plus the course's public content."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            # A build folder kept from an earlier build may hold an assignment since removed.
            shutil.rmtree(Path(self.build_lib) / "grader" / "content", ignore_errors=True)
            for source, target in self._course_files():
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        course = [] if self.editable_mode else [str(t) for _, t in self._course_files()]
        return [*super().get_outputs(include_bytecode), *course]

    def _course_files(self) -> list[tuple[Path, Path]]:
        folder = Path(__file__).resolve().parent / "assignments"
        target = Path(self.build_lib) / "grader" / "content" / "assignments"
        files = sorted(p for pattern in PUBLIC for p in folder.glob(pattern))
        if not files:
            raise SystemExit(f"no course content in {folder}: the package would carry none")
        return [(p, target / p.name) for p in files]


setup(cmdclass={"build_py": BuildWithCourse})
