"""A method as a plan of stages (`ftdyn.config.choices.METHOD_TABLE`), and how many optimiser steps each takes.

A stage says what trains (everything, LoRA adapters, or the head alone), and its own epochs and
learning rate:

    sft     ft (LM loss)            lp        probe
    lora    lora (LM loss)          ft        ft with a fresh head
                                    lpft      probe, then ft with the head
                                    lorahead  lora with a fresh head
                                    lplora    probe, then lora with the head

A probe stage fits a linear probe (`ftdyn.methods.linear_probe`): no optimiser steps.
"""

from __future__ import annotations

import dataclasses
import math

from ftdyn import config as C
from ftdyn.config.choices import Trains


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    trains: Trains
    lr: float
    epochs: int  #: 0 for a probe stage, which takes no optimiser steps


def plan(method: C.MethodConfig) -> list[Stage]:
    """The stages of a method, in order (`ftdyn.config.choices.METHOD_TABLE`), with their settings:
    method.lr and epochs, none for a probe stage (fitted by L-BFGS, `ftdyn.methods.linear_probe`)."""
    return [Stage(name, trains, *((0.0, 0) if trains == Trains.head else (method.lr, method.epochs)))
            for name, trains in method.spec.stages]


def rank_batches(batches_per_epoch: int, run: C.TrainConfig) -> int:
    """Batches of one epoch on each rank: every rank takes its share (`ftdyn.data.batches.ResumableBatches`)."""
    return math.ceil(batches_per_epoch / run.trainer.world_size)


def stage_steps(stage: Stage, batches_per_epoch: int, run: C.TrainConfig) -> int:
    """Optimiser steps of one stage on each rank: its epochs over the rank's share of the
    batches, capped by `method.max_steps` (a probe stage: none). Sizes the LR schedule, and the
    dry run's cost."""
    total = stage.epochs * rank_batches(batches_per_epoch, run)
    return min(total, run.method.max_steps) if run.method.max_steps > 0 else total
