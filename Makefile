# selfgen: `make test` (what CI runs) and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_TEST := $(VENV)/.installed-test
STAMP_DEMO := $(VENV)/.installed

.PHONY: test demo venv clean benchmark

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@ $(STAMP_DEMO)

venv: $(STAMP_TEST)

test: $(STAMP_TEST)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

demo: $(STAMP_DEMO)
	HF_HUB_OFFLINE=1 $(BIN)/selfgen demo

benchmark: $(STAMP_TEST)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
