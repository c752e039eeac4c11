"""Assignment specs: one declarative TOML file per assignment, validated once at load time."""

from __future__ import annotations

import hashlib
import keyword
import math
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from grader.course import find_course
from grader.errors import GraderError


class Code:
    """A function written in a spec as source text, with named constants it may use.

    A function cannot cross into the kernel as a value, so the harness defines it there from the
    same text; the grader defines its own copy here to compute expected values. The text is
    trusted spec text, and sees only numpy (`np`), `math` and its constants.
    """

    def __init__(self, source: str, constants: dict[str, Any]) -> None:
        self.source = source
        self.constants = constants
        self._function = eval(source, {"np": np, "math": math, **constants})
        if not callable(self._function):
            raise ValueError(f"code {source!r} does not define a function")

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __repr__(self) -> str:
        return f"code({self.source!r})"


def code(source: str, **constants: Any) -> Code:
    """The spec's way to declare a function argument: code('lambda x: np.sum(x ** 2)')."""
    return Code(source, constants)


# A value written in a spec: a number, or a list (of lists) of numbers for an array. An int
# stays an int (a size, a count or a seed); pydantic's smart union keeps 3 an int and 3.0 a float.
SpecValue = int | float | list[float] | list[list[float]]
# A worked example's answer may also be a dict of such values (a dict of gradients, say).
AnswerValue = SpecValue | dict[str, SpecValue]


class SpecError(GraderError):
    """An assignment spec that cannot be found or does not validate."""


class CaseSet(StrEnum):
    """Groups of cases; each group is its own test entry with its own points."""

    EXAMPLES = "examples"
    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"
    # Whole batches: each case's variables give their own shapes (see CaseSets.batches).
    BATCH = "batch"


# The groups drawn with a shape of their own; a spec that draws batches draws none of these.
SHAPED_SETS = (CaseSet.SCALAR, CaseSet.VECTOR, CaseSet.MATRIX)


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

    def accepts(self, got: np.ndarray, expected: np.ndarray) -> bool:
        """Same shape, finite, and within atol + rtol * |expected| everywhere."""
        return within(got, expected, self.rtol, self.atol)


def within(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    """The one closeness rule of the grader: same shape, finite, |got - expected| <= atol +
    rtol * |expected| element by element."""
    return (got.shape == expected.shape and bool(np.all(np.isfinite(got)))
            and bool(np.all(np.abs(got - expected) <= atol + rtol * np.abs(expected))))


class Timeouts(_Model):
    cell_s: float = Field(30.0, gt=0, description="Per notebook cell.")
    call_s: float = Field(5.0, gt=0, description="Per call of a student function.")


class BatchCredit(StrEnum):
    """How the points of a function's `batch` group are earned."""

    EACH = "each"  # every batch right earns its share: points / number of batches
    ALL = "all"  # the points only when every batch is right


class CaseSets(_Model):
    """How many random cases to draw, and their shapes."""

    scalar: int = Field(3, ge=1, description="Scalar cases drawn per function.")
    vector: tuple[PositiveInt] = (6,)
    matrix: tuple[PositiveInt, PositiveInt] = (3, 4)
    batches: int = Field(
        0, ge=0, description="Whole-batch cases to draw instead of the scalar, vector and "
        "matrix ones: every variable of a batch gives its own shape (a draw without `shape` "
        "is one number), and functions score them under `batch` in `points`.")
    batch_credit: BatchCredit = Field(
        BatchCredit.EACH, description="'each': every right batch earns points / batches; "
        "'all': the group's points only when every batch is right.")


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


class RepeatCheck(_Model):
    """Call the function a second time on every hidden case: both calls must agree exactly."""

    name: str = "the same arguments give the same result"
    explain: str = Field(description="What a failure means, in words a student understands.")
    points: float = Field(1.0, ge=0)


class ContrastCheck(_Model):
    """Call the function again on every hidden case with some arguments changed, and relate the
    two results: the result must depend on those arguments as the contract says (another seed
    gives another network; a learning rate of 0 returns the initial one)."""

    name: str
    change: dict[str, Expression] = Field(
        min_length=1, description="New values of some of the function's arguments, as "
        "expressions of case variables (e.g. seed = \"seed + 1\").")
    holds: Expression = Field(
        description="Boolean expression of `result` (the first call's value), `other` (the "
        "second call's) and case variables.")
    explain: str = Field(description="What a failure means, in words a student understands.")
    points: float = Field(1.0, ge=0)

    _v = field_validator("holds")(_check_expression)

    @field_validator("change")
    @classmethod
    def _changes(cls, v: dict[str, str]) -> dict[str, str]:
        for text in v.values():
            _check_expression(text)
        return v


class Detector(StrEnum):
    """How a known mistake is recognised in the values a student's function returned."""

    VALUE = "value"  # every result equals the mistaken variant's `value` expression
    SCALAR_ONLY = "scalar_only"  # numbers on scalar cases, an exception on every array case
    RETURNS_NONE_MUTATED = "returns_none_mutated"  # returns None, changed an argument in place
    MUTATES_ARGUMENTS = "mutates_arguments"  # returns a value, but changed an argument in place
    COLUMN_SHAPE = "column_shape"  # array results shaped as a column, or broadcast against one
    BATCH_SUMMED = "batch_summed"  # one number where a batch of results is expected
    # `value`, an expression of `result`, is one and the same number on every case; the hint
    # may quote it as {value}. It reveals, say, the step size an update really takes.
    CONSTANT = "constant"
    # nan or infinities exactly where `where` (a condition of case variables, broadcast to the
    # result's shape) holds, finite values everywhere else: a formula that overflows or
    # underflows on the inputs that need care (an unstabilised softmax on large logits).
    NON_FINITE = "non_finite"


MISTAKE_ID = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$"


class Mistake(_Model):
    """A known misconception: a stable id, how to recognise it, and a hint that teaches."""

    id: str = Field(pattern=MISTAKE_ID, description="Stable id, e.g. 'delta2.sign_flipped'.")
    hint: str = Field(min_length=1, description="Explains the idea; never hands over code.")
    detector: Detector = Detector.VALUE
    value: Expression | None = Field(
        default=None, description="For detector 'value': the mistaken variant's result, from "
        "case variables and the handout's functions (never the answer key). For detector "
        "'constant': an expression of `result` that the mistake keeps fixed over all cases.")
    error: str | None = Field(
        default=None, description="For detector 'scalar_only': the exception type array cases "
        "raise (any type when absent).")
    unless: float | None = Field(
        default=None, description="For detector 'constant': the value correct work keeps "
        "constant, which is therefore no sign of this mistake.")
    where: Expression | None = Field(
        default=None, description="For detector 'non_finite': a condition of case variables, "
        "true where the mistake makes the result nan or infinite (e.g. 'np.abs(Z) > 700'); it "
        "is broadcast to the result's shape.")
    example: str | None = Field(
        default=None, description="A body of the function, written with its own parameter "
        "names, that makes this mistake; the assignment CI proves the detector fires on it. "
        "Needed for detectors 'constant' and 'non_finite', whose expressions say what the "
        "mistake does, not how.")

    @model_validator(mode="after")
    def _value_iff_value_detector(self) -> Mistake:
        takes_value = self.detector in (Detector.VALUE, Detector.CONSTANT)
        if takes_value != (self.value is not None):
            raise ValueError(f"{self.id}: a 'value' expression goes with detectors 'value' and "
                             "'constant' only, and they need one")
        if self.value is not None:
            _check_expression(self.value)
        if (self.detector is Detector.NON_FINITE) != (self.where is not None):
            raise ValueError(f"{self.id}: a 'where' condition goes with detector 'non_finite' "
                             "only, and it needs one")
        if self.where is not None:
            _check_expression(self.where)
        if self.detector in (Detector.CONSTANT, Detector.NON_FINITE) and self.example is None:
            raise ValueError(f"{self.id}: detector '{self.detector}' needs an example body")
        if self.detector is Detector.CONSTANT:
            try:
                self.hint.format(value=1.0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"{self.id}: the hint may quote only {{value}} ({exc})") from None
        return self


class Probe(_Model):
    """Another student function this one calls, and on which case variables: when that function
    loses points, this one is called again with a stand-in for it (the reference's value on
    those variables), so that one mistake is not charged twice."""

    function: str
    args: list[str] = Field(min_length=1)

    @property
    def expression(self) -> str:
        """The call whose reference value a stand-in answers with: e.g. `sigmoid_prime(z2)`."""
        return f"{self.function}({', '.join(self.args)})"


class FunctionSpec(_Model):
    name: str
    args: list[str] = Field(min_length=1, description="Case variables, passed positionally.")
    expect: Expression | None = Field(
        default=None,
        description="Expected value; by default the reference function called on `args`.",
    )
    points: dict[CaseSet, NonNegativeFloat] = Field(
        default_factory=lambda: {s: 1.0 for s in (CaseSet.EXAMPLES, *SHAPED_SETS)},
        description="Points for each group of cases checked against the reference.",
    )
    gradient_checks: list[GradientCheck] = Field(default_factory=list)
    properties: list[PropertyCheck] = Field(default_factory=list)
    repeat: RepeatCheck | None = Field(
        default=None, description="Check that a second call returns the very same value "
        "(e.g. a seeded training run).")
    contrasts: list[ContrastCheck] = Field(
        default_factory=list, description="Checks that call the function again with some "
        "arguments changed, so that an answer which ignores an argument shows.")
    mistakes: list[Mistake] = Field(default_factory=list, description="Known misconceptions.")
    probes: list[Probe] = Field(
        default_factory=list, description="Student functions this one calls (one probe per "
        "function), so that a mistake in them is not charged here again.")

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
            + (self.repeat.points if self.repeat else 0.0)
            + sum(c.points for c in self.contrasts)
        )

    @property
    def repeat_key(self) -> str:
        """The observation key of the second calls."""
        return f"{self.name}#repeat"

    def contrast_key(self, index: int) -> str:
        """The observation key of the calls of contrast check `index`."""
        return f"{self.name}#contrast{index}"


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
    example_answers: dict[str, list[AnswerValue]] = Field(
        default_factory=dict,
        description="Expected result of each function on each example, in example order: "
        "public (the notebook prints them), so a self-check runs without the answer key. "
        "`grader assign` writes them from the reference (numbers, arrays and dicts of them), "
        "and `grader assign --check` says when they are stale.")
    mistakes: list[Mistake] = Field(
        default_factory=list, description="Misconceptions any function can show (shapes).")
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
            for c in f.contrasts:
                if not set(c.change) <= set(f.args):
                    raise ValueError(f"{f.name}: contrast {c.name!r} changes "
                                     f"{sorted(set(c.change) - set(f.args))}, not arguments")
            for p in f.probes:
                if p.function not in names or p.function == f.name:
                    raise ValueError(f"{f.name}: probe of {p.function!r}, not another function")
                if not set(p.args) <= known:
                    raise ValueError(f"{f.name}: probe {p.function} takes unknown variables")
            if len({p.function for p in f.probes}) != len(f.probes):
                # A stand-in answers one value per case: one probe per function it replaces.
                raise ValueError(f"{f.name}: two probes of the same function")
        ids = [m.id for m in self.mistakes] + [m.id for f in self.functions for m in f.mistakes]
        if len(set(ids)) != len(ids):
            raise ValueError("a mistake id is used twice")
        for function, answers in self.example_answers.items():
            if function not in names:
                raise ValueError(f"example answers for unknown function {function!r}")
            if len(answers) != len(self.examples):
                raise ValueError(f"{function}: one example answer per example is needed")
        if not self.examples and any(CaseSet.EXAMPLES in f.points for f in self.functions):
            raise ValueError("points are given for examples but the spec has none")
        for f in self.functions:
            if self.cases.batches and set(f.points) & set(SHAPED_SETS):
                raise ValueError(f"{f.name}: [cases] draws batches only, so points go to "
                                 "'examples' and 'batch'; give them explicitly")
            if not self.cases.batches and CaseSet.BATCH in f.points:
                raise ValueError(f"{f.name}: points for 'batch', but [cases] draws no batches "
                                 "(set batches = N)")
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

    def mistakes_for(self, name: str) -> list[Mistake]:
        """The function's own known mistakes, then those any function can make."""
        return [*self.function(name).mistakes, *self.mistakes]


def load_spec(path: Path, without_answers: bool = False) -> AssignmentSpec:
    """Read and validate one spec file; `without_answers` leaves out its [example_answers]
    (which `grader assign` is about to write again, after an example was added, say)."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read assignment spec {path}: {exc}") from None
    if without_answers:
        data.pop("example_answers", None)
    try:
        return AssignmentSpec.model_validate(
            {**data, "source": path.resolve(), "digest": hashlib.sha256(raw).hexdigest()}
        )
    except ValidationError as exc:
        raise SpecError(f"invalid assignment spec {path}:\n{exc}") from None


def find_spec(assignment: str, course: Path | None = None) -> AssignmentSpec:
    """Resolve an assignment by name (assignments/NAME.toml in the course, by default the one
    find_course finds) or by spec path."""
    candidate = Path(assignment)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise SpecError(f"no assignment spec at {candidate}")
        return load_spec(candidate)
    folder = (course or find_course().root) / "assignments"
    path = folder / f"{assignment}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
        hint = f"; known assignments: {', '.join(known)}" if known else ""
        raise SpecError(f"unknown assignment {assignment!r} (no {path}){hint}")
    return load_spec(path)
