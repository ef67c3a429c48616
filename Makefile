# The two set-up commands: `make run` (the embedded default study) and `make test`.
# Both create the Python environment in .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: run test test-all test-gpu env study clean

run: $(VENV)/.installed
	bash sweeps/default.sh

study: $(VENV)/.installed
	bash sweeps/$(NAME).sh

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "slow or not slow"

test-gpu: $(VENV)/.installed
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
