"""Training checkpoints of a job's method phases, so a killed job resumes where it stopped.

Under the job directory, per phase of the method (`ftdyn.methods.plan`):

    checkpoints/<phase>/last.ckpt   every `trainer.checkpoint_every_n_steps` optimiser steps
                                    (Lightning's ModelCheckpoint): weights, optimizer, LR
                                    schedule, loop progress, callback state (in-loop rows)
    checkpoints/<phase>/end.ckpt    written, atomically, when the phase has finished

A re-run job restores a finished phase from `end.ckpt` without training it (an LP-FT job
killed during ft keeps its probed head), and resumes an unfinished one from `last.ckpt` through
`trainer.fit(ckpt_path=...)`. Batches continue where they stopped because the training data
starts at the restored step (`ftdyn.data.batches.ResumableBatches`). `prune` applies the
`trainer.keep` policy once the job is done.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class PhaseCheckpoints:
    """Where one phase of a job saves and finds its checkpoints; off when `every_n_steps` is 0."""

    def __init__(self, job_dir: Path, phase: str, every_n_steps: int):
        self.dir = job_dir / CHECKPOINTS / phase
        self.every = every_n_steps
        self.last, self.end = self.dir / "last.ckpt", self.dir / "end.ckpt"

    def callbacks(self) -> list[L.Callback]:
        if self.every <= 0:
            return []
        return [ModelCheckpoint(dirpath=self.dir, filename="last", save_top_k=0, save_last=True,
                                every_n_train_steps=self.every, enable_version_counter=False)]

    def finished(self) -> bool:
        return self.every > 0 and self.end.exists()

    def resume_path(self) -> Path | None:
        """`last.ckpt` if there is a readable one. A file cut short by a kill during its write is
        not a zip archive; it is set aside and the phase starts over rather than failing the job."""
        if self.every <= 0 or not self.last.exists():
            return None
        if not zipfile.is_zipfile(self.last):
            log.warning("unreadable checkpoint %s (cut short?): moved aside, phase starts from step 0", self.last)
            os.replace(self.last, self.last.with_suffix(".ckpt.corrupt"))
            return None
        return self.last

    def finish(self, trainer: L.Trainer) -> None:
        """Record the finished phase (weights, head, callback state) and drop its step checkpoint."""
        if self.every <= 0:
            return
        tmp = self.dir / ".end.ckpt.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.end)
            self.last.unlink(missing_ok=True)

    def restore_finished(self, module: L.LightningModule, callbacks: list[L.Callback]) -> int:
        """Load a finished phase into `module` and `callbacks`; return the phase's optimiser steps."""
        ckpt = torch.load(self.end, map_location="cpu", weights_only=False)
        module.on_load_checkpoint(ckpt)  # first: it puts back the frozen weights a checkpoint leaves out
        module.load_state_dict(ckpt["state_dict"])
        states = ckpt.get("callbacks", {})
        for callback in callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
        log.info("phase %s already finished (%d steps): restored from %s", self.dir.name, ckpt["global_step"],
                 self.end)
        return ckpt["global_step"]


class JobClock(L.Callback):
    """A job's wall time across the processes that ran it (`wall_s`): this process's, plus what the
    earlier ones had spent up to the checkpoint this one resumed from. Work after that checkpoint
    was lost, and is not counted. The clock rides in every checkpoint as callback state.

    What crosses processes is a duration (`seconds`), never a reading of `clock`: each process
    only subtracts two readings of its own. So the default is `time.monotonic`, which no
    wall-clock adjustment (NTP, a requeue on a node whose clock differs) can move backwards or
    forwards mid-job; `time.time` would add any such jump to `wall_s`. Loading a state replaces
    the earlier processes' seconds, it never adds to them: a job restores a finished phase's
    `end.ckpt` and then the next phase's `last.ckpt`, and the later one already includes the
    first. Tests pass a fake `clock` to check this arithmetic exactly.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.earlier = 0.0  #: seconds of earlier processes, up to the checkpoint resumed from

    def this_process(self) -> float:
        """Seconds since this process started the job."""
        return self.clock() - self.started

    def seconds(self) -> float:
        return self.earlier + self.this_process()

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        self.earlier = state["seconds"]


def prune(job_dir: Path, keep: str, last_stage: str | None) -> None:
    """Apply the keep policy to a done job: `none` deletes every checkpoint, `last` keeps the
    final phase's `end.ckpt` (the weights it trained: a LoRA phase's adapters and head, not the
    frozen base, `CausalLMModule.on_save_checkpoint`), `all` keeps everything."""
    root = job_dir / CHECKPOINTS
    if keep == "all" or not root.exists():
        return
    for stage_dir in root.iterdir():
        if keep == "last" and stage_dir.name == last_stage:
            for path in stage_dir.iterdir():
                if path.name != "end.ckpt":
                    path.unlink()
        else:
            shutil.rmtree(stage_dir)
    if keep == "none":
        root.rmdir()
