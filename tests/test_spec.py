"""Assignment specs are validated once, when they are loaded."""

from __future__ import annotations

import pytest

from grader.spec import SpecError, load_spec
from tests.notebooks import ROOT

SPEC = ROOT / "assignments" / "derivative_calculation.toml"


def _load_with(tmp_path, old: str, new: str):
    text = SPEC.read_text()
    assert old in text
    path = tmp_path / "assignments" / SPEC.name
    path.parent.mkdir()
    path.write_text(text.replace(old, new, 1))
    return load_spec(path)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("points = { examples = 1,", "points = { examples = -1,", "greater than or equal to 0"),
    ("vector = [6]", "vector = [0]", "greater than 0"),
    ("times the gradient, whatever", "times the {gradient}, whatever", "may quote only {value}"),
    ('args = ["z1"]', 'args = ["z9"]', "not a case variable"),
    ('x = "uniform(-2.0, 2.0)"', 'x = "uniform(-2.0, "', "not a Python expression"),
])
def test_a_broken_spec_is_refused_at_load_time_with_a_reason(tmp_path, old, new, message):
    with pytest.raises(SpecError, match="invalid assignment spec") as refused:
        _load_with(tmp_path, old, new)
    assert message in str(refused.value)


def test_a_contrast_may_change_only_the_functions_own_arguments(tmp_path):
    training = ROOT / "assignments" / "training_and_gradient_check.toml"
    path = tmp_path / "assignments" / training.name
    path.parent.mkdir()
    text = training.read_text()
    assert 'change = { seed = "seed + 1" }' in text
    path.write_text(text.replace('change = { seed = "seed + 1" }',
                                 'change = { sede = "seed + 1" }', 1))
    with pytest.raises(SpecError, match=r"changes \['sede'\], not arguments"):
        load_spec(path)


def test_the_shipped_spec_loads(tmp_path):
    assert _load_with(tmp_path, "", "").max_score == load_spec(SPEC).max_score
