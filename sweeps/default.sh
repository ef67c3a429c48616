#!/usr/bin/env bash
# The embedded default study (`make run`): every checkpoint of the tiny ladder x {syn_nli,
# syn_para}, full SFT, evaluated before (4-shot) and after (zero-shot).
# Grid: 6 checkpoints x 2 tasks = 12 jobs. Cost on a 2-core CPU: ~4 min to build the ladder
# the first time (cached under $FTDYN_CACHE), then ~20 s a job.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
dir=${FTDYN_OUT:-outputs}/sweeps/default-$(date +%Y%m%d-%H%M%S)
"$PY" -m ftdyn.train -m ckpt=range task=syn_nli,syn_para method=sft hydra.sweep.dir="$dir" "$@"
"$PY" -m ftdyn.report "$dir"
