#!/usr/bin/env bash
# Run on a machine with pip and the package index, before a GPU session (issue 14): fetch into
# .whl/ (git-ignored; the device tool's `carry` takes it along) the Python packages ftdyn needs that the device
# image lacks (its list: the device tool's KINDS.md; it has torch, transformers, lightning, peft,
# pandas, torchmetrics). scripts/gpu_check.sh installs them there. Versions: those the CPU suite
# runs on. Two are source-only on PyPI and pure Python: built into wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PY=${PY:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 nltk==3.10.4
$PY -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 rouge_score==0.1.2
ls -la .whl
