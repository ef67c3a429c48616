"""How fast ftdyn trains and evaluates, against a plain `transformers.Trainer`, in one invocation.

    python -m ftdyn.bench                          # preset tiny, on the CPU (make bench)
    python -m ftdyn.bench --preset olmo1b-shape    # random weights of OLMo-1B's shape, on the GPU

`--sections train` (`ftdyn.bench.train`) runs ftdyn's training path and the Trainer on one
workload; `--sections eval` (`ftdyn.bench.eval`) times label-logit scoring and greedy generation
batched against a per-example loop; `--sections job` (`ftdyn.bench.job`) times whole jobs
(evaluation before, training, evaluation after) with the fast path on and off.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ftdyn.bench.eval import eval_section
from ftdyn.bench.job import job_section
from ftdyn.bench.train import train_section
from ftdyn.bench.workload import PRESETS
from ftdyn.config.compose import quiet_libraries


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ftdyn.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--sections", default="train,eval,job", help="comma list of train, eval, job")
    parser.add_argument("--configs", default="", help="comma list of training configurations (default: all)")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="device peak for MFU (H100/H200 bf16 dense)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--job-args", default="", help="overrides of the whole-job figure (space separated)")
    parser.add_argument("--job-configs", default="", help="comma list of job-fast, job-padded (default: both)")
    parser.add_argument("--steps", type=int, default=0, help="optimiser steps per configuration (0: the preset's)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed first steps (-1: the preset's)")
    parser.add_argument("--eval-examples", type=int, default=0, help="examples evaluated in batches (0: the preset's)")
    args = parser.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.job_configs = [c for c in args.job_configs.split(",") if c]
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    preset = dataclasses.replace(PRESETS[args.preset], **{k: v for k, v in (
        ("steps", args.steps), ("warmup", args.warmup), ("eval_examples", args.eval_examples)) if v > 0 or
        (k == "warmup" and v >= 0)})
    sections = args.sections.split(",")
    lines = []
    if "train" in sections:
        lines += train_section(preset, args, device)
    if "eval" in sections:
        lines += eval_section(preset, args, device)
    if "job" in sections:
        lines += job_section(preset, args, device)
    return lines


if __name__ == "__main__":
    main()
