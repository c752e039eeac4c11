"""A spec's expressions checked before any student is graded: names that resolve, and a dry run
on the worked examples with the reference, so that an instructor's slip is reported as theirs."""

from __future__ import annotations

import ast
import builtins
import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grader.judge.cases import DRAWS, Case, example_cases
from grader.judge.expressions import evaluate
from grader.spec import AssignmentSpec, Detector, SpecError

# Names the grader binds around some expressions besides the case variables.
RESULT, OTHER = frozenset({"result"}), frozenset({"result", "other"})


class SpecCheckError(SpecError):
    """Spec expressions that cannot work: each problem names the field and the assignment."""

    def __init__(self, spec: AssignmentSpec, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"spec errors in assignment {spec.name} ({spec.source}):\n"
                         + "\n".join(f"  {p}" for p in problems))


def _free_names(expression: str) -> set[str]:
    """Names an expression reads that it does not bind itself (lambda parameters,
    comprehension targets and := targets are its own)."""
    tree = ast.parse(expression, mode="eval")
    bound: set[str] = set()
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound


def _fields(spec: AssignmentSpec) -> Iterator[tuple[str, str, frozenset[str]]]:
    """(field, expression, names the grader binds besides the case variables) of every
    expression written in the spec, case variables excepted."""
    for f in spec.functions:
        if f.expect is not None:
            yield f"{f.name}: expect", f.expect, frozenset()
        for g in f.gradient_checks:
            yield f"{f.name}: gradient check {g.name!r}: value", g.value, RESULT
            yield f"{f.name}: gradient check {g.name!r}: of", g.of, frozenset()
        for p in f.properties:
            yield f"{f.name}: property {p.name!r}: holds", p.holds, RESULT
        for c in f.contrasts:
            for arg, text in c.change.items():
                yield f"{f.name}: contrast {c.name!r}: change {arg}", text, frozenset()
            yield f"{f.name}: contrast {c.name!r}: holds", c.holds, OTHER
        for probe in f.probes:
            yield f"{f.name}: probe {probe.function}", probe.expression, frozenset()
    for m in [*(m for f in spec.functions for m in f.mistakes), *spec.mistakes]:
        if m.value is not None:
            bound = RESULT if m.detector is Detector.CONSTANT else frozenset()
            yield f"mistake {m.id}: value", m.value, bound
        if m.where is not None:
            yield f"mistake {m.id}: where", m.where, frozenset()


def unknown_names(spec: AssignmentSpec, namespace: dict[str, Any]) -> list[str]:
    """Every name an expression of the spec reads that nothing defines where it is evaluated:
    a typo, or a variable used before the one that computes it."""
    known = set(namespace) | set(dir(builtins))
    problems: list[str] = []
    earlier: list[str] = []
    for key, text in spec.variables.items():
        missing = _free_names(text) - known - set(earlier) - set(DRAWS) - {"code", "one_hot"}
        if missing:
            later = sorted(missing & set(spec.variable_names))
            why = (f"{', '.join(later)} {'is' if len(later) == 1 else 'are'} computed after it"
                   if later else "not a case variable, a draw or a name of the reference")
            # A variable computed later is no typo: no other name is suggested for it.
            typos = set(earlier) if not later else set()
            problems.append(f"case variable {key!r} = {text!r} reads "
                            f"{_listed(missing, typos)}: {why}")
        earlier += [t.strip() for t in key.split(",")]
    variables = set(spec.variable_names)
    for field, text, bound in _fields(spec):
        missing = _free_names(text) - known - variables - bound
        if missing:
            problems.append(f"{field} = {text!r} reads {_listed(missing, variables | bound)}, "
                            "which is not a case "
                            "variable, a name of the reference notebook or a helper"
                            + (f" (it may use {', '.join(sorted(bound))})" if bound else ""))
    return problems


def _listed(names: set[str], known: set[str] | None = None) -> str:
    """The names, each with the known name it is likely a typo of."""
    out = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, known or (), n=1)
        out.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(out)


def dry_run(spec: AssignmentSpec, namespace: dict[str, Any]) -> list[str]:
    """Every expression of the spec evaluated on each worked example, with the reference's own
    results for `result` and `other`: what raises there would raise on every student."""
    try:
        cases = example_cases(spec, namespace)
    except SpecError as exc:
        return [str(exc)]
    problems: list[str] = []

    def attempt(field: str, text: str, case: Case, **names: Any) -> Any:
        try:
            return evaluate(text, namespace, **(case.variables | names))
        except Exception as exc:
            problems.append(f"{field} = {text!r} raised {type(exc).__name__} on example "
                            f"{case.index + 1}: {exc}")
            return None

    for case in cases:
        for f in spec.functions:
            before = len(problems)
            result = attempt(f"{f.name}: expect", f.expected_expression, case)
            if len(problems) > before:
                continue  # nothing below can run without the reference's result
            for g in f.gradient_checks:
                attempt(f"{f.name}: gradient check {g.name!r}: value", g.value, case,
                        result=result)
                attempt(f"{f.name}: gradient check {g.name!r}: of", g.of, case)
            for p in f.properties:
                attempt(f"{f.name}: property {p.name!r}: holds", p.holds, case, result=result)
            for c in f.contrasts:
                changed = {a: attempt(f"{f.name}: contrast {c.name!r}: change {a}", t, case)
                           for a, t in c.change.items()}
                other = attempt(f"{f.name}: contrast {c.name!r}: the second call",
                                f.expected_expression, case, **changed)
                attempt(f"{f.name}: contrast {c.name!r}: holds", c.holds, case,
                        result=result, other=other)
            for probe in f.probes:
                attempt(f"{f.name}: probe {probe.function}", probe.expression, case)
            for m in spec.mistakes_for(f.name):
                if m.detector is Detector.VALUE:
                    attempt(f"mistake {m.id}: value", m.value or "", case)
                elif m.detector is Detector.CONSTANT:
                    attempt(f"mistake {m.id}: value", m.value or "", case, result=result)
                if m.where is not None:
                    attempt(f"mistake {m.id}: where", m.where, case)
    # A top-level mistake is tried on every function: say each failure once.
    return list(dict.fromkeys(problems))


# Specs already verified, by file, bytes, reference notebook and mode: a class run checks once.
_VERIFIED: set[tuple[Path, str, int, bool]] = set()


def verify(spec: AssignmentSpec, public: bool = False) -> None:
    """Raise SpecCheckError naming every expression of the spec that cannot work: unknown
    names (against the reference notebook, or the handout in public mode) and, with the
    reference, whatever raises on the worked examples. Checked once per spec and reference."""
    from grader.judge.reference import handout_namespace, reference_namespace

    public = public or not spec.reference_path.is_file()
    mtime = 0 if public else spec.reference_path.stat().st_mtime_ns
    key = (spec.source, spec.digest, mtime, public)
    if key in _VERIFIED:
        return
    namespace = handout_namespace(spec) if public else reference_namespace(spec)
    problems = unknown_names(spec, namespace)
    if not problems and not public:
        problems = dry_run(spec, namespace)
    if problems:
        raise SpecCheckError(spec, problems)
    _VERIFIED.add(key)
