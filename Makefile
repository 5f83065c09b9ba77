# headrace — developer entry points. `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions of every package, build tools included (`make lock` regenerates it).
LOCK := constraints.txt
PYTEST_WORKERS ?= 2
ROWS ?= 1000000
BENCH_ROWS ?= 1000000
BENCH_SEED_ROWS ?= 50000

SOAK_ROWS ?= 5000000
PY_PATHS := headrace producer worker cli migrations tests bench scripts testbed deploy

.PHONY: help venv demo test unit faults soak lint format sysdeps docs clean bench dashboard lock

help:
	@echo "make demo    - install, generate $(ROWS) rows, run producer + worker on embedded defaults"
	@echo "make test    - install what is missing (Debian mariadb-server too), lint, run the suite"
	@echo "make unit    - the tests that need no server or process (no sysdeps, seconds)"
	@echo "make lint    - ruff check, ruff format --check, mypy --strict, import layer contracts"
	@echo "make faults  - only the fault-injection scenarios (tests/faults; part of make test too)"
	@echo "make soak    - $(SOAK_ROWS) rows, worker SIGKILLed every 30 s, DB restarted twice (not in make test)"
	@echo "make dashboard - regenerate deploy/grafana/headrace.json from deploy/grafana/dashboard.py"
	@echo "make bench   - benchmark, $(BENCH_ROWS) rows (not part of make test); results in bench/results/"
	@echo "make lock    - re-resolve $(LOCK) (every package pinned) from pyproject.toml's ranges"

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c $(LOCK) --build-constraint $(LOCK) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/headrace demo --rows $(ROWS)

sysdeps:
	bash scripts/ensure-system-deps.sh --with-prometheus

lint: $(STAMP)
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format $(PY_PATHS)
	$(BIN)/ruff check --fix $(PY_PATHS)

test: sysdeps $(STAMP) lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not soak and not bench" tests

# No MariaDB, moto, Prometheus or CLI process: tests/conftest.py marks those `services`.
unit: $(STAMP)
	$(BIN)/pytest -q -m "not services and not soak and not bench" tests

faults: sysdeps $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not soak and not bench" tests/faults

soak: sysdeps $(STAMP)
	SOAK_ROWS=$(SOAK_ROWS) $(BIN)/pytest -m soak -s --timeout 4000 tests/faults/test_soak.py

# One run on a throwaway MariaDB and a moto server process: LOAD DATA ceiling, sink only,
# end to end, seed-style baseline, CPU/RSS, SQS cost; a table, bench/results/*.json and *.png.
bench: sysdeps $(STAMP)
	$(BIN)/python -m bench --rows $(BENCH_ROWS) --seed-rows $(BENCH_SEED_ROWS)

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache

# The committed dashboard JSON is generated; tests/deploy fails when it is stale.
dashboard: $(STAMP)
	$(BIN)/python -m deploy.grafana.dashboard

docs: $(STAMP)
	$(BIN)/python scripts/settings_table.py
	$(BIN)/python scripts/metrics_table.py

# Resolves in a throwaway venv, so it needs no $(STAMP); commit $(LOCK) with pyproject.toml.
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh $(LOCK)
