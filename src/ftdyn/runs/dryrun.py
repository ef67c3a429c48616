"""`+dry=true` on a multirun: the jobs the sweep would launch, their status and cost, and nothing run.

Hydra's launcher calls the task function once per job, possibly in other processes, so a job
cannot print one list for the whole sweep. This Hydra callback runs once, before the sweeper
launches anything: it expands the sweep exactly as Hydra's basic sweeper does
(`BasicSweeper.split_arguments`), composes each job's config, and exits. Nothing is written:
not the sweep directory, not the run store.

    python -m ftdyn.train -m ckpt=range task=syn_nli,syn_para +dry=true

Cost: optimiser steps per job from the config (train examples, batch size, epochs, replay and
max_steps, per method phase) and, where the run store holds done jobs of the same model,
their measured wall seconds per training step (evaluation included).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ftdyn import config as C
from ftdyn.config import keys
from ftdyn.config.choices import Trains
from ftdyn.data.batches import ReplayPlan
from ftdyn.methods.plan import phase_steps, plan
from ftdyn.runs import results, store


class DryRun(Callback):
    """Registered in `conf/train.yaml` under `hydra.callbacks`; idle unless `dry` is set."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.get("dry", False):
            return
        print_jobs(job_overrides(config), kwargs.get("config_name") or "train")
        sys.exit(0)


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in launch order, as the basic sweeper expands them."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def planned_steps(run: C.TrainConfig) -> int:
    """Optimiser steps of every phase of the job, as `ftdyn.methods.fit` will take them."""
    total = 0
    for phase in plan(run.method):
        replay = run.replay.rate if phase.trains != Trains.head else 0.0  # a probe phase trains without replay
        total += phase_steps(phase, len(ReplayPlan(run.task.train_size, run.method.batch_size, replay)), run)
    return total


def seconds_per_step(store_root: Path, model: str) -> tuple[float, int] | None:
    """Median wall seconds per training step over done jobs of `model` in the store, and their count."""
    rates = []
    for done in store_root.glob("*/done"):
        rows = [r for r in results.read_rows([done.parent / "results.jsonl"]) if r["stage"] == "run"]
        facts = {r["metric"]: r["value"] for r in rows if r["model"] == model}
        if facts.get("train_steps") and "resumed_from_step" not in facts:
            rates.append(facts["wall_s"] / facts["train_steps"])
    return (statistics.median(rates), len(rates)) if rates else None


def print_jobs(all_overrides: list[list[str]], config_name: str) -> None:
    root = store.store_root()
    counts: dict[str, int] = {}
    todo_steps, timing = 0, None
    for num, overrides in enumerate(all_overrides):
        shown = " ".join(o for o in overrides if not o.lstrip("+").startswith("dry="))
        try:
            cfg, _ = store.pop_flags(compose(config_name, overrides=overrides))
            run = C.to_typed(cfg)
        except (HydraException, OmegaConfBaseException, C.ConfigError) as err:  # listed, not fatal: the sweep
            # would record the job as failed
            counts["invalid"] = counts.get("invalid", 0) + 1
            print(f"[{num}] invalid          {shown}\n      {str(err).splitlines()[-1].strip()}")
            continue
        key, steps = keys.run_key(run), planned_steps(run)
        state = store.status(root / key)
        counts[state] = counts.get(state, 0) + 1
        if state != "done":
            todo_steps += steps
            timing = timing or seconds_per_step(root, run.model.name)
        print(f"[{num}] {key} {state:<7} {steps:>6} steps  {shown}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(all_overrides)} jobs ({summary}); to run: {todo_steps} train steps")
    if timing:
        rate, n_jobs = timing
        print(f"cost: ~{rate:.3g} s/step measured on {n_jobs} done jobs in {root} -> "
              f"~{math.ceil(rate * todo_steps)} s on one process")
    else:
        print(f"cost: no done jobs in {root} to time; steps are the only estimate")
    print("dry run: nothing launched (done jobs are skipped when run; +force=true runs them again)")
