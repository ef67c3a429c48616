"""Fine-tuning: every phase of a method's plan (`ftdyn.methods.plan`) on one model, through the
one fine-tuning Trainer (`fit_phase`), for language models and the two-Gaussians MLP alike.

A probe phase is no training loop: it fits the head to convergence on the frozen model's
features by L-BFGS (`ftdyn.methods.linear_probe`). `fit` runs the phases in order on the same
model and head, so a second phase starts from what the first one learned, and returns the
(possibly LoRA-wrapped) model, the head and run facts. Every training phase checkpoints and
resumes (`ftdyn.methods.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from peft import LoraConfig, get_peft_model

from ftdyn import config as C
from ftdyn.config.choices import MethodSpec, Trains
from ftdyn.data.batches import NumberData, TrainDataModule
from ftdyn.data.rows import encode_pair, encode_prompt
from ftdyn.data.text import pretrain_stream, text_stream
from ftdyn.launch import cluster, wandb_runs
from ftdyn.methods import sharding
from ftdyn.methods.checkpoints import PhaseCheckpoints
from ftdyn.methods.linear_probe import fit_linear_probe
from ftdyn.methods.module import CausalLMModule, RegressionModule, TrainingModule
from ftdyn.methods.plan import Phase, phase_steps, plan, rank_batches
from ftdyn.models.heads import ClassifierHead
from ftdyn.tasks.gaussians import MixtureStream

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Fitted:
    """What fitting produced: the model to evaluate, its head, run facts, and each phase's head."""

    model: torch.nn.Module
    head: ClassifierHead | None
    facts: dict[str, float]
    #: phase name -> the head's (weight, bias) at the phase's start and at its end
    head_at: dict[str, tuple] = dataclasses.field(default_factory=dict)


def add_lora(model, method: C.MethodConfig, targets: list[str]):
    """Wrap `model` with peft LoRA adapters on `targets` (module names, or [all-linear]); peft
    freezes every base weight."""
    config = LoraConfig(r=method.rank, lora_alpha=method.alpha, lora_dropout=method.dropout,
                        target_modules=C.ALL_LINEAR if list(targets) == [C.ALL_LINEAR] else list(targets),
                        use_rslora=method.rslora, bias="none")
    return get_peft_model(model, config)


def adapted_modules(model) -> list[str]:
    """The distinct names (last component) of the modules a peft model adapts, sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name in getattr(model, "targeted_module_names", [])})


def _set_trainable(model, head: ClassifierHead | None, trains: str) -> None:
    if trains != Trains.lora:  # peft already marked exactly the adapters trainable
        for p in model.parameters():
            p.requires_grad_(trains == Trains.all)
    if head is not None:
        head.requires_grad_(True)


def train_rows(task, tokenizer, run: C.TrainConfig, max_len: int, use_head: bool) -> list[dict]:
    """The task's training rows, encoded: prompt and target for the LM loss, or the prompt and its
    label index (`class_label`) for a head."""
    fmt = run.prompt.train
    if use_head:
        labels = list(task.cfg.label_words)
        return [{**encode_prompt(tokenizer, task.prompt(e, fmt), max_len), "class_label": labels.index(task.target(e))}
                for e in task.train]
    return [encode_pair(tokenizer, task.prompt(e, fmt), task.target(e), max_len) for e in task.train]


def _replay_stream(run: C.TrainConfig, tokenizer):
    """What replay rehearses, as a stream that batches read from as they need it
    (`ftdyn.data.batches.ReplayRows`): memory is the same at any replay rate. The toy's is its
    pre-training mixture; a language model's its pre-training text."""
    if run.task.source == C.TaskSource.gaussians:
        return MixtureStream(run.seed)
    if run.replay.source == C.ReplaySource.text:  # a named text dataset (hub models: their pre-training stand-in)
        return text_stream(run.model.text, run.model.text.replay_split, tokenizer, run.replay.seq_len)
    return pretrain_stream(run.model.pretrain, tokenizer, run.replay.seq_len)


def training_data(task, tokenizer, run: C.TrainConfig, model, use_head: bool) -> TrainDataModule:
    """The batches every training phase of the job reads: the task's rows (encoded, or the toy's
    numbers), shuffled with the job's seed, with replay where `replay.rate` > 0 and a phase has an
    LM (or regression) loss to rehearse (a probe phase has none)."""
    replay = {}
    if run.replay.rate > 0 and any(phase.trains != Trains.head for phase in plan(run.method)):
        replay = {"replay_rows": _replay_stream(run, tokenizer), "replay_rate": run.replay.rate}
    if run.task.source == C.TaskSource.gaussians:
        return NumberData(task.train, run.method.batch_size, seed=run.seed, **replay)
    rows = train_rows(task, tokenizer, run, model.config.max_position_embeddings, use_head)
    return TrainDataModule(rows, run.method.batch_size, tokenizer.pad_token_id, seed=run.seed,
                           packing=run.trainer.packing, pack_width=run.trainer.pack_width,
                           bucket_by_length=run.trainer.bucket_by_length, **replay)


def fit(model, tokenizer, task, run: C.TrainConfig, job_dir: Path,
        callbacks: list[L.Callback] | None = None) -> Fitted:
    """Run every phase of `run.method` on `model`; return what to evaluate and the run facts.

    `callbacks` go to every phase's Trainer (in-loop evaluation, for one). Phases checkpoint
    under `job_dir` (`ftdyn.methods.checkpoints`): a re-run restores finished phases and resumes
    the unfinished one; `resumed_from_step` (a run fact only then) says from which step.
    """
    spec = run.method.spec
    head = new_head(model, len(task.cfg.label_words), spec, run.seed) if spec.head else None
    data = training_data(task, tokenizer, run, model, spec.head)
    counted = {} if isinstance(data, NumberData) else {"train_tokens": 0}  # the toy counts no tokens
    fitted = Fitted(model, head, {"train_steps": 0, **counted, "replay_fraction": data.replay_fraction()})
    for phase in plan(run.method):
        start = _head_state(head)
        if phase.trains == Trains.head:
            _set_trainable(fitted.model, head, phase.trains)
            fitted_probe = fit_linear_probe(fitted.model, head, data.rows, tokenizer.pad_token_id, run, job_dir)
            fitted.facts["train_tokens"] += fitted_probe.pop("train_tokens")
            fitted.facts |= fitted_probe
            fitted.facts["trainable_params"] = sum(p.numel() for p in head.parameters())
        else:
            _fit_training_phase(fitted, phase, data, run, job_dir, callbacks or [])
            head = fitted.head
        fitted.head_at[phase.name] = (start, _head_state(head))
        fitted.facts["world_size"] = run.trainer.world_size  # processes that trained (ranks)
        if head is not None:
            fitted.facts[f"classifier_norm_{phase.name}"] = head.norm()
    fitted.model.eval()
    return fitted


def new_head(model, n_labels: int, spec: MethodSpec, seed: int) -> ClassifierHead:
    """The head a head method starts with: zero where a probe phase fits it first (L-BFGS starts
    there), else fresh, as transformers initialises a classification head (N(0, initializer_range^2))."""
    std = 0.0 if spec.linear_probe else getattr(model.config, "initializer_range", 0.02)
    return ClassifierHead(model.config.hidden_size, n_labels, std=std, seed=seed)


def _fit_training_phase(fitted: Fitted, phase: Phase, data: TrainDataModule, run: C.TrainConfig, job_dir: Path,
                        callbacks: list[L.Callback]) -> None:
    """Train one phase of `fitted` through `fit_phase`, in place, and add its facts."""
    if phase.trains == Trains.lora:
        fitted.model = add_lora(fitted.model, run.method, run.lora_targets)
        fitted.facts["lora_modules"] = len(fitted.model.targeted_module_names)
    _set_trainable(fitted.model, fitted.head, phase.trains)
    module, steps, resumed_at = fit_phase(fitted.model, fitted.head, data, phase, run, job_dir, callbacks)
    fitted.model = module.model  # under trainer=fsdp, an unsharded copy of the trained model
    fitted.head = module.head
    if resumed_at:
        fitted.facts["resumed_from_step"] = fitted.facts["train_steps"] + resumed_at
    fitted.facts["trainable_params"] = sum(p.numel() for p in module.trainable_parameters())
    fitted.facts["train_steps"] += steps
    for name, value in module.facts().items():
        fitted.facts[name] += value


def _head_state(head: ClassifierHead | None):
    return None if head is None else (head.weight.detach().clone(), head.bias.detach().clone())


def _log_interval(run: C.TrainConfig, batches_per_epoch: int, total: int) -> int:
    """`trainer.log_every_n_steps`, shortened for a phase (or epoch) shorter than it, which would
    otherwise log no training loss at all."""
    return max(1, min(run.trainer.log_every_n_steps, rank_batches(batches_per_epoch, run), total))


FUSED_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam")  #: optimisers with a fused CUDA kernel


def fused_kwargs(run: C.TrainConfig) -> dict:
    """`fused=True` for torch's AdamW/Adam on a CUDA device (trainer.fused_optimizer): one kernel
    per step instead of several per parameter. Not under fsdp (sharded DTensor parameters), and
    never over an explicit `optim.optimizer.fused`."""
    on_cuda = run.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    wanted = run.trainer.fused_optimizer and run.trainer.strategy != C.Strategy.fsdp
    optimizer = run.optim.optimizer
    return {"fused": True} if (on_cuda and wanted and optimizer.get("_target_") in FUSED_OPTIMIZERS
                               and "fused" not in optimizer) else {}


def training_module(model, head, phase: Phase, total: int, run: C.TrainConfig) -> TrainingModule:
    """The loop of one phase: the job's optimiser at the phase's rate and its schedule over `total`
    steps, with the language model's loss (or the head's), or the toy's squared error."""
    optimizer = partial(instantiate(run.optim.optimizer), lr=phase.lr, **fused_kwargs(run))
    scheduler = partial(instantiate(run.optim.scheduler), num_training_steps=total,
                        num_warmup_steps=math.ceil(run.optim.warmup_ratio * total))
    if run.task.source == C.TaskSource.gaussians:
        return RegressionModule(model, optimizer=optimizer, scheduler=scheduler)
    return CausalLMModule(model, optimizer=optimizer, scheduler=scheduler, head=head, compile_model=run.trainer.compile)


def fit_phase(model, head, data: TrainDataModule, phase: Phase, run: C.TrainConfig, job_dir: Path,
              callbacks: list[L.Callback]) -> tuple[TrainingModule, int, int]:
    """Train one phase through the one fine-tuning Trainer, or restore it if a previous run of the
    job finished or checkpointed it.

    Returns the module, the phase's optimiser steps and the step it resumed from (0: a fresh
    start; all its steps: restored finished).
    """
    batches = data.steps_per_epoch()
    total = phase_steps(phase, batches, run)
    module = training_module(model, head, phase, total, run)
    checkpoints = PhaseCheckpoints(job_dir, phase.name, run.trainer.checkpoint_every_n_steps)
    if checkpoints.finished():
        steps = checkpoints.restore_finished(module, callbacks)
        return module, steps, steps
    saves = checkpoints.callbacks()
    trainer = L.Trainer(**{**run.trainer.lightning_args(), "log_every_n_steps": _log_interval(run, batches, total)},
                        max_epochs=phase.epochs, max_steps=total,
                        logger=wandb_runs.phase_loggers(run, job_dir, phase.name),
                        **cluster.trainer_kwargs(run.trainer),
                        use_distributed_sampler=False,  # ftdyn's batch samplers shard over ranks (data/batches.py)
                        enable_checkpointing=bool(saves), enable_model_summary=False,
                        callbacks=callbacks + saves)
    model.train()  # evaluation before fitting left it in eval mode
    unsharded = sharding.spare(module) if run.trainer.strategy == C.Strategy.fsdp else None
    trainer.fit(module, data, ckpt_path=checkpoints.resume_path())
    checkpoints.finish(trainer)
    if unsharded is not None:  # every rank held only its shard: make the weights whole again
        sharding.unshard(module, into=unsharded)
    return module, trainer.global_step, module.resumed_from_step
