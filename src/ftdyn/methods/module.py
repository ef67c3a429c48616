"""The single training loop: what a step optimises, for every method and the ladder build.

Without a head the loss is next-token cross-entropy on labelled positions: pre-training (every
token labelled), SFT and LoRA (completion tokens only). With a head (`ftdyn.choices.HEAD_METHODS`; a probe
stage is fitted by `ftdyn.methods.probe` instead) task rows are scored by the head on their
last-token feature. Replay rows (`is_replay`) always take the LM loss. Methods differ only in
which parameters require gradients, decided before this module is built.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from ftdyn.methods.heads import ClassifierHead, last_token_features
from ftdyn.methods.sharding import shard

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class TrainingDiverged(FloatingPointError):
    """The training loss became inf or nan; `step` is the optimiser step of the stage it happened at."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"non-finite training loss {loss} at step {step}: lower method.lr, or check the data")
        self.step = step


class CausalLMModule(L.LightningModule):
    """Cross-entropy (LM or head), the configured optimiser (`optim`) over trainable parameters, stepped LR schedule."""

    def __init__(self, model, optimizer: OptimizerFactory, scheduler: SchedulerFactory,
                 head: ClassifierHead | None = None):
        """
        Args:
            model: The transformers model to train (its parameters' requires_grad say what trains).
            optimizer: Builds the optimiser from the trainable parameters (lr already bound).
            scheduler: Builds the per-step LR schedule from the optimiser.
            head: The classification head of head methods, else None (the LM loss).
        """
        super().__init__()
        self.model, self.head = model, head
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.tokens_seen = 0
        self.resumed_from_step = 0  #: the global step of the checkpoint this module was restored from

    def _lm_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss

    def _head_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = last_token_features(self.model, batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(self.head(features), batch["class_label"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Task rows and replay rows each weigh by their share of the batch's rows.

        Without replay this is the plain token-mean LM loss (or the head's loss); with replay at
        rate rho, a replay share rho of the rows carries weight rho, however many tokens it has.
        """
        replay = batch["is_replay"]
        task_loss = self._head_loss if self.head is not None else self._lm_loss
        loss = torch.zeros((), device=replay.device)
        for rows, part_loss in ((~replay, task_loss), (replay, self._lm_loss)):
            if rows.any():
                loss = loss + part_loss({k: v[rows] for k, v in batch.items()}) * rows.sum() / rows.numel()
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(loss.item(), self.global_step)
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep what Lightning does not: the token count and the global RNG (LoRA dropout draws from it)."""
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        self.resumed_from_step = checkpoint.get("global_step", 0)
        log.info("resuming from step %d", self.resumed_from_step)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def on_train_end(self) -> None:
        """Under DDP each rank saw its share of the batches: count every rank's tokens."""
        seen = torch.tensor(float(self.tokens_seen), device=self.device)
        self.tokens_seen = int(self.trainer.strategy.reduce(seen, reduce_op="sum"))

    def configure_model(self) -> None:
        """Under trainer=fsdp (ModelParallelStrategy's device mesh), shard the model (ftdyn.methods.sharding)."""
        if self.device_mesh is not None:
            shard(self, self.device_mesh["data_parallel"])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        head = list(self.head.parameters()) if self.head is not None else []
        return [p for p in [*self.model.parameters(), *head] if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        schedule = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
