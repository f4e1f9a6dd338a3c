# One command per job; each bootstraps .venv on a fresh clone. `make check` is what CI runs.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Installed when the venv is new, and again whenever pyproject.toml changes.
STAMP  := $(VENV)/.installed

.PHONY: test test-pg check lint demo bench

# Tests run in parallel, one process per core (at most four): much of the suite waits on
# processes it starts (servers, workers, a killed one's successor). PYTEST_WORKERS=0 runs
# them in this process, one after another.
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/pytest -q -n $(PYTEST_WORKERS) --maxprocesses=4

test: $(STAMP)
	$(PYTEST)

# The tests that drive the Slack app, again on PostgreSQL (APPROVALS_TEST_PG, by default
# postgresql+asyncpg://postgres@127.0.0.1:5432/test); `make test` already runs the storage,
# migration and replica tests there. Skipped, saying why, without a server.
test-pg: $(STAMP)
	APPROVALS_TEST_DATABASE=postgresql $(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

check: lint test

demo: $(STAMP)
	$(BIN)/approvals demo

# The five benchmarks of docs/PERFORMANCE.md (a few minutes; wants a quiet machine).
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@
