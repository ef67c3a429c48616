#!/usr/bin/env bash
# Amuro & Char (Sun & Dredze 2024) on the tiny ladder: what does fine-tuning add at each stage of
# pre-training? Checkpoints x {syn_nli, syn_para, syn_summ} x SFT; each job is scored as the base
# checkpoint 4-shot (stage before) and fine-tuned zero-shot (stage after) on its in-domain and OOD
# sets, on the other two tasks' test sets (cross-task, for MRC) and in all three prompt formats.
#
# Grid: 3 checkpoints (40: before the ladder knows its world, 160: learning it, 600: final)
# x 3 tasks = 9 jobs, two at a time. Cut from the paper's shape to fit 15 minutes on 2 cores:
# 3 of the 6 checkpoints, train_size 1000 (125 SFT steps), eval_size 100 per set.
# Cost (estimated, 2-core CPU, ladder already built): a classification job ~40 s (3 formats x
# (3 sets + validation) x 2 stages, plus 2 cross-task sets), a syn_summ job ~90 s (greedy
# generation of every set in 3 formats) -> (40 + 40 + 90) s x 3 checkpoints / 2 parallel = ~5 min.
#
# eval.cross_tasks lists the tasks whose in-domain sets every job is also scored on (a job skips
# its own task; the cross-task sets take the job's eval_size).
source "$(dirname "$0")/study.sh"
run_study amuro_char ckpt.step=40,160,600 task=syn_nli,syn_para,syn_summ method=sft prompt=all_formats \
  "eval.cross_tasks=[syn_nli,syn_para,syn_summ]" task.train_size=1000 task.eval_size=100 "$@"
