"""Assignment specs: one declarative TOML file per assignment, validated once at load time."""

from __future__ import annotations

import hashlib
import keyword
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# A value written in a spec: a number, or a list (of lists) of numbers for an array.
SpecValue = float | list[float] | list[list[float]]


class SpecError(Exception):
    """An assignment spec that cannot be found or does not validate."""


class CaseSet(StrEnum):
    """Groups of cases; each group is its own test entry with its own points."""

    EXAMPLES = "examples"
    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_expression(text: str) -> str:
    try:
        compile(text, "<spec>", "eval")
    except SyntaxError as exc:
        raise ValueError(f"not a Python expression: {text!r} ({exc.msg})") from None
    return text


Expression = Annotated[str, Field(min_length=1)]


class Tolerance(_Model):
    """How close is close enough; every judge reads its thresholds from here."""

    rtol: float = Field(1e-5, gt=0, description="Relative tolerance against the reference.")
    atol: float = Field(1e-8, ge=0, description="Absolute tolerance against the reference.")
    fd_rtol: float = Field(
        1e-4,
        gt=0,
        description="Largest relative difference |a-n|/(|a|+|n|) between an analytic gradient "
        "and its central-difference estimate.",
    )
    fd_atol: float = Field(1e-7, ge=0, description="Absolute slack for gradients near zero.")


class Timeouts(_Model):
    cell_s: float = Field(30.0, gt=0, description="Per notebook cell.")
    call_s: float = Field(5.0, gt=0, description="Per call of a student function.")


class CaseSets(_Model):
    """How many random cases to draw, and their shapes."""

    scalar: int = Field(3, ge=1, description="Scalar cases drawn per function.")
    vector: tuple[int] = (6,)
    matrix: tuple[int, int] = (3, 4)


class GradientCheck(_Model):
    """The student's value, turned into a gradient by `value`, must match d sum(`of`) / d `wrt`."""

    name: str
    value: Expression = Field(description="Analytic gradient, from `result` and case variables.")
    of: Expression = Field(description="Quantity whose sum is differentiated numerically.")
    wrt: str = Field(description="Case variable to perturb.")
    points: float = Field(1.0, ge=0)

    _v = field_validator("value", "of")(_check_expression)


class PropertyCheck(_Model):
    """A condition on the student's result that any correct implementation satisfies."""

    name: str
    holds: Expression = Field(description="Boolean expression of `result` and case variables.")
    explain: str = Field(description="What a failure means, in words a student understands.")
    points: float = Field(1.0, ge=0)

    _v = field_validator("holds")(_check_expression)


class FunctionSpec(_Model):
    name: str
    args: list[str] = Field(min_length=1, description="Case variables, passed positionally.")
    expect: Expression | None = Field(
        default=None,
        description="Expected value; by default the reference function called on `args`.",
    )
    points: dict[CaseSet, float] = Field(
        default_factory=lambda: {s: 1.0 for s in CaseSet},
        description="Points for each group of cases checked against the reference.",
    )
    gradient_checks: list[GradientCheck] = Field(default_factory=list)
    properties: list[PropertyCheck] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier() or keyword.iskeyword(v):
            raise ValueError(f"{v!r} is not a Python function name")
        return v

    @property
    def expected_expression(self) -> str:
        return self.expect or f"{self.name}({', '.join(self.args)})"

    @property
    def max_score(self) -> float:
        return (
            sum(self.points.values())
            + sum(c.points for c in self.gradient_checks)
            + sum(p.points for p in self.properties)
        )


class AssignmentSpec(_Model):
    name: str
    title: str
    reference: Path = Field(description="Reference notebook, relative to the spec file.")
    notebook: Path = Field(description="Student notebook, relative to the spec file.")
    tolerance: Tolerance = Tolerance()
    timeouts: Timeouts = Timeouts()
    cases: CaseSets = CaseSets()
    variables: dict[str, Expression] = Field(
        description="Case variables in order; a key may unpack a tuple ('z1, a1 = f(x)')."
    )
    examples: list[dict[str, SpecValue]] = Field(
        default_factory=list, description="Fixed cases shown in the notebook; always visible."
    )
    functions: list[FunctionSpec] = Field(min_length=1)
    source: Path = Field(description="The spec file itself.", exclude=True)
    digest: str = Field(description="sha256 of the spec file's bytes.", exclude=True)

    @field_validator("variables")
    @classmethod
    def _variables(cls, v: dict[str, str]) -> dict[str, str]:
        for key, text in v.items():
            for target in (t.strip() for t in key.split(",")):
                if not target.isidentifier():
                    raise ValueError(f"variable name {target!r} is not an identifier")
            _check_expression(text)
        return v

    @model_validator(mode="after")
    def _names_resolve(self) -> AssignmentSpec:
        known = set(self.variable_names)
        for ex in self.examples:
            unknown = set(ex) - known
            if unknown:
                raise ValueError(f"example sets unknown variables {sorted(unknown)}")
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise ValueError("a function is listed twice")
        for f in self.functions:
            for arg in f.args:
                if arg not in known:
                    raise ValueError(f"{f.name}: argument {arg!r} is not a case variable")
            for g in f.gradient_checks:
                if g.wrt not in known:
                    raise ValueError(f"{f.name}: gradient check perturbs unknown {g.wrt!r}")
        if not self.examples and any(CaseSet.EXAMPLES in f.points for f in self.functions):
            raise ValueError("points are given for examples but the spec has none")
        return self

    @property
    def variable_names(self) -> list[str]:
        return [t.strip() for key in self.variables for t in key.split(",")]

    @property
    def max_score(self) -> float:
        return sum(f.max_score for f in self.functions)

    @property
    def reference_path(self) -> Path:
        return (self.source.parent / self.reference).resolve()

    @property
    def notebook_path(self) -> Path:
        return (self.source.parent / self.notebook).resolve()

    def function(self, name: str) -> FunctionSpec:
        return next(f for f in self.functions if f.name == name)


def load_spec(path: Path) -> AssignmentSpec:
    """Read and validate one spec file."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read assignment spec {path}: {exc}") from None
    try:
        return AssignmentSpec.model_validate(
            {**data, "source": path.resolve(), "digest": hashlib.sha256(raw).hexdigest()}
        )
    except ValidationError as exc:
        raise SpecError(f"invalid assignment spec {path}:\n{exc}") from None


def default_course_dir() -> Path:
    """The folder holding assignments/ and solutions/: the checkout this package runs from."""
    return Path(__file__).resolve().parent.parent


def find_spec(assignment: str, course: Path | None = None) -> AssignmentSpec:
    """Resolve an assignment by name (assignments/NAME.toml in the course) or by spec path."""
    candidate = Path(assignment)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise SpecError(f"no assignment spec at {candidate}")
        return load_spec(candidate)
    folder = (course or default_course_dir()) / "assignments"
    path = folder / f"{assignment}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
        hint = f"; known assignments: {', '.join(known)}" if known else ""
        raise SpecError(f"unknown assignment {assignment!r} (no {path}){hint}")
    return load_spec(path)
