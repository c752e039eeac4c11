"""`grader export prairielearn`: an external grader for a PrairieLearn course.

PrairieLearn runs each submission in a fresh container of the question's image, with the
course's shared files in `/grade/serverFilesCourse`, the student's files in `/grade/student`,
and reads `/grade/results/results.json` back (score in 0..1, `gradable`, per-test entries).
The export writes a folder to merge into the course repository:

    image/Dockerfile, image/backprop_grader-*.whl   the grading image (build and push it)
    serverFilesCourse/backprop_grader/run.sh        the entrypoint (root: GRADE_ROOT, /grade)
    serverFilesCourse/backprop_grader/course/...    spec, handout and reference notebook
    questions/NAME/info.json, question.html         a question using the external grader
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import uuid
from pathlib import Path

from grader.files import write_atomic
from grader.platforms.bundle import ExportError, build_wheel, checked_wheel, copy_course
from grader.spec import AssignmentSpec

# The folder of serverFilesCourse the grader's files live in, shared by every question.
SHARED = "backprop_grader"
# PrairieLearn's limit on a grading job is 600 s; a notebook's kernel start, cells and calls
# take well under this with the default limits.
TIMEOUT_S = 300

DOCKERFILE = """\
# The grading image: Python with the grader (and its bubblewrap sandbox) installed.
#   docker build -t {image} . && docker push {image}
FROM python:3.12-slim
COPY {wheel} /tmp/
RUN pip install --no-cache-dir /tmp/{wheel} && rm /tmp/{wheel}
"""

RUN_SH = """\
#!/usr/bin/env bash
# PrairieLearn's entrypoint for the grader: grade the one notebook in /grade/student and write
# /grade/results/results.json, always (a notebook that cannot be graded is "gradable": false, so
# it costs no attempt). Usage: run.sh ASSIGNMENT. GRADE_ROOT replaces /grade; GRADER_PYTHON
# replaces the image's python3.
set -u
ROOT="${GRADE_ROOT:-/grade}"
PYTHON="${GRADER_PYTHON:-python3}"
HERE="$ROOT/serverFilesCourse/backprop_grader"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
# -P: the folder this runs in, perhaps the student's, is never searched for modules.
"$PYTHON" -P -m grader.platforms.autograde prairielearn --root "$ROOT" \\
    --course "$HERE/course" \\
    --assignment "${1:?usage: run.sh ASSIGNMENT}" --sandbox "${GRADER_SANDBOX:-auto}"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
    WHY="This is not a verdict on your notebook: tell your instructor."
    printf '{"gradable": false, "format_errors": ["%s"], "tests": []}\\n' \\
        "The grader failed before it could grade this submission (exit status $status). $WHY" \\
        > "$ROOT/results/results.json"
fi
exit 0
"""

QUESTION_HTML = """\
<pl-question-panel>
  <p>Upload your completed notebook <code>{notebook}</code>. It is graded in a sandbox against
  the reference solution and finite differences; the worked examples' feedback shows their
  inputs, the hidden cases' feedback does not.</p>
</pl-question-panel>
<pl-file-upload file-names="{notebook}"></pl-file-upload>
<pl-submission-panel>
  <pl-external-grader-results></pl-external-grader-results>
  <pl-file-preview></pl-file-preview>
</pl-submission-panel>
"""


def external_grading_options(spec: AssignmentSpec, image: str, sandbox: str) -> dict[str, object]:
    """The `externalGradingOptions` of a question graded by this grader."""
    options: dict[str, object] = {
        "enabled": True,
        "image": image,
        "serverFilesCourse": [f"{SHARED}/"],
        "entrypoint": f"/grade/serverFilesCourse/{SHARED}/run.sh {spec.name}",
        "timeout": TIMEOUT_S,
    }
    if sandbox != "auto":
        options["environment"] = {"GRADER_SANDBOX": sandbox}
    return options


def export_prairielearn(spec: AssignmentSpec, out: Path, *, image: str, sandbox: str = "auto",
                        wheel: Path | None = None) -> Path:
    """Write (or add to) the PrairieLearn folder `out` for `spec`; returns the question's
    info.json. The wheel is built from this checkout unless given."""
    question = out / "questions" / spec.name
    info_path = question / "info.json"
    shared = out / "serverFilesCourse" / SHARED
    # A question exported again keeps its uuid (PrairieLearn knows it by it) and its settings.
    try:
        old = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {info_path}: {exc}") from None
    if not isinstance(old, dict):
        raise ExportError(f"{info_path} is not a JSON object")
    with tempfile.TemporaryDirectory(prefix="grader-export-") as tmp:
        built = checked_wheel(wheel) if wheel is not None else build_wheel(Path(tmp))
        image_dir = out / "image"
        image_dir.mkdir(parents=True, exist_ok=True)
        shipped = image_dir / built.name
        if not (shipped.exists() and shipped.samefile(built)):
            shutil.copyfile(built, shipped)
        for stale in image_dir.glob("backprop_grader-*.whl"):
            if stale.name != built.name:
                stale.unlink()
    write_atomic(out / "image" / "Dockerfile",
                 DOCKERFILE.format(image=image, wheel=built.name))
    copy_course(spec, shared / "course")
    write_atomic(shared / "run.sh", RUN_SH)
    (shared / "run.sh").chmod(0o755)
    question.mkdir(parents=True, exist_ok=True)
    # What the instructor set in the question stays; only how it is graded is written again.
    info = {"uuid": str(uuid.uuid4()), "title": spec.title, "topic": "Backpropagation",
            "type": "v3", "singleVariant": True, **old, "gradingMethod": "External",
            "externalGradingOptions": external_grading_options(spec, image, sandbox)}
    write_atomic(info_path, json.dumps(info, indent=2) + "\n")
    if not (question / "question.html").exists():
        write_atomic(question / "question.html",
                     QUESTION_HTML.format(notebook=html.escape(spec.notebook_path.name)))
    return info_path
