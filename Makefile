# The two set-up commands: `make run` (the embedded default study) and `make test`.
# Both create the Python environment in .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: run test test-fast test-gpu test-scale bench env study study-name figures clean

# Named studies are sweeps/experiment/<name>.yaml (docs/studies.md); `_`-files are shared bases.
STUDIES := $(filter-out _%,$(basename $(notdir $(wildcard sweeps/experiment/*.yaml))))
STUDY_DIR = $(or $(FTDYN_OUT),outputs)/studies/$(NAME)

# The default study (sweeps/experiment/default.yaml) and its report, which prints the results last.
run: NAME = default
run: study

# make study NAME=<name> [ARGS="<overrides>"]: build the ladder first, with every core, so the
# jobs do not race to build it; run the grid; then the report, even when some jobs failed (it
# lists them, and the target fails after it). ARGS go to the jobs: e.g. ARGS="task.train_size=500",
# or the cluster's launch profile (sweeps/launch/slurm.yaml): ARGS="launch=slurm hydra.launcher.partition=gpu".
study: study-name $(VENV)/.installed
	$(PY) -m ftdyn.pretrain +experiment=$(NAME) $(filter model=% model.%,$(ARGS))
	status=0; $(PY) -m ftdyn.train -m +experiment=$(NAME) $(ARGS) || status=$$?; \
	$(PY) -m ftdyn.report $(STUDY_DIR) --out $(STUDY_DIR)/report && exit $$status

study-name:
	@test -f "sweeps/experiment/$(NAME).yaml" || { echo "make study NAME=<name>: one of $(STUDIES)" >&2; exit 2; }

# Refresh the tracked docs/figures/<name>/ from the studies' reports (a study never writes there).
# Every study with a docs/figures/ folder, or NAME=<name> for one (a new one too); run it first.
FIGURE_STUDIES = $(or $(NAME),$(notdir $(wildcard docs/figures/*)))
figures:
	@for name in $(FIGURE_STUDIES); do \
	  report=$(or $(FTDYN_OUT),outputs)/studies/$$name/report; \
	  if ls $$report/*.png >/dev/null 2>&1; then \
	    mkdir -p docs/figures/$$name && rm -f docs/figures/$$name/*.png && cp $$report/*.png docs/figures/$$name/ \
	      && echo "docs/figures/$$name/ <- $$report"; \
	  else echo "docs/figures/$$name/ kept: no figures in $$report (make study NAME=$$name first)"; fi; \
	done

# Tests by marker (pyproject.toml). The tests set their own environment (tests/conftest.py),
# whatever the shell holds. pytest exits 5 when a selection holds no test; every selection here
# holds some (without a CUDA device test-gpu's are collected and skipped: exit 0).
test: $(VENV)/.installed  ## the layers contract, then the whole CPU suite, what CI runs: all but `gpu` and `scale` (<= 15 min on 2 cores)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not gpu and not scale"

test-fast: $(VENV)/.installed  ## what you run while working: no `slow`, `gpu` or `scale` (<= 3 min on 2 cores)
	$(PY) -m pytest -q -m "not slow and not gpu and not scale"

test-gpu: $(VENV)/.installed  ## the `gpu` tests; each skips itself without a CUDA device
	$(PY) -m pytest -q -m gpu

test-scale: $(VENV)/.installed  ## real-size catalogue models (OLMo-1B's shape): opt-in, ~10 min and <= 10 GB
	$(PY) -m pytest -q -m scale

# ftdyn's training path against transformers.Trainer, evaluation batched against a per-example
# loop, and a whole job with the fast path on and off: one JSON line each (docs/performance.md).
# BENCH="--preset olmo1b-shape" on a GPU; the tiny default runs on the CPU in under a minute.
bench: $(VENV)/.installed
	$(PY) -m ftdyn.bench $(BENCH)

env: $(VENV)/.installed

# The CPU build of torch goes in first, so the dependency resolver keeps it.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (once): the CPU build of torch, then ftdyn and its dependencies"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -qq --upgrade pip
	@$(PY) -m pip install -qq "torch==2.13.0" || $(PY) -m pip install -qq "torch>=2.6"
	@$(PY) -m pip install -qq -e ".[dev]"
	@touch $@

clean:
	rm -rf outputs
