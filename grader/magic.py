"""`%grader check`, an IPython extension: self-check the notebook as saved, from inside it.

The check is `grader check --public` in a process of its own, which runs the saved file in a
fresh sandboxed kernel: nothing the student's kernel holds (a global set by a deleted cell, a
patched numpy, a faked result) reaches it. What this kernel ran is compared with the saved cells,
so that a check of a file older than the work on screen says so.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from grader.run.processes import MARKER

USAGE = "usage: %grader check [NOTEBOOK.ipynb] [options of `grader check`]"
# Where front ends name the notebook a kernel runs: Jupyter servers set JPY_SESSION_NAME, which
# ipykernel copies to `__session__`; VS Code sets `__vsc_ipynb_file__`.
_SESSION_NAMES = ("__session__", "__vsc_ipynb_file__")
_SHOWN = 3  # differing cells quoted in the warning


class Runs:
    """The cells this kernel ran: by cell id where the front end sends one (JupyterLab and
    Notebook 7 do), so that a cell edited and run again counts in its latest form only."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.by_cell: dict[str, str] = {}
        self.counted: set[int] = set()  # execution counts recorded in by_cell
        shell.events.register("post_run_cell", self.ran)

    def ran(self, result: Any) -> None:
        """post_run_cell hook: keep the latest source of each named cell."""
        info = result.info
        cell_id = getattr(info, "cell_id", None)
        if cell_id and info.store_history and result.execution_count is not None:
            self.by_cell[cell_id] = info.raw_cell
            self.counted.add(result.execution_count)

    def unsaved(self, notebook: nbformat.NotebookNode) -> list[str]:
        """Sources this session ran that the saved notebook does not hold, but for the running
        cell: cells edited or added since the last save (or run, then deleted)."""
        saved_by_id = {c.get("id"): _normal(c.source) for c in notebook.cells
                       if c.cell_type == "code"}
        saved = set(saved_by_id.values())
        differ = [source for cell_id, source in self.by_cell.items()
                  if (_normal(source) != saved_by_id[cell_id] if cell_id in saved_by_id
                      else _normal(source) not in saved)]
        # Inputs without a cell id (run before this extension was loaded, or from a front end
        # that names no cells) are compared by their text alone. The last is the running cell.
        history = self.shell.history_manager.input_hist_raw
        differ += [source for count, source in enumerate(history[1:-1], start=1)
                   if count not in self.counted and _normal(source)
                   and _normal(source) not in saved]
        return differ


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def notebook_path(shell: Any) -> Path:
    """The notebook this kernel runs, as the front end named it; LookupError where none did."""
    names = [shell.user_ns.get(n) for n in _SESSION_NAMES] + [os.environ.get("JPY_SESSION_NAME")]
    for name in names:
        if isinstance(name, str) and name.endswith(".ipynb"):
            path = Path(name).expanduser().absolute()
            # A server may give the path from its root folder, and start the kernel in the
            # notebook's own folder.
            beside = Path(Path(name).name).absolute()
            return beside if not path.is_file() and beside.is_file() else path
    raise LookupError("this kernel was not told which notebook it runs: name it, as in "
                      "%grader check homework.ipynb")


def check(shell: Any, runs: Runs, line: str) -> int | None:
    """Run `%grader check`: print the report of the saved notebook; its exit status (None when
    nothing was checked)."""
    words = shlex.split(line)
    if words[:1] != ["check"]:
        print(USAGE, file=sys.stderr)
        return None
    words = words[1:]
    if os.environ.get(MARKER):
        # This kernel is the grader's own, running a saved notebook: no check within a check.
        print("grader: %grader check does nothing while the notebook is being graded",
              file=sys.stderr)
        return None
    try:
        path = (Path(words.pop(0)).expanduser().absolute()
                if words and not words[0].startswith("-") else notebook_path(shell))
    except LookupError as exc:
        print(f"grader: {exc}", file=sys.stderr)
        return None
    if not path.is_file():
        print(f"grader: no saved notebook at {path}: save it first, or name it, as in "
              "%grader check homework.ipynb", file=sys.stderr)
        return None
    try:
        differ = runs.unsaved(nbformat.read(path, as_version=4))
    except Exception as exc:  # an unreadable file: `grader check` reports it
        differ = []
        print(f"grader: cannot compare {path.name} with this session: {exc}", file=sys.stderr)
    if differ:
        quoted = "\n".join(f"    {_normal(s).splitlines()[0]}" for s in differ[:_SHOWN])
        print(f"grader: warning: {path.name} as saved differs from what this session ran; "
              f"{len(differ)} cell{'s' * (len(differ) > 1)} run here "
              f"{'are' if len(differ) > 1 else 'is'} not in the file:\n{quoted}\n"
              "The check grades the saved file: save the notebook, then check again.",
              file=sys.stderr)
    # ipykernel sets FORCE_COLOR for the programs it starts; the report reads better as text.
    done = subprocess.run([sys.executable, "-m", "grader.cli", "check", str(path), "--public",
                           *words], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "TTY_COMPATIBLE": "0"})
    if done.stderr:
        print(done.stderr.rstrip(), file=sys.stderr)
    print(done.stdout.rstrip())
    return done.returncode


_loaded: dict[int, Runs] = {}


def load_ipython_extension(shell: Any) -> None:
    """Register the %grader line magic (`%load_ext grader`)."""
    runs = _loaded[id(shell)] = Runs(shell)

    def grader(line: str) -> None:
        """%grader check [NOTEBOOK.ipynb] [options]: self-check the notebook as saved on disk,
        in a fresh sandboxed kernel, without the answer key (`grader check --public`), and warn
        when the saved file differs from the cells this session ran."""
        check(shell, runs, line)

    shell.register_magic_function(grader, "line", "grader")


def unload_ipython_extension(shell: Any) -> None:
    """Stop recording runs (`%unload_ext grader`, `%reload_ext grader`)."""
    if runs := _loaded.pop(id(shell), None):
        shell.events.unregister("post_run_cell", runs.ran)
