"""The two-Gaussians toy (the CMU poster, seed 000): forgetting in a small MLP, through the same
run path, rows and report as every language-model job (`model=mlp task=two_gaussians`).

Pre-training is regression on an equal mixture of X1 ~ N(-1, 0.2) -> 0 and X2 ~ N(1, 0.2) -> 1
(0.2 read as the standard deviation; the poster does not say). Fine-tuning trains on X1 alone
with its target moved to -0.2; nothing in it mentions X2, so any change of the prediction on X2
is forgetting. Replay (`replay.rate`) mixes rows of the pre-training mixture into every batch
(`ftdyn.data.batches.ReplayPlan`, as for language models), which anchors X2 at 1.

The pre-trained MLP is the toy's checkpoint: built once per (width, depth, pre-training recipe)
through a Lightning Trainer, saved at every `model.checkpoints` step and cached under
`$FTDYN_CACHE/toy/`, like a ladder. Rows, per evaluation set (`x1`: in_domain, `x2`: pretrain)
and stage: `pred` (mean prediction), `mse` (against the fine-tuned target: -0.2 on X1, 1 on X2)
and `drift` (mean change of the prediction from the checkpoint's; 0 before).
`eval.diagnostics=[ntk_change]` adds the NTK's prediction of every step's change
(`ftdyn.analysis.ntk_trace`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from ftdyn import config as C
from ftdyn.analysis.ntk_trace import NTK_PROBES, NtkTrace
from ftdyn.config.choices import Diagnostic
from ftdyn.data.batches import TrainDataModule
from ftdyn.eval.rows import result_row
from ftdyn.files import file_lock, write_json_atomic
from ftdyn.launch import wandb_runs
from ftdyn.methods.module import TrainingDiverged
from ftdyn.methods.plan import plan, stage_steps

log = logging.getLogger(__name__)

TOY_VERSION = 1  #: bump when the toy's data, model or pre-training changes (its cache key)
MEANS = {"x1": -1.0, "x2": 1.0}  #: the two Gaussians' means
STD = 0.2  #: their standard deviation
PRETRAIN_TARGETS = {"x1": 0.0, "x2": 1.0}
FINETUNE_TARGETS = {"x1": -0.2, "x2": 1.0}  #: fine-tuning moves X1's target; X2's is what it should keep


class MLP(nn.Module):
    """A ReLU MLP from one number to one number: `depth` hidden layers of `width` units."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        for d_in in [1] + [width] * (depth - 1):
            layers += [nn.Linear(d_in, width), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n] inputs -> [n] outputs (scalar outputs, so `empirical_ntk` gives an [n1, n2] kernel)."""
        return self.net(x.unsqueeze(-1)).squeeze(-1)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A generator per purpose (training rows, evaluation points, replay), so one set's size never
    shifts another's draws."""
    return torch.Generator().manual_seed(zlib.crc32(f"{purpose}:{seed}".encode()))


def gaussian(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    return MEANS[name] + STD * torch.randn(n, generator=gen)


def mixture_rows(n: int, gen: torch.Generator) -> list[dict]:
    """n rows of the pre-training distribution: X1 or X2 with equal chance, and its target."""
    names = ["x1" if c == 0 else "x2" for c in torch.randint(0, 2, (n,), generator=gen).tolist()]
    noise = torch.randn(n, generator=gen).tolist()
    return [{"x": MEANS[s] + STD * e, "y": PRETRAIN_TARGETS[s]} for s, e in zip(names, noise)]


class MixtureStream:
    """The pre-training distribution as an endless, re-iterable stream of rows (replay's source):
    each iteration starts from the same seed, so replay rows are the same in every run."""

    def __init__(self, seed: int):
        self.seed = seed

    def __iter__(self) -> Iterator[dict]:
        gen = generator(self.seed, "replay")
        while True:
            yield from mixture_rows(256, gen)


class ToyData(TrainDataModule):
    """`TrainDataModule`'s batching (seeded shuffling, `ReplayPlan`, resumable) over number rows."""

    def __init__(self, rows: list[dict], batch_size: int, seed: int, replay_rate: float = 0.0):
        super().__init__(rows, batch_size, pad_id=0, seed=seed, replay_rate=replay_rate,
                         replay_rows=MixtureStream(seed) if replay_rate > 0 else None)

    def collate(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor([r["x"] for r in rows]), "y": torch.tensor([r["y"] for r in rows]),
                "is_replay": torch.tensor([bool(r.get("replay", False)) for r in rows])}


class RegressionModule(L.LightningModule):
    """Mean squared error over a batch's rows (task and replay alike, so each row weighs 1/n),
    the given optimiser and per-step schedule."""

    def __init__(self, model: nn.Module, optimizer, scheduler):
        super().__init__()
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler

    @staticmethod
    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, y)

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.model(batch["x"]), batch["y"])
        if not math.isfinite(loss.item()):  # SGD past its stable rate (lr > ~1 / K(x1, x1)): fail, never write NaN rows
            raise TrainingDiverged(loss.item(), self.global_step)
        self.log("train/loss", loss, batch_size=len(batch["x"]))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "step"}}


# -- the pre-trained checkpoint, built once and cached --------------------------------------------

def toy_key(model: C.ModelConfig) -> str:
    """A hash of everything that shapes the pre-trained weights."""
    spec = {"version": TOY_VERSION, "width": model.width, "depth": model.depth,
            "pretrain": C.as_dict(model.pretrain), "checkpoints": list(model.checkpoints)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def toy_dir(model: C.ModelConfig) -> Path:
    return C.cache_root() / "toy" / f"{model.name}-w{model.width}-d{model.depth}-{toy_key(model)}"


class _SaveAt(L.Callback):
    def __init__(self, steps: Sequence[int], root: Path):
        self.steps, self.root = set(steps), root

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps:
            torch.save(module.model.state_dict(), self.root / f"step{trainer.global_step}.pt")


def build(model: C.ModelConfig, root: Path) -> None:
    """Pre-train the MLP on the two-Gaussians mixture; save every checkpoint, then the manifest."""
    from transformers import get_linear_schedule_with_warmup

    p = model.pretrain
    root.mkdir(parents=True, exist_ok=True)
    log.info("pre-training toy %s (once, cached): %d steps x %d rows", root.name, p.steps, p.batch_size)
    L.seed_everything(p.seed, verbose=False)
    mlp = MLP(model.width, model.depth)
    module = RegressionModule(mlp, optimizer=partial(torch.optim.AdamW, lr=p.lr, weight_decay=0.0),
                              scheduler=partial(get_linear_schedule_with_warmup, num_warmup_steps=p.warmup_steps,
                                                num_training_steps=p.steps))
    trainer = L.Trainer(max_steps=p.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_SaveAt(model.checkpoints, root)])
    trainer.fit(module, ToyData(mixture_rows(p.steps * p.batch_size, generator(p.seed, "pretrain")),
                                p.batch_size, seed=p.seed))
    with torch.no_grad():
        fit = {name: round(float(F.mse_loss(mlp(x), torch.full_like(x, PRETRAIN_TARGETS[name]))), 6)
               for name, x in probe_points(1000, p.seed).items()}
    write_json_atomic(root / "manifest.json", {"model": model.name, "key": toy_key(model), "config": C.as_dict(model),
                                               "params": sum(q.numel() for q in mlp.parameters()), "final_mse": fit})


def load(model: C.ModelConfig, step: int) -> MLP:
    """The pre-trained MLP at `step`, building the toy's checkpoints first if they are missing."""
    if step not in model.checkpoints:
        raise KeyError(f"step {step} is not a checkpoint of toy {model.name}; available: {list(model.checkpoints)}")
    root = toy_dir(model)
    if not (root / "manifest.json").exists():
        with file_lock(root.with_suffix(".lock")):
            if not (root / "manifest.json").exists():  # another job may have built it meanwhile
                build(model, root)
    mlp = MLP(model.width, model.depth)
    mlp.load_state_dict(torch.load(root / f"step{step}.pt", weights_only=True))
    return mlp.eval()


# -- one job ---------------------------------------------------------------------------------------

def probe_points(n: int, seed: int) -> dict[str, torch.Tensor]:
    """n evaluation points of each Gaussian, fixed by the seed."""
    return {name: gaussian(name, n, generator(seed, f"eval/{name}")) for name in MEANS}


@torch.no_grad()
def stage_rows(model: nn.Module, stage: str, points: dict[str, torch.Tensor], base_pred: dict[str, torch.Tensor],
               split_kinds: dict[str, str]) -> list[dict]:
    """`pred`, `mse` (against the fine-tuned targets) and `drift` (from the checkpoint) per set."""
    rows = []
    for name, x in points.items():
        pred = model(x)
        measures = {"pred": pred.mean(), "mse": F.mse_loss(pred, torch.full_like(pred, FINETUNE_TARGETS[name])),
                    "drift": (pred - base_pred[name]).mean()}
        rows += [result_row(name, split_kinds[name], stage, None, metric, float(value))
                 for metric, value in measures.items()]
    return rows


class ToyInLoop(L.Callback):
    """Every `every` optimiser steps: the training loss since the last record and the stage rows."""

    def __init__(self, every: int, points, base_pred, split_kinds):
        self.every, self.args, self.losses, self.rows = every, (points, base_pred, split_kinds), [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        if trainer.global_step % self.every == 0:
            stage = f"step_{trainer.global_step}"
            self.rows.append(result_row("train", None, stage, None, "train_loss", sum(self.losses) / len(self.losses)))
            self.rows += stage_rows(module.model, stage, *self.args)
            self.losses = []


def job(run: C.TrainConfig, job_dir: Path, callbacks: list[L.Callback]) -> tuple[list[dict], dict[str, float]]:
    """The toy's whole job: load the checkpoint, measure, fine-tune, measure again. Returns the
    result rows and the run facts for `ftdyn.train` to write."""
    model = load(run.model, run.ckpt_step)
    points = {name: x for name, x in probe_points(run.task.eval_size, run.seed).items() if name in run.task.eval_sets}
    split_kinds = {name: str(kind) for name, kind in run.task.eval_sets.items()}
    with torch.no_grad():
        base_pred = {name: model(x) for name, x in points.items()}
    rows = stage_rows(model, "before", points, base_pred, split_kinds)
    facts = {"trainable_params": 0, "train_steps": 0, **shape_facts(run.model)}
    if run.method.name == C.Method.base:
        return rows, facts
    base = copy.deepcopy(model).requires_grad_(False)
    data = ToyData(finetune_rows(run), run.method.batch_size, seed=run.seed, replay_rate=run.replay.rate)
    extra = [ToyInLoop(run.eval.every_n_steps, points, base_pred, split_kinds)] if run.eval.every_n_steps else []
    traced = Diagnostic.ntk_change in run.eval.diagnostics
    probes = {name: x[:NTK_PROBES] for name, x in points.items()}
    ntk = [NtkTrace(probes, base=base, steps=run.eval.ntk_steps)] if traced else []
    steps = finetune(model, data, run, job_dir, callbacks + extra + ntk)
    rows += [row for callback in extra for row in callback.rows]
    rows += stage_rows(model.eval(), "after", points, base_pred, split_kinds)
    rows += [result_row(name, split_kinds[name], "after", None, metric, value)
             for callback in ntk for name, metric, value in callback.measures()]
    facts = {"trainable_params": sum(p.numel() for p in model.parameters()), "train_steps": steps,
             "replay_fraction": data.replay_fraction(), "world_size": 1, **shape_facts(run.model)}
    return rows, facts


def shape_facts(model: C.ModelConfig) -> dict[str, int]:
    """The MLP's scale as run facts: rows carry no model settings, and the report draws lines per width."""
    return {"width": model.width, "depth": model.depth}


def finetune_rows(run: C.TrainConfig) -> list[dict]:
    """The fine-tuning set: `task.train_size` points of X1 with the moved target."""
    x = gaussian("x1", run.task.train_size, generator(run.seed, "train"))
    return [{"x": v, "y": FINETUNE_TARGETS["x1"]} for v in x.tolist()]


def finetune(model: MLP, data: ToyData, run: C.TrainConfig, job_dir: Path, callbacks: list[L.Callback]) -> int:
    """Every stage of the method (sft: one, training everything) through a Lightning Trainer with
    the job's optimiser and schedule; returns the optimiser steps taken."""
    taken = 0
    for stage in plan(run.method):
        total = stage_steps(stage, data.steps_per_epoch(), run)
        module = RegressionModule(model, optimizer=partial(instantiate(run.optim.optimizer), lr=stage.lr),
                                  scheduler=partial(instantiate(run.optim.scheduler), num_training_steps=total,
                                                    num_warmup_steps=math.ceil(run.optim.warmup_ratio * total)))
        trainer = L.Trainer(**{**run.trainer.lightning_args(), "log_every_n_steps": min(run.trainer.log_every_n_steps,
                                                                                        total)},
                            max_epochs=stage.epochs, max_steps=total,
                            logger=wandb_runs.stage_loggers(run, job_dir, stage.name),
                            enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks)
        model.train()
        trainer.fit(module, data)
        taken += trainer.global_step
    return taken
