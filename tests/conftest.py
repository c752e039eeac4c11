from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grader.grade import grade_notebook, limits_for
from grader.report import Report
from grader.spec import AssignmentSpec, find_spec

# A real Dask cluster (scheduler and workers as processes), for the cluster's and the server's
# tests: fixtures `course`, `course_spec` and `dask_cluster`, each one per test module.
from tests.daskcluster import course, course_spec, dask_cluster  # noqa: F401


@pytest.fixture(scope="session")
def spec() -> AssignmentSpec:
    return find_spec("derivative_calculation")


@pytest.fixture
def grade(spec: AssignmentSpec):
    """Grade one notebook file with short timeouts; returns its report."""

    def run(path: Path, seed: int = 7, cell_timeout: float = 5.0, call_timeout: float = 2.0,
            **kwargs) -> Report:
        limits = limits_for(spec, cell_timeout, call_timeout)
        return asyncio.run(grade_notebook(path, spec, seed, limits, **kwargs))

    return run
