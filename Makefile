# Entry points, all safe on a fresh machine with only Python 3.11:
#   make run       - create the environment and run the full pipeline on the embedded default (dvc repro)
#   make test      - create the environment, lint, type-check and run the tests (not those marked slow)
#   make test-all  - the same with the slow ones: the whole pipeline on the quick profile, by DVC and by Prefect
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# dvc stages call `rad`: the environment's commands come first on PATH without activating it
export PATH := $(CURDIR)/$(BIN):$(PATH)

export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: install run test test-all lint lock

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch; GPU images in docker/ install their own
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/lock.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	# the feedback dataset is DVC-tracked; a fresh clone has no DVC cache, so start from the empty one
	$(BIN)/rad feedback init data/feedback
	$(BIN)/dvc repro

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks flows
	$(BIN)/ruff format --check src tests benchmarks flows
	$(BIN)/mypy src

test: lint
	$(BIN)/python -m pytest

test-all: lint
	$(BIN)/python -m pytest -m "slow or not slow"

# Refresh the pinned versions after changing dependencies (run inside a working environment).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/+cpu$$//' > requirements/lock.txt
