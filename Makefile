# The two set-up commands: `make run` (the embedded default study) and `make test`.
# Both create the Python environment in .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: run test test-fast test-gpu env study clean

run: $(VENV)/.installed
	bash sweeps/default.sh

study: $(VENV)/.installed
	bash sweeps/$(NAME).sh

# Tests by marker (pyproject.toml). The tests set their own environment (tests/conftest.py),
# whatever the shell holds. pytest exits 5 when a selection holds no test; every selection here
# holds some (without a CUDA device test-gpu's are collected and skipped: exit 0).
test: $(VENV)/.installed  ## the whole CPU suite, what CI runs: all but `gpu` (<= 15 min on 2 cores)
	$(PY) -m pytest -q -m "not gpu"

test-fast: $(VENV)/.installed  ## what you run while working: no `slow`, no `gpu` (<= 3 min on 2 cores)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-gpu: $(VENV)/.installed  ## the `gpu` tests; each skips itself without a CUDA device
	$(PY) -m pytest -q -m gpu

env: $(VENV)/.installed

# The CPU build of torch goes in first, so the dependency resolver keeps it.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.2"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

clean:
	rm -rf outputs
