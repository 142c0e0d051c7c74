# The two commands of the README. Each sets up what it needs on a fresh machine, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_DIR := tests/npm

.PHONY: scan test setup setup-dev docs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[target]'

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --silent

# Scan the pinned diffusers release and print the findings grouped by pattern.
scan: setup
	$(BIN)/drbot analyze; status=$$?; [ $$status -le 1 ]

# Run the test suite.
test: setup-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(BIN)/python
	$(BIN)/python -m analyzers.docs

bench: setup-dev
	$(BIN)/python bench/scan.py && $(BIN)/python bench/review.py
