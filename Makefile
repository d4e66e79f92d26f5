# `make test` / `make bench` on a fresh machine with Python 3.10+: a local .venv, then the command.
PYTHON ?= python3
VENV ?= .venv
# The CPU build installs in seconds where it lies on local disk; override for a CUDA machine,
# e.g. `make test TORCH_SPEC=torch` (or TORCH_SPEC= to keep an installed torch).
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py $(VENV)/bin/python
	$(if $(TORCH_SPEC),$(PIP) install -q "$(TORCH_SPEC)")
	$(PIP) install -q -e ".[dev,train,bench,sentence-transformers]"
	# allRank's listMLE as a bench baseline: it pins torch <= 1.8, so without its dependencies
	# (bench runs only its loss function; see load_allrank_listmle in bench/impls.py)
	$(PIP) install -q --no-deps allRank==1.4.3
	touch $@

.PHONY: install test test-thorough bench bench-quick
install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -n auto

test-thorough: $(VENV)/.installed
	HYPOTHESIS_PROFILE=thorough $(VENV)/bin/python -m pytest -n auto

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	$(VENV)/bin/python -m bench --quick $(BENCH_ARGS)
