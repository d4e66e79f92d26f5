# `make test` / `make bench` on a fresh machine: a local .venv holding the locked environment, then the command.
#
# requirements.lock pins every package the tests, the benchmarks and training use (with hashes), for CPython 3.11
# on x86_64 Linux with the CPU build of torch (torch==2.13.0+cpu, published at https://download.pytorch.org/whl/cpu;
# where it is not on pip's find-links, pass the index: `make test UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu`).
# It is installed with uv (seconds) or, with INSTALLER=pip, with plain pip (minutes). `make lock` refreshes it;
# `make test-latest` runs the suite on the newest releases in a separate environment, to meet upstream drift on
# purpose before a `make lock`.
PYTHON ?= python3
VENV ?= .venv
LOCK := requirements.lock
INSTALLER ?= uv
TORCH_LOCK ?= torch==2.13.0+cpu
# allRank's listMLE is a bench and test baseline, but it pins torch <= 1.8: it is locked on its own, without its
# dependencies (the loss function needs none but torch), and the whole lock is installed with --no-deps.
ALLRANK_LOCK ?= allRank==1.4.3
LATEST_VENV ?= .venv-latest

UV = $(VENV)/bin/uv
# uv does not read pip's configuration: hand it the wheel folders pip is configured with, if any.
PIP_WHEEL_DIRS := $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
FIND_LINKS = $(foreach dir,$(PIP_WHEEL_DIRS),--find-links $(dir))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# uv itself comes from the lock, hash-checked, through pip.
$(UV): $(LOCK) | $(VENV)/bin/python
	awk '/^uv==/{p=1; print; next} p && /^ /{print; next} {p=0}' $(LOCK) > $(VENV)/uv.lock
	$(VENV)/bin/pip install -q --no-deps --require-hashes -r $(VENV)/uv.lock
	touch $@

ifeq ($(INSTALLER),pip)
$(VENV)/.installed: $(LOCK) pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q --no-deps --require-hashes -r $(LOCK)
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@
else
$(VENV)/.installed: $(LOCK) pyproject.toml $(UV)
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps --require-hashes $(FIND_LINKS) -r $(LOCK)
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@
endif

.PHONY: install test test-thorough test-latest bench bench-quick lock
install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -n auto

test-thorough: $(VENV)/.installed
	HYPOTHESIS_PROFILE=thorough $(VENV)/bin/python -m pytest -n auto

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	$(VENV)/bin/python -m bench --quick $(BENCH_ARGS)

lock: $(UV)
	printf '%s\n' "$(TORCH_LOCK)" "setuptools>=77" uv | $(UV) pip compile pyproject.toml - --extra dev \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(FIND_LINKS) \
		--custom-compile-command "make lock" --quiet -o $(LOCK)
	echo "$(ALLRANK_LOCK)" | $(UV) pip compile - --no-deps --generate-hashes --no-header --quiet >> $(LOCK)

# The newest release of every package, in an environment of its own. torch stays the locked CPU build unless
# TORCH_LATEST says otherwise (`make test-latest TORCH_LATEST=torch`: PyPI's newest, a CUDA build of several GB).
TORCH_LATEST ?= $(TORCH_LOCK)
test-latest: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST_VENV)
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --upgrade $(FIND_LINKS) -e ".[dev]" "$(TORCH_LATEST)"
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --upgrade --no-deps $(ALLRANK_LOCK)
	$(LATEST_VENV)/bin/python -m pytest -n auto
