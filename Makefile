# Every target refreshes .venv itself, so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# Extra arguments for bench/throughput.py, e.g. BENCH_ARGS="--results bench/RESULTS.md"
BENCH_ARGS ?=
# Extra arguments for bench/scale.py, e.g. SCALE_ARGS="--max 100000" for a quick run
SCALE_ARGS ?=

.PHONY: run test test-unit lint bench venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# byte-compiled as pip does for an installed package: with PYTHONDONTWRITEBYTECODE set,
	@# every opsc command would otherwise compile our modules again (~70 ms of its start-up)
	$(BIN)/python -m compileall -q src >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/opsc serve --demo

# In parallel: pyproject.toml's addopts give pytest-xdist's `-n auto` (README: Set-up).
test: $(STAMP)
	$(BIN)/python -m pytest

# The fast tier: pure domain logic and rendering, no database (seconds); in one process:
# these tests compute rather than wait, and each pytest-xdist worker imports everything again.
test-unit: $(STAMP)
	@$(BIN)/python -c 'import subprocess, sys, time; t = time.monotonic(); \
	rc = subprocess.call([sys.executable, "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider", "-n", "0"]); \
	print(f"unit tier wall time: {time.monotonic() - t:.1f} s"); sys.exit(rc)'

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

# CLI start-up, core figures, crash recovery, then the queue: our workers against PgQueuer
# and procrastinate (bench/RESULTS.md).
bench: $(BENCH_STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/masking.py
	$(BIN)/python bench/safety.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/streams.py
	$(BIN)/python bench/scale.py $(SCALE_ARGS)
	$(BIN)/python bench/rollup.py
	$(BIN)/python bench/drain_cost.py
	$(BIN)/python bench/first_calls.py
	$(BIN)/python bench/enqueue_cost.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
