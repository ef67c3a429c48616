"""In-loop evaluation: the fine-tuning loss and the stage evaluator's in-loop rows along training
(stage=step_N rows).

The raw material of Kalajdzievski's forgetting laws: every `every_n_steps` optimiser steps the
callback records the mean training loss since its last record, then what the job's
`StageEvaluator` measures in the loop against the base checkpoint: held-out text (`pretrain_loss`,
`forget_ce`, `forget_kl`) and, on ftdyn's ladders with `eval.probe`, the knowledge probe's `acc`
and `acc_vs_base`, the share of facts the model completes as the base does (Kalajdzievski's
Fig. 4 tracks accuracy against the base model's predictions along training, where accuracy alone
can hide forgetting); for the two-Gaussians toy its sets' `pred`, `mse` and `drift`. With the
`head_norm` diagnostic, the classifier norm too. Steps count across a method's training phases
(a probe phase takes none: `ftdyn.methods.linear_probe`).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from ftdyn.eval.rows import result_row
from ftdyn.eval.stage import StageEvaluator


class InLoopEval(L.Callback):
    def __init__(self, every_n_steps: int, evaluator: StageEvaluator,
                 base_of: Callable[[torch.nn.Module], torch.nn.Module], head_norm: bool = False):
        """
        Args:
            every_n_steps: Measure every this many optimiser steps (0: never).
            evaluator: The job's stage evaluator (`rows(..., in_loop=True)`).
            base_of: The base checkpoint beside the model in training
                (`ftdyn.models.reference.Reference.during_training`).
            head_norm: Also record the classifier norm (eval.diagnostics=[head_norm]).
        """
        self.every, self.evaluator, self.base_of, self.head_norm = every_n_steps, evaluator, base_of, head_norm
        self.offset = 0  # steps of earlier phases
        self.losses: list[float] = []
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        step = self.offset + trainer.global_step
        if not self.every or step % self.every:
            return
        stage = f"step_{step}"
        self.rows.append(result_row("train", None, stage, None, "train_loss", sum(self.losses) / len(self.losses)))
        self.losses = []
        base = self.base_of(module.model).to(module.device)  # beside the model on every rank (fsdp: all measure)
        self.rows += self.evaluator.rows(module.model, stage, base=base, in_loop=True)
        if self.head_norm and module.head is not None:
            self.rows.append(result_row("head", None, stage, None, "classifier_norm", module.head.norm()))
        module.model.train()

    def teardown(self, trainer, module, stage):
        """Count this phase's steps on. Not `on_train_end`: a Trainer resumed from a checkpoint
        of its final step trains no further and skips that hook; teardown always runs."""
        if stage == "fit":
            self.offset += trainer.global_step

    def state_dict(self) -> dict:
        """Rows so far, the loss since the last record and earlier phases' steps: saved in every
        training checkpoint, so a resumed job's curve has no gap and no repeat."""
        return {"offset": self.offset, "losses": list(self.losses), "rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.offset, self.losses, self.rows = state["offset"], list(state["losses"]), list(state["rows"])
