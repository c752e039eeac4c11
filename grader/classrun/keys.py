"""What decides whether a stored report is reused: the grader's build, the spec, the seed and
the settings a submission is graded with (the notebook's own digest is `Submission.content_hash`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

import grader
from grader import __version__
from grader.classrun.sources import file_sha256
from grader.judge.cases import keyed_seed
from grader.settings import Limits
from grader.spec import AssignmentSpec


def spec_hash(spec: AssignmentSpec) -> str:
    """The spec file's digest together with the reference notebook's: a fix to either regrades."""
    return hashlib.sha256(f"{spec.digest}\0{file_sha256(spec.reference_path)}".encode()
                          ).hexdigest()


@functools.cache
def grader_build() -> str:
    """The grader version plus a digest of all its code, every module of every sub-package: a
    fix without a version bump regrades too."""
    digest = hashlib.sha256()
    package = Path(grader.__file__).parent
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


# The libraries that run the kernel and read what it sends (the kernel runs the grader's own
# interpreter, so the grader's versions are the kernel's).
_LIBRARIES = ("numpy", "ipykernel", "jupyter_client", "nbclient", "pydantic")


@functools.cache
def _library_versions() -> dict[str, str]:
    return {"python": platform.python_version(),
            **{name: importlib.metadata.version(name) for name in _LIBRARIES}}


def grading_settings(limits: Limits, sandbox: str) -> str:
    """Everything besides the notebook, the grader's code, the spec and the seed that can change
    a verdict, as canonical JSON: the limits, the sandbox's layers, the mode and the library
    versions. A stored report is reused only while they are the same."""
    settings = {
        # The sandbox and kernel start asked for (auto, say) matter only through the sandbox
        # chosen, whose name says both.
        "limits": limits.model_dump(exclude={"sandbox", "kernel_start"}),
        "sandbox": sandbox,
        # A class is always graded against the answer key: grade_class refuses to start
        # without the reference notebook.
        "mode": "full",
        "versions": _library_versions(),
    }
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def student_seed(spec: AssignmentSpec, student: str, secret: bytes) -> int:
    """The seed of a student's graded cases, from the gradebook's secret: the same on every
    run with that gradebook, and computable by nobody without it. `grader check --seed` with
    the seed of a student's report replays the cases."""
    return keyed_seed(secret, spec.name, student)
