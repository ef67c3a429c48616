"""The single training loop: a causal LM trained on whatever tokens carry labels.

Pre-training (every token labelled), SFT (completion tokens only) and replay (pre-training rows
mixed into task batches) are the same step; methods differ only in which parameters require
gradients, decided before this module is built.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

log = logging.getLogger(__name__)


class CausalLMModule(L.LightningModule):
    """Next-token cross-entropy on labelled positions, AdamW, linear schedule with warmup."""

    def __init__(self, model: PreTrainedModel, lr: float, total_steps: int,
                 warmup_steps: int = 0, weight_decay: float = 0.0):
        super().__init__()
        self.model = model
        self.lr, self.total_steps = lr, total_steps
        self.warmup_steps, self.weight_decay = warmup_steps, weight_decay
        self.tokens_seen = 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"])
        if not math.isfinite(out.loss.item()):
            raise FloatingPointError(f"non-finite training loss {out.loss.item()} at step {self.global_step}")
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return out.loss

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, self.warmup_steps, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
