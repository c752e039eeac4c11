"""Where a class's submissions come from: a folder or a .zip of either layout, read with caps.

The layouts: `<student>.ipynb` files, or `<student>/` folders holding one notebook each, possibly
inside one wrapper folder. A zip is unpacked to a scratch folder, refusing traversal, links and
oversized content.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.errors import GraderError
from grader.run.processes import remove_scratch, scratch_dir

# Caps on what a zip may unpack to; a platform's bulk download of a large class stays far below.
ZIP_MAX_MEMBERS = 20_000
ZIP_MAX_NOTEBOOK_BYTES = 100 * 2**20
ZIP_MAX_TOTAL_BYTES = 4 * 2**30


class SourceError(GraderError):
    """The class folder or archive cannot be read as submissions."""


@dataclass(frozen=True)
class Submission:
    """What one student id maps to: normally one notebook; none or several is reported as such."""

    student: str
    files: tuple[Path, ...]

    @property
    def notebook(self) -> Path | None:
        """The one notebook, or None when the id maps to none or to several."""
        return self.files[0] if len(self.files) == 1 else None

    def content_hash(self) -> str:
        """sha256 of the notebook's bytes (of each file's name and bytes when there are several)."""
        if self.notebook is not None:
            return file_sha256(self.notebook)
        digest = hashlib.sha256()
        for path in sorted(self.files):
            # Named within the class, not by the folder the class sits in: a moved class keeps
            # its keys.
            name = f"{self.student}/{path.name}" if path.parent.name == self.student else path.name
            digest.update(f"{name}\0{file_sha256(path)}\0".encode())
        return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.name != "__MACOSX")


def _notebooks(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix == ".ipynb"]


def _class_root(folder: Path) -> Path:
    """Step into a lone wrapper folder (`submissions/...` in a zip) unless it is one student's."""
    entries = _visible(folder)
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if any(p.is_dir() for p in _visible(inner)) or len(_notebooks(inner)) > 1:
            return _class_root(inner)
    return folder


def find_submissions(source: Path) -> dict[str, Submission]:
    """Student id -> submission: `<id>.ipynb` files, or `<id>/` folders holding a notebook."""
    if not source.is_dir():
        raise SourceError(f"{source} is not a folder")
    found: dict[str, list[Path]] = {}
    for entry in _visible(_class_root(source)):
        if entry.is_file() and entry.suffix == ".ipynb":
            found.setdefault(entry.stem, []).append(entry)
        elif entry.is_dir():
            found.setdefault(entry.name, []).extend(_notebooks(entry))
    # A folder without a notebook stays: its student gets a report saying so.
    return {student: Submission(student, tuple(files)) for student, files in sorted(found.items())}


def _member_path(name: str) -> PurePosixPath:
    """The archive member's path, or SourceError when it could land outside the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise SourceError(f"the archive holds an unsafe path: {name!r}")
    return path


def extract_notebooks(archive: Path, dest: Path) -> None:
    """Unpack the notebooks of a zip into dest, refusing traversal, links and oversized content."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"cannot read {archive} as a zip archive: {exc}") from None
    with zf:
        members = zf.infolist()
        if len(members) > ZIP_MAX_MEMBERS:
            raise SourceError(f"{archive} holds {len(members)} entries (at most "
                              f"{ZIP_MAX_MEMBERS} are read)")
        wanted = []
        # Folders are made even when they hold no notebook, as in the unpacked folder layout: a
        # student who uploaded only a .py file gets a report saying so.
        folders: set[PurePosixPath] = set()
        for info in members:
            path = _member_path(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SourceError(f"the archive holds a symbolic link: {info.filename!r}")
            hidden = any(p.startswith(".") or p == "__MACOSX" for p in path.parts)
            if not hidden:
                folders.add(path if info.is_dir() else path.parent)
            if not info.is_dir() and path.suffix == ".ipynb" and not hidden:
                if info.file_size > ZIP_MAX_NOTEBOOK_BYTES:
                    raise SourceError(f"{info.filename} unpacks to {info.file_size} bytes "
                                      f"(at most {ZIP_MAX_NOTEBOOK_BYTES})")
                wanted.append((info, path))
        if sum(info.file_size for info, _ in wanted) > ZIP_MAX_TOTAL_BYTES:
            raise SourceError(f"{archive} unpacks to more than {ZIP_MAX_TOTAL_BYTES} bytes")
        root = dest.resolve()
        for folder in folders:
            root.joinpath(*folder.parts).mkdir(parents=True, exist_ok=True)
        for info, path in wanted:
            target = root.joinpath(*path.parts)
            if not target.resolve().is_relative_to(root):
                raise SourceError(f"the archive holds an unsafe path: {info.filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # zipfile stops reading at the declared size and checks the CRC, so the caps
                # above bound what is written.
                with zf.open(info) as src, target.open("xb") as dst:
                    shutil.copyfileobj(src, dst)
            except FileExistsError:
                raise SourceError(f"the archive holds {info.filename!r} twice") from None
            except (OSError, zipfile.BadZipFile) as exc:
                raise SourceError(f"cannot unpack {info.filename!r}: {exc}") from None


@contextlib.contextmanager
def open_source(source: Path) -> Iterator[Path]:
    """The folder to find submissions in: the source itself, or a zip unpacked to a temp folder."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise SourceError(f"no such folder or zip archive: {source}")
    if source.suffix == ".ipynb":
        raise SourceError(f"{source} is one notebook: grade it with `grader check`, or grade "
                          "the folder that holds it")
    folder = scratch_dir("zip")
    try:
        extract_notebooks(source, folder)
        yield folder
    finally:
        remove_scratch(folder)
