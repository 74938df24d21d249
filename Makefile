# kgcode: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Pinned CPU build of torch: an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO_KG := $(CURDIR)/.cache/demo-kg

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint bench clean

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

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --timeout=900

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
