# Two commands do all the set-up: `make run` starts the platform, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean example

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/headrace up

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# ruff (style, bugs, complexity), mypy, then the layer contracts: all configured in pyproject.toml.
# mypy reads schema-registry/ as the package schema_registry through a symlink (see [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	@mkdir -p .typecheck && ln -sfn ../schema-registry .typecheck/schema_registry
	$(BIN)/mypy
	$(BIN)/lint-imports

# The sink benchmark compares with quixstreams, kept in its own extra so tests never install it.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH)

# The sales dataflow of examples/sales on the platform `make run` started: its data loaded, its flow applied.
example: $(STAMP)
	$(BIN)/python examples/sales/load.py
	$(BIN)/headrace flow apply examples/sales/flow.yaml

clean:
	rm -rf $(VENV) .headrace .pytest_cache .mypy_cache .import_linter_cache .typecheck
