"""The one training loop: what a step optimises, for every method, every pre-training and the toy.

`TrainingModule` is the loop every training phase runs: the loss of a batch, a check that it is finite,
the configured optimiser over the trainable parameters with a per-step schedule, and checkpoints
that hold only what trains. Two losses fill it in:

- `CausalLMModule` (language models): without a head, next-token cross-entropy on labelled
  positions: pre-training (every token labelled), SFT and LoRA (completion tokens only). With a
  head (`ftdyn.config.choices.HEAD_METHODS`; a linear-probe phase is fitted by
  `ftdyn.methods.linear_probe` instead) task rows are scored by the head on their last-token
  feature. Replay rows (`is_replay`) always take the LM loss.
- `RegressionModule` (the two-Gaussians MLP): mean squared error over the batch's rows.

Methods differ only in which parameters require gradients, decided before the module is built.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from ftdyn.data.packing import packed_forward
from ftdyn.methods.sharding import shard
from ftdyn.models.heads import ClassifierHead, last_token_features

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class TrainingDiverged(FloatingPointError):
    """The training loss became inf or nan; `step` is the optimiser step of the phase it happened at."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"non-finite training loss {loss} at step {step}: lower method.lr, or check the data")
        self.step = step


class TrainingModule(L.LightningModule):
    """What every training loop shares: the batch's loss (`batch_loss`, by the subclass), checked
    finite and logged; the optimiser over the trainable parameters, stepped per batch with its
    schedule; checkpoints without the frozen weights; the global RNG across a resume."""

    def __init__(self, model, optimizer: OptimizerFactory, scheduler: SchedulerFactory):
        """
        Args:
            model: The model to train (its parameters' requires_grad say what trains).
            optimizer: Builds the optimiser from the trainable parameters (lr already bound).
            scheduler: Builds the per-step LR schedule from the optimiser.
        """
        super().__init__()
        self.model, self.head = model, None
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.resumed_from_step = 0  #: the global step of the checkpoint this module was restored from

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """The batch's loss and its rows."""
        raise NotImplementedError

    def facts(self) -> dict[str, float]:
        """What the loop counted, as run facts (the language model's tokens)."""
        return {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, n_rows = self.batch_loss(batch)
        if not math.isfinite(loss.item()):  # e.g. the toy's SGD past its stable rate: fail, never write NaN rows
            raise TrainingDiverged(loss.item(), self.global_step)
        self.log("train/loss", loss, prog_bar=True, batch_size=n_rows)
        return loss

    def frozen_weights(self) -> set[str]:
        """State-dict names of the weights this phase does not train (a LoRA phase's whole base model)."""
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the global RNG (LoRA dropout draws from it), which Lightning does not. Leave out the
        frozen weights: they are the checkpoint the job loaded, and a resumed job loads them the
        same way, so a LoRA phase saves its adapters (and head), not a 1B base."""
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        frozen = self.frozen_weights()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the RNG, and put back the frozen weights a checkpoint leaves out (this module's
        own, as loaded), so the state dict loads whole and strictly."""
        own = self.state_dict()
        for name in self.frozen_weights():
            checkpoint["state_dict"].setdefault(name, own[name])
        self.resumed_from_step = checkpoint.get("global_step", 0)
        log.info("resuming from step %d", self.resumed_from_step)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        head = list(self.head.parameters()) if self.head is not None else []
        return [p for p in [*self.model.parameters(), *head] if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        schedule = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class CausalLMModule(TrainingModule):
    """Cross-entropy of a language model: the LM loss, or a head's on the last-token feature."""

    def __init__(self, model, optimizer: OptimizerFactory, scheduler: SchedulerFactory,
                 head: ClassifierHead | None = None, compile_model: bool = False):
        """
        Args:
            model, optimizer, scheduler: As `TrainingModule`'s (model: a transformers model).
            head: The classification head of head methods, else None (the LM loss).
            compile_model: Run the training forward through `torch.compile` (trainer.compile);
                evaluation keeps the plain model.
        """
        super().__init__(model, optimizer, scheduler)
        self.head = head
        self.compile_model = compile_model
        self.tokens_seen = 0

    @property
    def forward_model(self):
        """The model the training step calls: compiled once on first use when `compile_model` is set.
        Kept outside the module's attributes (object.__setattr__), so it is no submodule and
        checkpoints hold the weights once, under their own names."""
        if not self.compile_model:
            return self.model
        if "_compiled" not in self.__dict__:
            object.__setattr__(self, "_compiled", torch.compile(self.model))
        return self.__dict__["_compiled"]

    def _lm_loss(self, batch: dict) -> torch.Tensor:
        if "position_ids" in batch:  # a packed part (ftdyn.data.packing)
            return packed_forward(self.forward_model, batch, labels=batch["labels"]).loss
        return self.forward_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  labels=batch["labels"], use_cache=False).loss

    def _head_loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.head(last_token_features(self.forward_model, batch)), batch["class_label"])

    @staticmethod
    def _parts(batch: dict) -> tuple[list[tuple[str, dict, float]], int, int]:
        """(task or replay, its rows, its share of the batch's rows) of each part with rows, the
        batch's rows and its real tokens: from a packed batch (`ftdyn.data.packing.collate_packed`)
        or a padded one (`ftdyn.data.batches.collate`)."""
        if "packed" in batch:
            parts = [(name, part, part["rows"] / batch["rows"]) for name, part in batch["packed"].items()]
            return parts, batch["rows"], sum(part["tokens"] for part in batch["packed"].values())
        replay = batch["is_replay"]
        parts = [(name, {k: v[rows] for k, v in batch.items()}, float(rows.sum()) / rows.numel())
                 for name, rows in (("task", ~replay), ("replay", replay)) if rows.any()]
        return parts, replay.numel(), int(batch["attention_mask"].sum())

    def loss_parts(self, batch: dict) -> dict[str, torch.Tensor]:
        """The training loss by part, `task` and `replay` (those with rows), each weighted by its
        share of the batch's rows: they sum to the loss (`ftdyn.analysis.ntk_trace` splits by them)."""
        parts, _, _ = self._parts(batch)
        return {name: (self._head_loss if name == "task" and self.head is not None else self._lm_loss)(part) * share
                for name, part, share in parts}

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Task rows and replay rows each weigh by their share of the batch's rows.

        Without replay this is the plain token-mean LM loss (or the head's loss); with replay at
        rate rho, a replay share rho of the rows carries weight rho, however many tokens it has.
        """
        _, n_rows, n_tokens = self._parts(batch)
        loss = torch.zeros((), device=self.device)
        for part_loss in self.loss_parts(batch).values():
            loss = loss + part_loss
        self.tokens_seen += n_tokens
        return loss, n_rows

    def facts(self) -> dict[str, float]:
        return {"train_tokens": self.tokens_seen}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.tokens_seen = checkpoint.get("tokens_seen", 0)

    def on_train_end(self) -> None:
        """Under DDP each rank saw its share of the batches: count every rank's tokens."""
        seen = torch.tensor(float(self.tokens_seen), device=self.device)
        self.tokens_seen = int(self.trainer.strategy.reduce(seen, reduce_op="sum"))

    def configure_model(self) -> None:
        """Under trainer=fsdp (ModelParallelStrategy's device mesh), shard the model (ftdyn.methods.sharding)."""
        if self.device_mesh is not None:
            shard(self, self.device_mesh["data_parallel"])



class RegressionModule(TrainingModule):
    """Mean squared error over a batch's number rows (task and replay alike, so each row weighs 1/n):
    the two-Gaussians MLP's loop, pre-training and fine-tuning."""

    @staticmethod
    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, y)

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        return self.loss(self.model(batch["x"]), batch["y"]), len(batch["x"])

    def output_grad(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """dL/df at the batch's rows: what an SGD step moves the function by, through the kernel."""
        pred = self.model(batch["x"]).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.loss(pred, batch["y"]), pred)
        return grad

    def loss_parts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss as the task rows' part and the replay rows' (where there are any): each row
        weighs 1/n, as in `loss`, so the parts sum to it (`ftdyn.analysis.ntk_trace`)."""
        per_row = (self.model(batch["x"]) - batch["y"]).square() / len(batch["x"])
        replay = batch["is_replay"]
        return {"task": per_row[~replay].sum(), **({"replay": per_row[replay].sum()} if replay.any() else {})}
