"""In-loop evaluation: fine-tuning loss and forgetting along training (stage=step_N rows).

The raw material of Kalajdzievski's forgetting laws: every `every_n_steps` optimiser steps the
callback records the mean training loss since its last record and the held-out measures
(`pretrain_loss`, `forget_ce`, `forget_kl`) against the base checkpoint. Steps count across a
method's training stages (a probe stage takes none: `ftdyn.methods.linear_probe`).

Given the world and tokenizer (a tinyworld ladder with `eval.probe`), it also records the
world-facts probe's `acc` and `acc_vs_base`, the share of facts the model completes as the base
checkpoint does: Kalajdzievski's Fig. 4 tracks ARC accuracy and accuracy against the base
model's predictions along training, where accuracy alone can hide forgetting (the fine-tuned
model makes other errors than the base). The probe is the tiny world's knowledge benchmark.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from ftdyn.eval.metrics import agreement
from ftdyn.eval.rows import result_row
from ftdyn.eval.stage import heldout_measures, probe_predictions


class InLoopEval(L.Callback):
    def __init__(self, every_n_steps: int, base_of: Callable[[torch.nn.Module], torch.nn.Module], heldout: list[dict],
                 pad_id: int, batch_size: int, heldout_name: str = "tinyworld_heldout", tokenizer=None, world=None,
                 head_norm: bool = False):
        """
        Args:
            base_of: The base checkpoint beside the model in training (`ftdyn.models.reference.Reference.during_training`).
        """
        self.every, self.base_of, self.heldout, self.heldout_name = every_n_steps, base_of, heldout, heldout_name
        self.head_norm = head_norm  #: also record the classifier norm (eval.diagnostics=[head_norm])
        self.pad_id, self.batch_size = pad_id, batch_size
        self.tokenizer, self.world = tokenizer, world  # the probe's; None: no probe rows
        self.base_answers: list[int] | None = None  # the base's probe predictions, computed once
        self.offset = 0  # steps of earlier stages
        self.losses: list[float] = []
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        step = self.offset + trainer.global_step
        if step % self.every:
            return
        stage = f"step_{step}"
        mean_loss = sum(self.losses) / len(self.losses)
        self.rows.append(result_row("train", None, stage, None, "train_loss", mean_loss))
        self.losses = []
        base = self.base_of(module.model).to(module.device)  # beside the model on every rank (fsdp: all measure)
        measures = heldout_measures(module.model, base, self.heldout, self.pad_id, self.batch_size)
        self.rows += [result_row(self.heldout_name, "pretrain", stage, None, metric, value)
                      for metric, value in measures.items()]
        self.rows += self._probe_rows(module.model, base, stage)
        if self.head_norm and module.head is not None:
            self.rows.append(result_row("head", None, stage, None, "classifier_norm", module.head.norm()))
        module.model.train()

    def _probe_rows(self, model, base, stage: str) -> list[dict]:
        """The probe's acc and acc_vs_base (agreement with the base's completions) at `stage`."""
        if self.world is None:
            return []
        if self.base_answers is None:
            self.base_answers = probe_predictions(base, self.tokenizer, self.world, self.batch_size)[0]
        predicted, golds = probe_predictions(model, self.tokenizer, self.world, self.batch_size)
        acc = sum(p == g for p, g in zip(predicted, golds)) / len(golds)
        return [result_row("world_facts", "probe", stage, None, "acc", acc),
                result_row("world_facts", "probe", stage, None, "acc_vs_base",
                           agreement(torch.tensor(predicted), torch.tensor(self.base_answers)))]

    def teardown(self, trainer, module, stage):
        """Count this stage's steps on. Not `on_train_end`: a Trainer resumed from a checkpoint
        of its final step trains no further and skips that hook; teardown always runs."""
        if stage == "fit":
            self.offset += trainer.global_step

    def state_dict(self) -> dict:
        """Rows so far, the loss since the last record and earlier stages' steps: saved in every
        training checkpoint, so a resumed job's curve has no gap and no repeat."""
        return {"offset": self.offset, "losses": list(self.losses), "rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.offset, self.losses, self.rows = state["offset"], list(state["losses"]), list(state["rows"])

