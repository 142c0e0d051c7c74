# The two commands of the README. Each sets up what it needs on a fresh machine, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_DIR := tests/npm

.PHONY: scan test setup setup-dev system-deps docs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[target]'

setup-dev: $(BIN)/python system-deps
	$(BIN)/pip install --quiet -e '.[dev]'
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --silent

# What the tests run for real: the job sandbox (bubblewrap, util-linux), Redis, and the headless browser the
# dashboard test opens its page in (Debian's chromium). Installed with apt-get when missing and this is root on
# Debian/Ubuntu; otherwise named, and the tests that need them fail with that reason.
system-deps:
	@missing=""; for tool in bwrap setpriv prlimit redis-server chromium; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq bubblewrap util-linux redis-server chromium >/dev/null; \
	  else echo "make: missing$$missing: install bubblewrap, util-linux, redis-server and chromium" >&2; fi; \
	fi

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
