# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv if missing, installs everything, tunes, runs a small real sweep and its report
#   make study  - the same set-up, then the CPU-scale study of sweeps/study.yaml: all five axes (planned < 1 hour)
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

.PHONY: install browser demo study test chaos mutation lint clean

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

# The demo's stages (tuning, sweep, System-2 thinking, report) on the study's spec; rerun it after a kill:
# nothing finished is trained again
study: $(STAMP)
	$(BIN)/ebtscale demo --spec sweeps/study.yaml

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
# against the tests that reach it, fastest first, stopping at the first failure. To finish within an hour on
# 2 cores: a fixed sample by the mutant's number within its function (mutmut numbers them 1, 2, ...): every
# mutant of the small files; every function's first mutant (_1) and then every 5th (numbers ending in 1 or 6)
# of the cheap files; every 10th (ending in 1), 20th (ending in 01, 21, 41, 61, 81), 3 in 100 (01, 41, 81)
# or 1 in 100 (01) of the costly ones, whose tests write reports or reach every fit; 1 in 50 (01, 51) of
# analysis/power.py and analysis/design.py, whose tests simulate whole studies; every 5th of analysis/rounds.py.
# MUTANTS='analysis.compare.*' runs every
# mutant of one file (docs/testing.md).
MUTANTS ?= 'analysis.x_*' 'analysis.intervals.*' 'analysis.text.*' 'model.thinking.*' \
  'model.flops.*[16]' 'analysis.tuning.*[16]' 'analysis.data.*1' 'analysis.identify.*1' \
  'model.ebt.*_1' 'model.ebt.*[02468]1' 'analysis.laws.*_1' 'analysis.laws.*[02468]1' \
  'analysis.learning.*_1' 'analysis.learning.*[02468]1' 'analysis.isoflop.*_1' 'analysis.isoflop.*[02468]1' \
  'analysis.thinking.*_1' 'analysis.thinking.*[02468]1' 'analysis.optim.*_1' 'analysis.optim.*[02468]1' \
  'analysis.backtest.*_1' 'analysis.backtest.*[02468]1' 'analysis.fit.*_1' 'analysis.fit.*[048]1' \
  'analysis.compare.*_1' 'analysis.compare.*[048]1' 'analysis.claims.*_1' 'analysis.claims.*[048]1' \
  'analysis.plots.*_1' 'analysis.plots.*[05]1' 'analysis.report.*_1' 'analysis.report.*01' \
  'analysis.power.*_1' 'analysis.power.*[05]1' 'analysis.design.*_1' 'analysis.design.*[05]1' \
  'analysis.rounds.*_1' 'analysis.rounds.*[16]'
mutation: $(STAMP)
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python tests/mutation/score.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs mutants .pytest_cache .ruff_cache
