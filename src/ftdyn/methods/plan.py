"""A method as a plan of phases (`ftdyn.config.choices.METHOD_TABLE`), and how many optimiser steps each takes.

A phase says what trains (everything, LoRA adapters, or the head alone), and its own epochs and
learning rate:

    sft     ft (LM loss)            lp        probe
    lora    lora (LM loss)          ft        ft with a fresh head
                                    lpft      probe, then ft with the head
                                    lorahead  lora with a fresh head
                                    lplora    probe, then lora with the head

A probe phase fits a linear probe (`ftdyn.methods.linear_probe`): no optimiser steps. (A
method's phases are not a result row's stage: rows say when they were measured, before, after
or at step N.)
"""

from __future__ import annotations

import dataclasses
import math

from ftdyn import config as C
from ftdyn.config.choices import Trains


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  #: probe, ft or lora: names the phase's checkpoints and training curves
    trains: Trains
    lr: float
    epochs: int  #: 0 for a probe phase, which takes no optimiser steps


def plan(method: C.MethodConfig) -> list[Phase]:
    """The phases of a method, in order (`ftdyn.config.choices.METHOD_TABLE`), with their settings:
    method.lr and epochs, none for a probe phase (fitted by L-BFGS, `ftdyn.methods.linear_probe`)."""
    return [Phase(name, trains, *((0.0, 0) if trains == Trains.head else (method.lr, method.epochs)))
            for name, trains in method.spec.phases]


def rank_batches(batches_per_epoch: int, run: C.TrainConfig) -> int:
    """Batches of one epoch on each rank: every rank takes its share (`ftdyn.data.batches.ResumableBatches`)."""
    return math.ceil(batches_per_epoch / run.trainer.world_size)


def phase_steps(phase: Phase, batches_per_epoch: int, run: C.TrainConfig) -> int:
    """Optimiser steps of one phase on each rank: its epochs over the rank's share of the
    batches, capped by `method.max_steps` (a probe phase: none). Sizes the LR schedule, and the
    dry run's cost."""
    total = phase.epochs * rank_batches(batches_per_epoch, run)
    return min(total, run.method.max_steps) if run.method.max_steps > 0 else total
