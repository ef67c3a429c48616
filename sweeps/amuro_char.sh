#!/usr/bin/env bash
# Amuro & Char (Sun & Dredze 2024) on the tiny ladder: what does fine-tuning add at each stage of
# pre-training? Checkpoints x {syn_nli, syn_para, syn_summ} x SFT; each job is scored as the base
# checkpoint 4-shot (stage before) and fine-tuned zero-shot (stage after) on its in-domain and OOD
# sets, on the other two tasks' test sets (cross-task, for MRC) and in all three prompt formats.
#
# Grid: 3 checkpoints (40: before the ladder knows its world, 160: learning it, 600: final)
# x 3 tasks = 9 jobs, two at a time. Cut from the paper's shape to fit 15 minutes on 2 cores:
# 3 of the 6 checkpoints and eval_size 100 per set; training as the default study (2000
# examples, 250 SFT steps: with 1000, syn_para does not learn at all).
# Cost, measured on this 2-core CPU with the ladder built: see the README's study table.
#
# eval.cross_tasks lists the tasks whose in-domain sets every job is also scored on (a job skips
# its own task; the cross-task sets take the job's eval_size).
source "$(dirname "$0")/study.sh"
run_study amuro_char ckpt.step=40,160,600 task=syn_nli,syn_para,syn_summ method=sft prompt=all_formats \
  "eval.cross_tasks=[syn_nli,syn_para,syn_summ]" task.eval_size=100 "$@"
