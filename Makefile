# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv if missing, installs everything, tunes, runs a small real sweep and its report
#   make test   - the same set-up, then the test suite (what .ci/run calls; without the `chaos` tests)
#   make chaos  - every fault-injection test in tests/reliability, and the table docs/reliability.md quotes
#   make mutation - mutation testing of the analysis and the EBT's maths, a score per file (docs/testing.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=
# make test runs the suite on this many pytest-xdist workers (0: in this process), a module per worker
# at a time: its tests wait on Ray, MLflow and subprocesses much of the time, so two overlap well on 2 cores
TEST_WORKERS ?= 2

.PHONY: install browser demo test chaos mutation lint clean

install: $(STAMP)

# Pinned CPU torch goes in first where no NVIDIA driver exists: a bare torch requirement
# (DeepSpeed pulls one) would otherwise fetch a multi-GB CUDA build. A local CPU wheel (pip find-links)
# is used when present, else PyTorch's CPU wheel index.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet --no-index --no-deps torch==$(TORCH_VERSION) 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet --no-deps torch==$(TORCH_VERSION) \
	       --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/ebtscale demo

# Headless Chromium (Debian package) for the test that renders the MLflow UI; skipped when present.
browser:
	@command -v chromium >/dev/null 2>&1 || bash infra/ci/install-chromium.sh

test: $(STAMP) browser
	$(BIN)/python -m pytest -m "not chaos" -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

FAULT_LOG := outputs/chaos/faults.jsonl
chaos: $(STAMP)
	rm -f $(FAULT_LOG)
	EBTSCALE_FAULT_LOG=$(CURDIR)/$(FAULT_LOG) $(BIN)/python -m pytest tests/reliability --durations=0 \
	  $(PYTEST_ARGS); status=$$?; $(BIN)/python tests/reliability/fault_summary.py $(FAULT_LOG); exit $$status

# mutmut over analysis/ and model/{ebt,flops,thinking}.py ([tool.mutmut] in pyproject.toml), each mutant run
# against the tests that reach it. Within an hour on 2 cores it runs every mutant of the small files and a
# fixed sample of the large ones: the mutants whose number ends in 7 (1 in 10), or in 3 or 7 (2 in 10).
# MUTANTS='analysis.compare.*' runs every mutant of one file (docs/testing.md has the times).
MUTANTS ?= 'analysis.x_*' 'analysis.intervals.*' 'model.thinking.*' \
  'analysis.data.*[37]' 'analysis.identify.*[37]' 'analysis.tuning.*[37]' 'model.flops.*[37]' \
  'analysis.backtest.*7' 'analysis.compare.*7' 'analysis.fit.*7' 'analysis.isoflop.*7' 'analysis.laws.*7' \
  'analysis.optim.*7' 'analysis.plots.*7' 'analysis.report.*7' 'analysis.thinking.*7' 'model.ebt.*7'
mutation: $(STAMP)
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python tests/mutation/score.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs mutants .pytest_cache .ruff_cache
