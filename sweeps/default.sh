#!/usr/bin/env bash
# The embedded default study (`make run`): every checkpoint of the tiny ladder x {syn_nli,
# syn_para}, full SFT, evaluated before (4-shot) and after (zero-shot).
#
# Grid: 6 checkpoints x 2 tasks = 12 jobs, two at a time (joblib launcher, one torch thread
# each: a model this small is bound by per-op overhead, so two single-thread jobs run at twice
# the throughput of one two-thread job). Cost on a 2-core CPU: the ladder build, once, ~4 min
# (cached under $FTDYN_CACHE); then 6 rounds of 2 jobs x ~25 s = ~2.5-3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
dir=${FTDYN_OUT:-outputs}/sweeps/default-$(date +%Y%m%d-%H%M%S)
"$PY" -m ftdyn.ladder   # build the ladder first, with every core, before jobs fan out
"$PY" -m ftdyn.train -m ckpt=range task=syn_nli,syn_para method=sft \
  hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 hydra.sweep.dir="$dir" "$@"
"$PY" -m ftdyn.report "$dir"
