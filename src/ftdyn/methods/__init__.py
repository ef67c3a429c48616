"""Fine-tuning methods: which parameters train, on which rows, through the one training loop.

`fit` encodes the task's train split in the training prompt format, freezes what the method
leaves untouched, and trains with `CausalLMModule` under a Lightning Trainer.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from ftdyn.data import TrainDataModule, encode_pair
from ftdyn.methods.module import CausalLMModule

log = logging.getLogger(__name__)


def _set_trainable(model, method: str) -> None:
    """sft: every weight trains."""
    for p in model.parameters():
        p.requires_grad_(method == "sft")


def fit(model, tokenizer, task, run, job_dir: Path) -> dict[str, int]:
    """Train `model` in place; return run facts (trainable params, steps, tokens)."""
    max_len = model.config.max_position_embeddings
    rows = [encode_pair(tokenizer, task.prompt(e, run.prompt.train), task.target(e), max_len) for e in task.train]
    data = TrainDataModule(rows, run.method.batch_size, tokenizer.pad_token_id, seed=run.seed)
    total = run.method.epochs * data.steps_per_epoch()
    if run.method.max_steps > 0:
        total = min(total, run.method.max_steps)
    _set_trainable(model, run.method.name)
    module = CausalLMModule(model, lr=run.method.lr, total_steps=total,
                            warmup_steps=math.ceil(run.method.warmup_ratio * total),
                            weight_decay=run.method.weight_decay)
    trainer = L.Trainer(max_epochs=run.method.epochs, max_steps=total, accelerator=run.trainer.accelerator,
                        devices=run.trainer.devices, precision=run.trainer.precision,
                        logger=CSVLogger(job_dir, name="", version=""), log_every_n_steps=run.trainer.log_every_n_steps,
                        enable_checkpointing=False, enable_progress_bar=run.trainer.enable_progress_bar,
                        enable_model_summary=False)
    model.train()  # evaluation before fitting left it in eval mode
    trainer.fit(module, data)
    model.eval()
    return {"trainable_params": sum(p.numel() for p in module.trainable_parameters()),
            "train_steps": trainer.global_step, "train_tokens": module.tokens_seen}
