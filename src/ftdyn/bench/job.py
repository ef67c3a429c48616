"""Whole jobs (`--sections job` of `python -m ftdyn.bench`): `ftdyn.train.train` end to end
(evaluation before, fine-tuning, evaluation after) with the fast path as configured by default
and with packing off; each stage's evaluation time is the job's own run fact (`eval_<stage>_s`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ftdyn.bench.workload import Preset, device_name, emit, sync

log = logging.getLogger(__name__)


def job_section(preset: Preset, args, device: str) -> list[dict]:
    """One whole job with the fast path (the defaults) and one with packing off, in that order
    (the first pays any cold cache, so the order does not favour the fast path)."""
    from ftdyn import config as C
    from ftdyn.config.compose import compose_config
    from ftdyn.train import ensure_built, train

    overrides = args.job_args.split() or list(preset.job)
    if not overrides:
        log.warning("no job for preset %s: give --job-args", args.preset)
        return []
    ensure_built(C.to_typed(compose_config(overrides)).model)  # built once, outside the timed jobs
    lines, walls = [], {}
    configs = [(c, e) for c, e in (("job-fast", []), ("job-padded", ["trainer.packing=false"]))
               if not args.job_configs or c in args.job_configs]
    for config, extra in configs:
        with tempfile.TemporaryDirectory(prefix="ftdyn-bench-job-") as work:
            start = sync(device)
            facts = train(compose_config([*overrides, *extra, "trainer.checkpoint_every_n_steps=0"]), Path(work) / "job")
            walls[config] = sync(device) - start
        evals = {stage: facts.get(f"run/run/eval_{stage}_s", 0.0) for stage in ("before", "after")}
        line = {"bench": "job", "preset": args.preset, "config": config, "device": device_name(device),
                "overrides": [*overrides, *extra], "wall_s": round(walls[config], 2),
                "eval_before_s": evals["before"], "eval_after_s": evals["after"],
                "train_and_load_s": round(walls[config] - sum(evals.values()), 2),
                "train_steps": facts.get("run/run/train_steps"), "train_tokens": facts.get("run/run/train_tokens"),
                "ratio_to_padded": None}
        lines.append(line)
    for line in lines:
        if "job-padded" in walls:
            line["ratio_to_padded"] = round(walls["job-padded"] / walls[line["config"]], 3)
        emit(line)
    return lines
