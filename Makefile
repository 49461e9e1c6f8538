# MedQ developer entry points. Every target creates/refreshes the project venv idempotently.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch on machines without torch; keeps an existing (CUDA) torch untouched.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.medq-installed
export PREFECT_HOME ?= $(CURDIR)/.medq/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv lint demo test test-all services-up services-down bench bench-quick dashboard constraints clean

venv: $(STAMP)
	@mkdir -p "$(PREFECT_HOME)"

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c constraints.txt -e ".[all,dev]"
	@touch $(STAMP)

## The main job: a fresh workspace, a small synthetic world, the closed loop for a few rounds.
demo: venv
	$(BIN)/medq demo --workspace .medq-demo

## Quality gates: ruff (lint + import order, `medq` first-party) and mypy over engine/ and storage/.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy -p medq.engine -p medq.storage

## The tests: installs the project and the local services (S3 endpoint, Label Studio), runs the
## quality gates and pytest.
test: venv lint
	bash infra/install.sh
	$(BIN)/python -m pytest

test-all: venv
	bash infra/install.sh
	$(BIN)/python -m pytest -m "not gpu"

services-up: venv
	$(BIN)/medq services up

services-down: venv
	$(BIN)/medq services down

bench-quick: venv
	$(BIN)/python benchmarks/run_all.py --quick

bench: venv
	$(BIN)/python benchmarks/run_all.py

dashboard: venv
	$(BIN)/medq dashboard

constraints: venv
	{ head -3 constraints.txt; $(BIN)/pip freeze | grep -v "^-e\|^medq\|^torch==\|^nvidia\|^triton"; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf .medq-demo .pytest_cache
