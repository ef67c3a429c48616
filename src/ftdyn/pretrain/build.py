"""The one pre-training helper: build a model's checkpoints once, under a lock, manifest last.

Every checkpoint set ftdyn pre-trains itself (a tiny ladder, `ftdyn.pretrain.ladder`; the
two-Gaussians MLP, `ftdyn.pretrain.gaussians`) is built the same way:

- `ensure_built(root, build)`: if `root/manifest.json` exists the build is done. Otherwise, under
  a lock beside `root` (the jobs of a sweep that all want it wait for the first), `build` writes
  into `<root>.building/` and returns the manifest; the directory is renamed to `root` and the
  manifest written last, atomically. A build that died leaves no manifest, so it is redone.
- `pretrain(module, data, steps, callbacks)`: the one pre-training Trainer, on the CPU, no logger,
  no training checkpoints (a build is redone, not resumed).
- `SaveAtSteps`: saves a checkpoint when the optimiser step count reaches each listed step, and
  the tokens seen by then (for a language model).
- `Progress`: a log line every 14 s of training, so a build of minutes says how far it is.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L

from ftdyn.files import file_lock, write_json_atomic

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 14.0  # a cold build takes minutes: say how far it is this often (+1 step, < 15 s)


def ensure_built(root: Path, build: Callable[[Path], dict]) -> Path:
    """`root`, built by `build(work_dir) -> manifest` if its manifest is missing (module docstring)."""
    if (root / "manifest.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.with_suffix(".lock")):
        if (root / "manifest.json").exists():  # another process built it meanwhile
            return root
        started = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)  # an unfinished earlier build
        work = root.with_name(root.name + ".building")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        manifest = build(work)
        work.rename(root)
        write_json_atomic(root / "manifest.json", {**manifest, "build_seconds": round(time.monotonic() - started, 1)})
        log.info("built %s in %s", root, duration(time.monotonic() - started))
    return root


def pretrain(module: L.LightningModule, data: L.LightningDataModule, steps: int,
             callbacks: Sequence[L.Callback]) -> None:
    """Train `module` from scratch for `steps` optimiser steps on the CPU (the recipe's own settings)."""
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, data)


class SaveAtSteps(L.Callback):
    """Call `save(module, step)` when the optimiser step count reaches each of `steps`, once."""

    def __init__(self, steps: Sequence[int], save: Callable[[L.LightningModule, int], None]):
        self.steps, self.save = set(steps), save
        self.tokens: dict[int, int] = {}  #: tokens seen by each saved step (0 for a model that counts none)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step in self.steps and step not in self.tokens:
            self.save(module, step)
            self.tokens[step] = getattr(module, "tokens_seen", 0)


def duration(seconds: float) -> str:
    """`45 s` under two minutes, else `3 min`: what a person reads at a glance."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def progress_line(label: str, step: int, total: int, elapsed: float, training: float) -> str:
    """`ladder tiny: step 120/600 (20%), 45 s elapsed, ~3 min left`: the time left extrapolates the
    training seconds per step so far (`training`: seconds since the first step began)."""
    left = training / step * (total - step) if step else float("nan")
    estimate = f", ~{duration(left)} left" if step else ""
    return f"{label}: step {step}/{total} ({100 * step / total:.0f}%), {duration(elapsed)} elapsed{estimate}"


class Progress(L.Callback):
    """Logs `progress_line` every `every_s` seconds of pre-training: a log line, not a progress bar,
    so it reads the same in a terminal, a pipe and a job log. `clock` is injectable for tests."""

    def __init__(self, label: str, total: int, started: float, every_s: float = PROGRESS_EVERY_S,
                 clock=time.monotonic):
        self.label, self.total, self.started, self.every_s, self.clock = label, total, started, every_s, clock
        self.fit_started = self.last = started

    def on_train_start(self, trainer, module):
        self.fit_started = self.last = self.clock()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = self.clock()
        if now - self.last >= self.every_s or trainer.global_step == self.total:
            self.last = now
            log.info(progress_line(self.label, trainer.global_step, self.total, now - self.started,
                                   now - self.fit_started))
