"""The score report: the single source of truth every exporter reads."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from grader.wire import safe_strings

SCHEMA_VERSION = 1


# What a report in public mode says about itself, wherever it is shown.
PUBLIC_MODE_NOTE = ("Self-check without the answer key: only the worked examples and the "
                    "finite-difference and property checks ran, on cases drawn for this check.")


class TestKind(StrEnum):
    __test__ = False  # a report model, not a pytest class

    REFERENCE = "reference"
    FINITE_DIFFERENCE = "finite_difference"
    PROPERTY = "property"


class TestStatus(StrEnum):
    __test__ = False  # a report model, not a pytest class

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    TIMEOUT = "timeout"
    MISSING = "missing"
    NOT_IMPLEMENTED = "not_implemented"
    KERNEL_DIED = "kernel_died"


class Visibility(StrEnum):
    VISIBLE = "visible"
    HIDDEN = "hidden"


class _Model(BaseModel):
    # Models given to a report are validated again, so that every string in it passes
    # _safe_text below, whatever made the model (model_copy does not validate).
    model_config = ConfigDict(extra="forbid", frozen=True, revalidate_instances="always")

    @model_validator(mode="before")
    @classmethod
    def _safe_text(cls, data: Any) -> Any:
        # Text from a kernel is made safe as it arrives (grader.run.session); this catches what
        # comes from anywhere else, a cell's source in a notebook file or a file's name, so
        # that every report can be written.
        return safe_strings(data)


class CaseDetail(_Model):
    """Inputs, expected and got for one visible case; hidden cases never carry these."""

    inputs: dict[str, str]
    expected: str
    got: str


class TestResult(_Model):
    """One test of one function: a group of its cases against the reference, or one check."""

    __test__ = False  # a report model, not a pytest class

    function: str = Field(description="The notebook function the test calls.")
    group: str = Field(
        description="What the test judges: a group of cases compared with the reference "
        "('examples', 'scalar', 'vector', 'matrix', 'batch'), or the name of a finite-difference "
        "or property check.")
    kind: TestKind
    score: float = Field(ge=0, allow_inf_nan=False)
    max_score: float = Field(ge=0, allow_inf_nan=False)
    status: TestStatus
    visibility: Visibility
    feedback: str
    max_error: float | None = Field(
        default=None, description="Largest error measured over the cases, in the test's own "
        "metric; none when nothing comparable was returned (a wrong shape, say).")
    details: list[CaseDetail] = Field(default_factory=list)
    mistake: str | None = Field(
        default=None, description="Id of the known misconception the failure matches, if any.")

    @computed_field(description="The test's display name: '<function>: <group>'.")
    @property
    def name(self) -> str:
        """What a reader calls the test; code decides by `function` and `group`."""
        return f"{self.function}: {self.group}"

    @model_validator(mode="before")
    @classmethod
    def _name_is_computed(cls, data: Any) -> Any:
        # A report read back carries the name it was written with: it is computed again.
        return {k: v for k, v in data.items() if k != "name"} if isinstance(data, dict) else data

    @field_validator("max_error")
    @classmethod
    def _measured(cls, value: float | None) -> float | None:
        # JSON has no infinity: an error too large to measure is no measurement at all, which
        # also keeps a report the same once written and read back.
        return value if value is None or math.isfinite(value) else None

    @model_validator(mode="after")
    def _score_within_max(self) -> TestResult:
        if self.score > self.max_score:
            raise ValueError("score exceeds max_score")
        if self.status is TestStatus.PASSED and self.mistake is not None:
            raise ValueError("a passed test names no mistake")
        if self.visibility is Visibility.HIDDEN and self.details:
            raise ValueError("hidden tests carry no case details")
        return self


class CellProblem(_Model):
    """A notebook cell that did not run cleanly; the student sees which one and why."""

    cell: int = Field(description="Position of the cell in the notebook, counting from 0 "
                      "(markdown cells included).")
    problem: Literal["error", "timeout", "kernel_died"]
    message: str
    excerpt: str = Field(default="", max_length=80,
                         description="The cell's first line, so that a student can find it.")

    def where(self) -> str:
        """The cell as a student finds it: counted from 1, with its first line."""
        return f"cell {self.cell + 1}" + (f" ({self.excerpt})" if self.excerpt else "")


class Report(_Model):
    """The verdict on one submission: its tests, what its cells did, and how it was run."""

    schema_version: int = SCHEMA_VERSION
    assignment: str
    submission: str
    status: Literal["graded", "invalid"]
    reason: str | None = Field(default=None, description="Why the submission could not be graded.")
    score: float = Field(ge=0, allow_inf_nan=False)
    max_score: float = Field(ge=0, allow_inf_nan=False)
    seed: int = Field(description="Seed of the random cases; `grader check --seed` replays "
                      "them. Kept for the instructor: no page a student sees shows it.")
    grader_version: str
    duration_s: float = Field(ge=0, allow_inf_nan=False)
    sandbox: str = Field(
        default="none", description="Every layer the submission's kernels ran in, strongest "
        "first: 'bwrap+landlock+seccomp', 'landlock+seccomp', or 'none' (unconfined).")
    mode: Literal["full", "public"] = Field(
        default="full", description="Which checks ran: 'full' judges against the answer key; "
        "'public' (a self-check without it) runs only the finite-difference and property "
        "checks and the worked examples.")
    tests: list[TestResult] = Field(default_factory=list)
    cells: list[CellProblem] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list,
                             description="What the grader noticed that the score does not show.")
    output_dropped_bytes: int = Field(
        default=0, ge=0, description="Notebook output beyond the kept limit, counted and dropped."
    )

    @model_validator(mode="after")
    def _score_is_sum_of_tests(self) -> Report:
        total = sum(t.score for t in self.tests)
        if abs(total - self.score) > 1e-9:
            raise ValueError(f"score {self.score} is not the sum of the tests ({total})")
        if self.status == "invalid" and not self.reason:
            raise ValueError("an invalid report must say why")
        return self

    def function_scores(self) -> dict[str, tuple[float, float]]:
        """Score and max score per graded function, in the order the tests list them."""
        out: dict[str, tuple[float, float]] = {}
        for t in self.tests:
            score, top = out.get(t.function, (0.0, 0.0))
            out[t.function] = (score + t.score, top + t.max_score)
        return out
