"""`%grader check` inside a notebook, run by a real kernel as Jupyter runs it."""

from __future__ import annotations

import os
import queue
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from tests.notebooks import submission

WRONG_UPDATE = "return w + learning_rate * grad"


def _saved(folder: Path, **kwargs) -> Path:
    return submission(folder, "homework", cells_before=["%load_ext grader"],
                      extra_cells=["%grader check"], **kwargs)


def _text(cell: nbformat.NotebookNode) -> tuple[str, str]:
    streams = {"stdout": "", "stderr": ""}
    for output in cell.outputs:
        assert output.output_type == "stream", output
        streams[output.name] += output.text
    return streams["stdout"], streams["stderr"]


def test_check_grades_the_saved_file_and_warns_of_unsaved_cells(tmp_path, monkeypatch):
    # On disk, update is wrong; on screen the student fixed it and ran the cell, unsaved.
    path = _saved(tmp_path, bodies={"update": WRONG_UPDATE})
    (tmp_path / "screen").mkdir()
    on_screen = nbformat.read(_saved(tmp_path / "screen"), as_version=4)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # as a Jupyter server sets it
    NotebookClient(on_screen, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out, err = _text(on_screen.cells[-1])
    assert "homework.ipynb as saved differs from what this session ran" in err
    assert "1 cell run here is not in the file:\n    def update(" in err
    # The saved file was checked, in public mode, in a kernel of its own: the fix on screen
    # does not count, and the student's kernel (where update is right) was not asked.
    assert "homework.ipynb (derivative_calculation): 8/10 points" in out
    assert "Self-check without the answer key" in out
    assert "update  0/2" in out
    assert "public mode (--public)" in err


def test_a_saved_notebook_checks_without_warning(tmp_path, monkeypatch):
    folder = tmp_path / "week1"
    folder.mkdir()
    path = _saved(folder)
    # The path from the server's root folder; the kernel runs in the notebook's folder.
    monkeypatch.setenv("JPY_SESSION_NAME", "week1/homework.ipynb")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    out, err = _text(nb.cells[-1])
    assert "warning" not in err
    assert "homework.ipynb (derivative_calculation): 10/10 points" in out


class Lab:
    """A kernel driven as JupyterLab drives it: each execute request names its cell."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))

    def run(self, cell: nbformat.NotebookNode) -> tuple[str, str]:
        content = {"code": cell.source, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell.id})
        self.kc.shell_channel.send(msg)
        streams = {"stdout": "", "stderr": ""}
        while True:
            try:
                reply = self.kc.get_iopub_msg(timeout=300)
            except queue.Empty:
                pytest.fail(f"no reply to {cell.source!r}")
            if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind, body = reply["msg_type"], reply["content"]
            if kind == "stream":
                streams[body["name"]] += body["text"]
            elif kind == "error":
                pytest.fail(f"{cell.source!r} raised {body['ename']}: {body['evalue']}")
            elif kind == "status" and body["execution_state"] == "idle":
                return streams["stdout"], streams["stderr"]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def lab(tmp_path):
    path = _saved(tmp_path, bodies={"update": WRONG_UPDATE})
    lab = Lab({**os.environ, "JPY_SESSION_NAME": str(path)}, tmp_path)
    yield lab, path
    lab.close()


def test_a_cell_edited_run_again_and_saved_counts_once(lab):
    kernel, path = lab
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells[:-1]:
        if cell.cell_type == "code":
            kernel.run(cell)  # update, as first written, is wrong
    update = next(c for c in nb.cells if "def update(" in c.source)
    update.source = update.source.replace(WRONG_UPDATE, "return w - learning_rate * grad")
    kernel.run(update)
    _, err = kernel.run(nb.cells[-1])
    assert "warning: homework.ipynb as saved differs" in err  # the fix is not saved yet
    nbformat.write(nb, path)
    out, err = kernel.run(nb.cells[-1])
    assert "warning" not in err  # the wrong version ran too, but that cell now holds the fix
    assert "homework.ipynb (derivative_calculation): 10/10 points" in out
    out, err = kernel.run(nbformat.v4.new_code_cell("%grader check --assignment nope"))
    assert "unknown assignment 'nope'" in err and "derivative_calculation" in err
