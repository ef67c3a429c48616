"""Whole jobs (`--sections job` of `python -m ftdyn.bench`): `ftdyn.train.train` end to end
(evaluation before, fine-tuning, evaluation after) with the fast path as configured by default
and with packing off, the evaluation time of each stage timed apart."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from ftdyn.bench.workload import Preset, device_name, emit, sync
from ftdyn.pretrain import ladder

log = logging.getLogger(__name__)


class _StageTimer:
    """Wraps `ftdyn.train.evaluate_stage` to add up the seconds each stage's evaluation takes."""

    def __init__(self, measure, device: str):
        self.measure, self.device, self.seconds = measure, device, {}

    def __call__(self, model, stage, **kwargs):
        start = sync(self.device)
        rows = self.measure(model, stage=stage, **kwargs)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + sync(self.device) - start
        return rows


def job_section(preset: Preset, args, device: str) -> list[dict]:
    """One whole job with the fast path (the defaults) and one with packing off, in that order
    (the first pays any cold cache, so the order does not favour the fast path)."""
    from ftdyn import config as C
    from ftdyn import train as train_module
    from ftdyn.config.compose import compose_config

    overrides = args.job_args.split() or list(preset.job)
    if not overrides:
        log.warning("no job for preset %s: give --job-args", args.preset)
        return []
    run = C.to_typed(compose_config(overrides))
    if run.model.source == C.ModelSource.ladder:
        ladder.ensure(run.model)  # built once, outside the timed jobs
    lines, walls = [], {}
    configs = [(c, e) for c, e in (("job-fast", []), ("job-padded", ["trainer.packing=false"]))
               if not args.job_configs or c in args.job_configs]
    for config, extra in configs:
        timer = _StageTimer(train_module.evaluate_stage, device)
        train_module.evaluate_stage = timer
        try:
            with tempfile.TemporaryDirectory(prefix="ftdyn-bench-job-") as work:
                start = time.perf_counter()
                facts = train_module.train(compose_config([*overrides, *extra, "trainer.checkpoint_every_n_steps=0"]),
                                           Path(work) / "job")
                walls[config] = time.perf_counter() - start
        finally:
            train_module.evaluate_stage = timer.measure
        evals = sum(timer.seconds.values())
        line = {"bench": "job", "preset": args.preset, "config": config, "device": device_name(device),
                "overrides": [*overrides, *extra], "wall_s": round(walls[config], 2),
                "eval_before_s": round(timer.seconds.get("before", 0.0), 2),
                "eval_after_s": round(timer.seconds.get("after", 0.0), 2),
                "train_and_load_s": round(walls[config] - evals, 2),
                "train_steps": facts.get("run/run/train_steps"), "train_tokens": facts.get("run/run/train_tokens"),
                "ratio_to_padded": None}
        lines.append(line)
    for line in lines:
        if "job-padded" in walls:
            line["ratio_to_padded"] = round(walls["job-padded"] / walls[line["config"]], 3)
        emit(line)
    return lines
