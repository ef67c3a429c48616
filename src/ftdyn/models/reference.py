"""The checkpoint a job fine-tuned from (its base), beside the fine-tuned model, at the least memory.

Forgetting (`forget_ce`, `forget_kl`), `acc_vs_base`, feature change and WiSE-FT compare the
fine-tuned model with the checkpoint it started from. A second full copy of a 1B model costs as
much memory as the model, so a job holds its base the cheapest way its method allows
(`Reference.kind`, decided by `holding`):

- `adapters_off` (lora, lorahead, lplora): the fine-tuned model itself with its LoRA adapters
  switched off (peft's `disable_adapter`). The base weights sit untouched under the adapters.
- `same` (lp): only the head trains, so the backbone is the base.
- `copy` (full fine-tuning measured along training, `eval.every_n_steps` > 0, or the toy's NTK
  trace): a copy taken before training, on the training device, which every in-loop
  measurement compares with.
- `host_copy` (full fine-tuning on a GPU, no in-loop measurement): a copy kept in host memory
  while the model trains, moved to the GPU for the final measurements.
- `reload` (full fine-tuning on the CPU, no in-loop measurement): no copy while training, when the
  optimiser state is there too; the checkpoint is loaded again for the final measurements.

Every kind gives the same numbers as a copy taken before training (tests/test_reference.py): the
same weights, with gradients off, evaluated by the same operations.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable

import torch
from torch import nn

from ftdyn import config as C
from ftdyn.config.choices import Trains


class Holding(enum.StrEnum):
    adapters_off = "adapters_off"
    same = "same"
    copy = "copy"
    host_copy = "host_copy"
    reload = "reload"


def holding(run: C.TrainConfig, device: torch.device) -> Holding:
    """How a job of `run` that evaluates on `device` holds its base (module docstring)."""
    trains = {t for _, t in run.method.spec.phases}
    if Trains.lora in trains:
        return Holding.adapters_off
    if Trains.all not in trains:
        return Holding.same
    if read_while_training(run):
        return Holding.copy
    return Holding.host_copy if device.type != "cpu" else Holding.reload


def read_while_training(run: C.TrainConfig) -> bool:
    """Whether something reads the base while the model trains: in-loop rows (`eval.every_n_steps`),
    or the toy's NTK trace, whose frozen kernel is the checkpoint's (`eval.diagnostics=[ntk_change]`)."""
    toy_trace = run.model.source == C.ModelSource.toy and C.Diagnostic.ntk_change in run.eval.diagnostics
    return run.eval.every_n_steps > 0 or toy_trace


class AdaptersOff(nn.Module):
    """A LoRA (peft) model read with its adapters switched off: the base model it wraps.

    It shares every module with the fine-tuned model (nothing is copied); each call switches the
    adapters off for its own duration. `config`, `parameters()` and `generate` are the wrapped
    model's, so every scorer takes it as it takes a model.
    """

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft = peft_model

    @property
    def config(self):
        return self.peft.config

    def forward(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with self.peft.disable_adapter():
            return self.peft.generate(*args, **kwargs)

    def plain(self) -> nn.Module:
        """The base as a model of its own, without adapter modules (a copy: for WiSE-FT's weights)."""
        return copy.deepcopy(self.peft).unload()


def host_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in host memory, with gradients off, made tensor by tensor: a model on a
    GPU is never duplicated there first, as `copy.deepcopy(model).cpu()` would."""
    memo = {id(t): t.detach().to("cpu", copy=True) for t in model.buffers()}
    memo |= {id(p): nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=False) for p in model.parameters()}
    return copy.deepcopy(model, memo)


class Reference:
    """The base of one job: taken at the start (`Reference(run, model, device)`), read during
    training (`during_training`) and after it (`after`)."""

    def __init__(self, run: C.TrainConfig, model: nn.Module, device: torch.device,
                 reload: Callable[[], nn.Module] | None = None):
        """
        Args:
            run: The job's config (its method and in-loop settings decide the holding).
            model: The checkpoint as loaded, before any training.
            device: Where the job evaluates.
            reload: Loads the checkpoint again (`Holding.reload`).
        """
        self.kind = holding(run, device)
        self.device, self.reload = device, reload
        self.copy: nn.Module | None = None
        if self.kind == Holding.copy:
            self.copy = copy.deepcopy(model).requires_grad_(False)
        elif self.kind == Holding.host_copy:
            self.copy = host_copy(model)

    def during_training(self, model: nn.Module) -> nn.Module:
        """The base beside `model`, the model in training (the module's, LoRA-wrapped or not)."""
        if self.kind == Holding.adapters_off:
            return AdaptersOff(model)
        if self.kind == Holding.same:
            return model
        if self.kind != Holding.copy:
            raise RuntimeError(f"the base is held as {self.kind}, which in-loop measurements cannot read")
        return self.copy

    def after(self, model: nn.Module) -> nn.Module:
        """The base beside the fine-tuned `model`, on the evaluation device."""
        if self.kind in (Holding.adapters_off, Holding.same, Holding.copy):
            return self.during_training(model)
        if self.kind == Holding.host_copy:
            return self.copy.to(self.device)
        return self.reload().requires_grad_(False).to(self.device)
