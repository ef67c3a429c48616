"""In-loop evaluation: fine-tuning loss and forgetting along training (stage=step_N rows).

The raw material of Kalajdzievski's forgetting laws: every `every_n_steps` optimiser steps the
callback records the mean training loss since its last record and the held-out measures
(`pretrain_loss`, `forget_ce`, `forget_kl`) against the base checkpoint. Steps count across a
method's stages, so an LP-FT run's ft steps follow its probe steps.
"""

from __future__ import annotations

import lightning as L

from ftdyn.evaluate import heldout_measures, result_row


class InLoopEval(L.Callback):
    def __init__(self, every_n_steps: int, base, heldout: list[dict], pad_id: int, batch_size: int,
                 heldout_name: str = "tinyworld_heldout", head_norm: bool = False):
        self.every, self.base, self.heldout, self.heldout_name = every_n_steps, base, heldout, heldout_name
        self.head_norm = head_norm  #: also record the classifier norm (eval.diagnostics=[head_norm])
        self.pad_id, self.batch_size = pad_id, batch_size
        self.offset = 0  # steps of earlier stages
        self.losses: list[float] = []
        self.rows: list[dict] = []

    def on_train_start(self, trainer, module):
        self.base.to(module.device)  # beside the model on every rank (under fsdp every rank measures)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        step = self.offset + trainer.global_step
        if step % self.every:
            return
        stage = f"step_{step}"
        mean_loss = sum(self.losses) / len(self.losses)
        self.rows.append(result_row("train", None, stage, None, "train_loss", mean_loss))
        self.losses = []
        measures = heldout_measures(module.model, self.base, self.heldout, self.pad_id, self.batch_size)
        self.rows += [result_row(self.heldout_name, "pretrain", stage, None, metric, value)
                      for metric, value in measures.items()]
        if self.head_norm and module.head is not None:
            self.rows.append(result_row("head", None, stage, None, "classifier_norm", module.head.norm()))
        module.model.train()

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

