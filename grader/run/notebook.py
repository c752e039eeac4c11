"""Read a submitted notebook, whatever nbformat version it was saved in."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from grader.errors import GraderError


class UnreadableNotebook(GraderError):
    """The file is not a notebook the grader can run; the message says why, for the student."""


def load_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook, upgrading nbformat 3 (and older 4.x) to the current 4.x."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableNotebook(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text, so it is not a notebook") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableNotebook(f"the file is not valid JSON ({exc.msg}: line {exc.lineno}, "
                                 f"column {exc.colno})") from None
    except RecursionError:
        # A few bytes per level: a small file can nest deeper than any parser recurses.
        raise UnreadableNotebook("the file nests its JSON too deeply to be a notebook") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise UnreadableNotebook(f"the file is not JSON a notebook holds ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        raise UnreadableNotebook("the file is JSON but not a Jupyter notebook (no nbformat field)")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises many types for malformed notebooks
        raise UnreadableNotebook(f"the notebook is malformed: {exc}") from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or any(
        not isinstance(c, dict) or not isinstance(c.get("source", ""), str) for c in cells
    ):
        raise UnreadableNotebook("the notebook's cells are malformed")
    return nb
