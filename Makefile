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

# The dataset configs read these, so sweeps over both datasets find their data.
export BGD_CIFAR10_ROOT ?= $(if $(wildcard $(SHARED_DATA)/cifar10-jpeg.tar.gz),$(abspath $(SHARED_DATA)/cifar10-jpeg.tar.gz),data)
export BGD_CIFAR100_ROOT ?= $(if $(wildcard $(SHARED_DATA)/cifar100-png.tar.gz),$(abspath $(SHARED_DATA)/cifar100-png.tar.gz),data)
DOWNLOAD := $(if $(wildcard $(SHARED_DATA)/cifar10-jpeg.tar.gz),,dataset.download=true)
# Seeds of every cell, e.g. SEEDS=0,1,2 (the report shows mean +- std).
SEEDS ?= 0
# Where the sweeps' jobs run: empty (one after another in this process), local (in parallel
# on this machine's GPUs) or slurm (a SLURM job array); conf/hydra/launcher/*.yaml.
LAUNCHER ?=
SWEEP = $(BIN)/bgd-run -m experiment=$(1) budget=$(BUDGET) results_dir=$(RESULTS) seed=$(SEEDS) \
	trainer.progress=plain $(DOWNLOAD) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(ARGS)

.PHONY: help git-clean-check _install install test lint format demo functions fig2 fig2a fig2b table1 table2 table2_plus table3 fig3 paper bench bench-epoch bench-layout gpu-check gpu-check-dry device-bundle clean

help: ## List the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: BUDGET=paper|short|cpu|smoke (default cpu), ARGS='<hydra overrides>',"
	@echo "             LAUNCHER=local|slurm (sweeps in parallel; docs/scaling-out.md)"

# flock: two targets started side by side (make table2 & make table3) install only once.
$(STAMP): pyproject.toml
	@mkdir -p $(VENV)
	flock $(VENV).lock $(MAKE) --no-print-directory _install

_install:
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then exit 0; fi; \
	set -e; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"; \
	$(BIN)/python -m pip install --quiet -e ".[dev]"; \
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
	$(BIN)/bgd-run -m optimizer=nag,mbt_nag optimizer.lr=0.05 budget=cpu trainer.epochs=3 \
	  trainer.device=cpu results_dir=results/demo $(DOWNLOAD) $(ARGS)
	$(BIN)/bgd-report runs --results-dir results/demo

functions: $(STAMP) ## The deterministic experiments (Examples 3.6/3.7, Mexican hat, Fig. 2a)
	$(BIN)/bgd-run experiment=functions budget=$(BUDGET) results_dir=$(RESULTS) $(ARGS)

table1: $(STAMP) ## Table 1: found lr for 7 batch sizes x 9 start rates (search only)
	$(call SWEEP,table1)
	$(BIN)/bgd-report table1 --results-dir $(RESULTS)

table2: $(STAMP) ## Table 2: 8 baselines x 9 rates + MBT-GD/MMT/NAG, ResNet18 CIFAR-10
	$(call SWEEP,table2)
	$(BIN)/bgd-report table2 --results-dir $(RESULTS)

table2_plus: $(STAMP) ## Table 2 + today's lr-free optimizers, clean and paper protocols, 3 seeds
	$(call SWEEP,table2_plus)
	$(BIN)/bgd-report table2_plus --results-dir $(RESULTS)

table3: $(STAMP) ## Table 3: MBT-MMT/NAG on 5 models x CIFAR-10/100
	$(call SWEEP,table3)
	$(BIN)/bgd-report table3 --results-dir $(RESULTS)

fig2: $(STAMP) ## Figure 2: (a) Mexican hat + examples, (b) Two-way GD on ResNet18 full batch
	$(BIN)/bgd-run experiment=fig2 budget=$(BUDGET) results_dir=$(RESULTS) $(DOWNLOAD) $(ARGS)

fig3: $(STAMP) ## Figure 3: lr per epoch of MBT-MMT/NAG (ResNet18 runs of Table 3)
	$(call SWEEP,fig3)
	$(BIN)/bgd-report fig3 --results-dir $(RESULTS)

# Committed results must come from a clean commit: run folders record git_dirty, and the
# report flags them. Warn (do not fail) before hours of training start.
git-clean-check:
	@if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then \
	  echo "WARNING: the git tree has uncommitted changes: every run of this target will be" \
	       "recorded as <commit>+dirty and the tables will say so. Commit first for results" \
	       "that a commit reproduces." >&2; \
	fi

paper: git-clean-check table1 table2 table3 fig2 fig3 ## Every table and figure at BUDGET
	$(BIN)/bgd-report all --results-dir $(RESULTS)

bench: $(STAMP) ## Benchmarks: MBT search vs the authors'-style one, MBT-NAG vs NAG epochs
	$(BIN)/python scripts/bench_mbt.py $(ARGS)

bench-epoch: $(STAMP) ## Epochs: authors' DataLoader+PIL vs ours (fp32/bf16/compiled, NAG/MBT-NAG)
	$(BIN)/python scripts/bench_epoch.py --data $(BGD_CIFAR10_ROOT) $(ARGS)

bench-layout: $(STAMP) ## CPU training step: NCHW (the safe default) vs channels_last
	$(BIN)/python scripts/bench_layout.py $(ARGS)

# gpu-check writes into GPU_OUT. OFFLINE=1: a bare GPU machine without registries (docs/gpu.md):
# the machine's PY (python3) with the wheels of .whl and the data of .data (make device-bundle).
GPU_OUT ?= results/bench
OFFLINE ?=
OFFLINE_ON := $(filter 1 yes true,$(OFFLINE))
PY ?= $(if $(OFFLINE_ON),python3,$(BIN)/python)

gpu-check: $(if $(OFFLINE_ON),,$(STAMP)) ## On a GPU: gpu tests, smoke run, CUDA benches (~7 min); OFFLINE=1 PY=python3: docs/gpu.md
	OFFLINE=$(if $(OFFLINE_ON),1,0) PY=$(PY) GPU_OUT=$(GPU_OUT) scripts/gpu_check.sh

device-bundle: ## Wheels (.whl), CIFAR-10 (.data) for an offline GPU machine, and the dry run's stand-in
	PYTHON=$(PYTHON) SHARED_DATA=$(SHARED_DATA) scripts/device_bundle.sh

# The stand-in image's Python, its own wheels, no .venv and no registry: the GPU machine's path.
gpu-check-dry: ## gpu-check's offline path on this CPU at toy size (after make device-bundle)
	PIP_NO_INDEX=1 DRY=1 PY=.gpu-image/bin/python WHEELS=.gpu-image/whl \
	  GPU_OUT=results/gpu-check-dry scripts/gpu_check.sh

clean: ## Remove caches (not results, not .venv)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
