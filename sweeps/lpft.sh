#!/usr/bin/env bash
# Tomihari & Sato (LP-FT from the NTK perspective) on the tiny ladder: full fine-tuning, LoRA,
# and their linear-probe-first variants LP-FT and LP-LoRA on the two classification tasks, with
# calibration (ECE / MCE over 15 bins, before and after temperature scaling fitted on validation),
# forgetting and OOD transfer, at a mid and the final checkpoint.
#
# Grid: 4 methods x 2 tasks x 2 checkpoints = 16 jobs, two at a time.
# Cost (measured for 10 of these jobs on one task: 3.5 min, README) -> ~21 s per job in a pair
# -> 16 jobs ~6 min on a 2-core CPU, ladder already built.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
name=lpft
dir=${FTDYN_OUT:-outputs}/studies/$name
"$PY" -m ftdyn.ladder
"$PY" -m ftdyn.train -m ckpt.step=160,600 task=syn_nli,syn_para method=sft,lora,lpft,lplora \
  hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 hydra.sweep.dir="$dir" "$@"
"$PY" -m ftdyn.report "$dir" --out "$dir/report"
mkdir -p "docs/figures/$name" && rm -f "docs/figures/$name"/*.png && cp "$dir"/report/*.png "docs/figures/$name/"
