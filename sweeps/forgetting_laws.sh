#!/usr/bin/env bash
# Kalajdzievski's forgetting laws on the tiny ladder: how do the fine-tuning loss L_ft and the
# forgetting L_f (forget_ce: cross-entropy to the base model's next-token distribution on held-out
# pre-training text) move together, and how do both scale with trainable parameters P (LoRA rank)
# and steps N? LoRA with rank-stabilised scaling (as the paper) on syn_nli at the final checkpoint,
# evaluated every 10 optimiser steps (stage=step_N rows).
#
# Grid: 7 ranks (1..64; P from ~10k to ~655k of the model's ~954k) = 7 jobs, two at a time.
# Cost (estimated, 2-core CPU, ladder already built): 250 steps (~15 s) + 25 in-loop evaluations
# of the held-out text against the base model (~1.5 s each) + before/after evaluation (~15 s)
# = ~70 s a job -> 7 x 70 s / 2 parallel = ~4-5 min.
source "$(dirname "$0")/study.sh"
run_study forgetting_laws task=syn_nli method=lora method.rank=1,2,4,8,16,32,64 method.rslora=true \
  eval.every_n_steps=10 "$@"
