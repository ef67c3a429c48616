"""Pre-training the two-Gaussians toy's MLP (`model=mlp`): regression on the equal mixture of X1
and X2 (`ftdyn.tasks.gaussians`), through the one pre-training helper (`ftdyn.pretrain.build`).

Once per (width, depth, pre-training recipe), a few seconds: `model.pretrain.steps` steps of
`model.pretrain.batch_size` mixture rows, AdamW at `model.pretrain.lr` with a linear schedule,
each checkpoint of `model.checkpoints` saved as a state dict. The manifest records the final fit
on 1,000 fresh points of each Gaussian (`final_mse`).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from ftdyn import config as C
from ftdyn.data.batches import NumberData
from ftdyn.methods.module import RegressionModule
from ftdyn.models import gaussians as stored
from ftdyn.pretrain.build import Progress, SaveAtSteps, ensure_built, pretrain
from ftdyn.tasks.gaussians import PRETRAIN_TARGETS, evaluation_points, pretrain_rows

log = logging.getLogger(__name__)


def ensure(model: C.ModelConfig) -> Path:
    """The MLP's checkpoints, pre-trained first if they are missing."""
    return ensure_built(stored.checkpoints_dir(model), lambda work: build(model, work))


def build(model: C.ModelConfig, work: Path) -> dict:
    """Pre-train the MLP into `work`, saving every checkpoint; return the manifest."""
    p = model.pretrain
    log.info("pre-training %s (once, cached): %d steps x %d rows", stored.checkpoints_dir(model).name, p.steps,
             p.batch_size)
    L.seed_everything(p.seed, verbose=False)
    mlp = stored.MLP(model.width, model.depth)
    module = RegressionModule(mlp, optimizer=partial(torch.optim.AdamW, lr=p.lr, weight_decay=0.0),
                              scheduler=partial(get_linear_schedule_with_warmup, num_warmup_steps=p.warmup_steps,
                                                num_training_steps=p.steps))
    saver = SaveAtSteps(model.checkpoints, lambda module, step: torch.save(module.model.state_dict(),
                                                                           work / f"step{step}.pt"))
    pretrain(module, NumberData(pretrain_rows(p.steps * p.batch_size, p.seed), p.batch_size, seed=p.seed), p.steps,
             [saver, Progress(f"{model.name} width {model.width} depth {model.depth}", p.steps, time.monotonic())])
    with torch.no_grad():
        fit = {name: round(float(F.mse_loss(mlp(x), torch.full_like(x, PRETRAIN_TARGETS[name]))), 6)
               for name, x in evaluation_points(1000, p.seed).items()}
    return {"model": model.name, "key": stored.key(model), "config": C.as_dict(model),
            "params": sum(q.numel() for q in mlp.parameters()), "final_mse": fit}
