# bgd-experiments: `make help` lists the targets. Every target installs what it needs into
# .venv on first use (idempotent: reinstalls only when pyproject.toml changes).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUDGET ?= cpu
RESULTS := results/$(BUDGET)
# Extra Hydra overrides passed through to every bgd-run of a target, e.g.
#   make table2 BUDGET=paper ARGS="trainer.device=cuda"
ARGS ?=
SHARED_DATA ?= ../shared/data

# Offline machines carry the archives in ../shared/data; elsewhere torchvision downloads.
ifneq (,$(wildcard $(SHARED_DATA)/cifar10-jpeg.tar.gz))
CIFAR10 := dataset.root=$(SHARED_DATA)/cifar10-jpeg.tar.gz
else
CIFAR10 := dataset.root=data dataset.download=true
endif
ifneq (,$(wildcard $(SHARED_DATA)/cifar100-png.tar.gz))
CIFAR100 := dataset.root=$(SHARED_DATA)/cifar100-png.tar.gz
else
CIFAR100 := dataset.root=data dataset.download=true
endif

.PHONY: help install test lint format demo functions fig2 fig2a fig2b table1 table2 table3 fig3 paper bench clean

help: ## List the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: BUDGET=paper|cpu|smoke (default cpu), ARGS='<hydra overrides>'"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

test: $(STAMP) ## Run lint and the whole test suite (CPU, offline, ~10 min)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP) ## A short real run on CPU: NAG vs MBT-NAG, ResNet18/4 on 2,000 CIFAR-10 images
	$(BIN)/bgd-run $(CIFAR10) model.width=0.25 dataset.train_subset=2000 trainer.epochs=3 \
	  trainer.device=cpu results_dir=results/demo optimizer=nag optimizer.lr=0.05 $(ARGS)
	$(BIN)/bgd-run $(CIFAR10) model.width=0.25 dataset.train_subset=2000 trainer.epochs=3 \
	  trainer.device=cpu results_dir=results/demo optimizer=mbt_nag $(ARGS)
	$(BIN)/python -m bgd_experiments.reporting.runs_table results/demo

functions: $(STAMP) ## The deterministic experiments (Examples 3.6/3.7, Mexican hat, Fig. 2a)
	$(BIN)/bgd-run experiment=functions results_dir=$(RESULTS) $(ARGS)

bench: $(STAMP) ## Benchmarks: MBT search vs the authors'-style one, MBT-NAG vs NAG epochs
	$(BIN)/python scripts/bench_mbt.py $(ARGS)

clean: ## Remove caches (not results, not .venv)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
