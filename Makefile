# `make demo` grades the bundled example class; `make test` runs the test suite; `make serve`
# runs the submission server on the example course with a demo roster.
# Each creates .venv and installs the project into it when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test serve lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/grader grade examples/submissions --out out/demo --assignment derivative_calculation --verbose

serve: $(STAMP)
	$(BIN)/grader serve --demo --data out/serve-demo

test: $(STAMP)
	$(BIN)/ruff check grader tests
	$(BIN)/python -m pytest

clean:
	rm -rf out .pytest_cache
