#!/usr/bin/env bash
# Tomihari & Sato (LP-FT from the NTK perspective) on the tiny ladder: full fine-tuning, LoRA,
# and their linear-probe-first variants LP-FT and LP-LoRA on the two classification tasks, with
# calibration (ECE / MCE over 15 bins, before and after temperature scaling fitted on validation),
# forgetting and OOD transfer, at a mid and the final checkpoint.
#
# Grid: 4 methods x 2 tasks x 2 checkpoints = 16 jobs, two at a time.
# Cost (measured for 10 of these jobs on one task: 3.5 min, README) -> ~21 s per job in a pair
# -> 16 jobs ~6 min on a 2-core CPU, ladder already built.
source "$(dirname "$0")/study.sh"
run_study lpft ckpt.step=160,600 task=syn_nli,syn_para method=sft,lora,lpft,lplora "$@"
