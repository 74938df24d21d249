# kgcode: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Pinned CPU build of torch: an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO_KG := $(CURDIR)/.cache/demo-kg
DEMO_MODEL := $(CURDIR)/.cache/demo-model
KGCODE_DATA_DIR ?= $(CURDIR)/../shared/data
CODIESP := $(KGCODE_DATA_DIR)/codiesp

export HF_HUB_OFFLINE := 1
export KGCODE_DATA_DIR
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-model test lint bench clean

$(STAMP): pyproject.toml
	@echo "==> [1/3] creating $(VENV) (first run only; installing takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	@echo "==> [2/3] installing $(TORCH) (CPU build)"
	$(BIN)/python -m pip install --progress-bar on $(TORCH)
	@echo "==> [3/3] installing kgcode and its dev tools"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@echo "==> building the knowledge graph (ICD-10-CM, ICD-9-CM, GEMs, DO, Mondo; ~15 s)"
	$(BIN)/kgcode kg build --out $(DEMO_KG)
	@echo "==> counts"
	$(BIN)/kgcode kg stats --kg $(DEMO_KG)
	@echo "==> a few codes with their neighbours"
	$(BIN)/kgcode kg show E11.9 --kg $(DEMO_KG)
	$(BIN)/kgcode kg show E11 --kg $(DEMO_KG)
	$(BIN)/kgcode kg show A15.8 --kg $(DEMO_KG)
	$(BIN)/kgcode kg show ICD9CM:250.00 --kg $(DEMO_KG)
	$(BIN)/kgcode kg search "tuberculosis of lung" --limit 5 --kg $(DEMO_KG)
	@$(MAKE) --no-print-directory demo-model
	@echo "==> coding a sample note (docs/sample_note.txt) with the demo coder"
	$(BIN)/kgcode predict --model $(DEMO_MODEL) --format text --top-k 8 --evidence 1 docs/sample_note.txt

# The demo coder is trained once (configs/demo.yaml: a lighter configuration than the benchmarked
# configs/coder.yaml, see the README) and reused until its config changes.
demo-model: $(DEMO_MODEL)/config.json

$(DEMO_MODEL)/config.json: configs/demo.yaml
	@test -d $(CODIESP)/train || { echo "kgcode: error: no CodiEsp data in $(CODIESP) (set KGCODE_DATA_DIR)"; exit 2; }
	@echo "==> training the demo coder on CodiEsp train, selected on dev (first run only: about 10 minutes"
	@echo "    on 2 cores, much of it embedding code texts and note sentences once; later runs reuse it)"
	$(BIN)/kgcode -v train --train $(CODIESP)/train --dev $(CODIESP)/dev --config configs/demo.yaml \
		--kg $(DEMO_KG) --out $(DEMO_MODEL)

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --timeout=900

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
