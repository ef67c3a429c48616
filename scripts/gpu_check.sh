#!/usr/bin/env bash
# Issue 14's GPU check, in one go, on a machine with one CUDA GPU (the device tool's H200):
#   1. make test-gpu (the `gpu` tests) and the packing exactness tests on that machine's libraries;
#   2. the bench's training configurations on the OLMo-1B shape (ftdyn vs transformers.Trainer);
#   3. the evaluation bench (label scoring, generation: batched vs per-example);
#   4. one real ftdyn job on the 1B shape (random weights), evaluation before and after;
#   5. the torch.compile configurations, last (each compiles for ~1 min).
# Logs and JSON lines go under $OUT (default ./gpu-check): versions.txt, test-gpu.log, bench.jsonl,
# bench.log, job.log. Every step has its own time limit and a failed step does not stop the
# next, so a run cut short still returns what it measured. Total <= ~9.5 min (STEP_* below).
#
# Device tool (prepare on the CPU machine first: bash scripts/gpu_wheels.sh):
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
export FTDYN_CACHE=${FTDYN_CACHE:-/tmp/ftdyn-gpu-cache} FTDYN_OUT=${FTDYN_OUT:-/tmp/ftdyn-gpu-out}

# Python: the project's venv where there is one, else the image's python3 plus the carried wheels.
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || echo "wheel install failed" >&2
    export PYTHONPATH=/tmp/site
  fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
STAND_IN=/tmp/olmo1b-shape
# OLMo-1B's real architecture and shape, random weights (python -m ftdyn.models.stand_ins): its final checkpoint
# (revision main); forgetting on tinyworld's held-out text (model.text.path=null: no wikitext offline)
JOB="model=olmo1b model.local_dir=$STAND_IN model.text.path=null trainer=gpu task=syn_nli task.train_size=1000
     task.eval_size=300"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log its status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  echo "[gpu_check] $name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt" >&2
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers, lightning, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda);
print('transformers', transformers.__version__, 'lightning', lightning.__version__, 'peft', peft.__version__)"
} > "$OUT/versions.txt" 2>&1

if [ -x .venv/bin/python ]; then
  step test-gpu 170 make test-gpu > "$OUT/test-gpu.log" 2>&1
else  # what make test-gpu runs, without the venv step
  step test-gpu 170 $PY -m pytest -q -m gpu tests/test_gpu.py tests/test_packing.py > "$OUT/test-gpu.log" 2>&1
fi
step packing-tests 40 $PY -m pytest -q -m "not slow" tests/test_packing.py >> "$OUT/test-gpu.log" 2>&1

BENCH="$PY -m ftdyn.bench --preset olmo1b-shape --threads 0"
step bench-train 150 $BENCH --sections train \
  --configs trainer,ftdyn-padded,ftdyn,ftdyn-bf16-true,trainer-b128,ftdyn-b128 >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
step bench-eval 60 $BENCH --sections eval >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
step stand-in 60 $PY -m ftdyn.models.stand_ins olmo1b "$STAND_IN" >> "$OUT/job.log" 2>&1
step job 120 $BENCH --sections job --job-configs job-fast --job-args "$JOB" >> "$OUT/bench.jsonl" 2>> "$OUT/job.log"
step bench-compile 150 $BENCH --sections train --configs ftdyn-compile,ftdyn-b128-compile \
  >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"
cat "$OUT/steps.txt" "$OUT/bench.jsonl"
