#!/usr/bin/env bash
# Replay (rehearsal of pre-training text, as in mix-cd): does mixing a share of the model's own
# pre-training stream into every fine-tuning batch keep what it knew (forget_kl after, the
# world-facts probe) without costing what it learns (in-domain gain, after - before)?
#
# Grid: 4 replay rates {0, 0.05, 0.1, 0.2} x SFT x {syn_nli, syn_para} x 2 checkpoints (160, 600)
# = 16 jobs, two at a time.
# Cost (estimated, 2-core CPU, ladder already built): an SFT job ~25-50 s in a pair (README's
# default study: 12 jobs in ~4 min); replay rows lengthen a step by up to the replay share
# -> 16 jobs ~6-7 min.
source "$(dirname "$0")/study.sh"
run_study replay ckpt.step=160,600 task=syn_nli,syn_para method=sft replay.rate=0,0.05,0.1,0.2 "$@"
