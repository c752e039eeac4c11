"""The server's configuration: course.toml, written by the instructor, read once at start."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from grader.errors import GraderError
from grader.settings import SandboxRequest
from grader.spec import AssignmentSpec, find_spec

# The file `grader serve` reads from the data folder unless --config names another.
CONFIG_NAME = "course.toml"


class ConfigError(GraderError):
    """course.toml is missing, unreadable or invalid; the message says which setting."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssignmentPolicy(_Model):
    """When and how often an assignment takes submissions, and what lateness costs."""

    deadline: datetime | None = Field(
        None, description="when submissions stop being on time (a TOML date-time with a UTC "
        "offset, e.g. 2026-12-15T23:59:00Z); none: never late")
    late: Literal["multiplier", "closed"] = Field(
        "multiplier", description="after the deadline: 'multiplier' grades and multiplies the "
        "score by late_multiplier; 'closed' refuses the upload")
    late_multiplier: float = Field(0.5, ge=0, le=1, description="credit kept by a late "
                                   "submission")
    submissions: int = Field(5, ge=1, description="submissions a student may make in a burst "
                             "(the size of the token bucket)")
    refill_minutes: float = Field(30, gt=0, description="minutes after which one more "
                                  "submission is allowed, up to `submissions`")

    @field_validator("deadline")
    @classmethod
    def _with_offset(cls, value: datetime | None) -> datetime | None:
        # A deadline without an offset means a different instant on every server.
        if value is not None and value.tzinfo is None:
            raise ValueError("give the deadline with a UTC offset, e.g. 2026-12-15T23:59:00Z")
        return value


class ServerConfig(_Model):
    """The whole of course.toml: where the course is, how grading runs, each assignment."""

    course: Path | None = Field(
        None, description="folder holding assignments/ and solutions/, relative to course.toml; "
        "default: the course `grader check` finds ($GRADER_COURSE, the current folder, the "
        "checkout the grader runs from)")
    kernels: int = Field(2, ge=1, description="submissions graded at once")
    max_upload_kib: int = Field(2048, ge=1, description="largest notebook accepted, KiB")
    https: bool = Field(False, description="served behind https: cookies are marked Secure")
    sandbox: SandboxRequest = Field("auto", description="the sandbox of `grader grade`; the "
                                    "server refuses to start without one unless 'none'")
    cell_timeout: float | None = Field(None, gt=0, description="seconds per cell (default: "
                                       "the spec's)")
    call_timeout: float | None = Field(None, gt=0, description="seconds per call (default: "
                                       "the spec's)")
    cluster: str | None = Field(
        None, description="grade on a Dask cluster instead of this machine's kernels: its "
        "scheduler's address (tcp://HOST:8786, tls://...), or local:N for N local worker "
        "processes; `kernels` then gives way to the workers' KERNELS slots")
    assignments: dict[str, AssignmentPolicy] = Field(
        description="the assignments open for submission, by name, in the order shown")

    @field_validator("cluster")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        if value is not None:
            # Needs Dask's distributed package: without it, the error names the extra.
            from grader.classrun.cluster import parse_cluster

            parse_cluster(value)
        return value

    def spec(self, name: str) -> AssignmentSpec:
        """The spec of an assignment named in this file."""
        return find_spec(name, self.course)


def load_config(path: Path, cluster: str | None = None
                ) -> tuple[ServerConfig, dict[str, AssignmentSpec]]:
    """Read course.toml and every assignment it opens, with `cluster` (when given) in place of
    its own; ConfigError names what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no course configuration at {path}: write one (see `grader serve "
                          f"--help`) or start with `grader serve --demo`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if cluster is not None:
        data["cluster"] = cluster
    if isinstance(data.get("course"), str):
        data["course"] = (path.parent / data["course"]).resolve()
    try:
        config = ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {path}:\n{exc}") from None
    if not config.assignments:
        raise ConfigError(f"{path} opens no assignment: add an [assignments.NAME] table")
    specs = {}
    for name in config.assignments:
        if not name.isidentifier():
            raise ConfigError(f"{path}: {name!r} is not an assignment name")
        specs[name] = config.spec(name)
    return config, specs
