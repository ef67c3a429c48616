"""Sharded training (`trainer=fsdp`): FSDP2 over the job's ranks, and the full weights back after.

Lightning's `ModelParallelStrategy` sets up the ranks and a device mesh; the module shards
itself in `configure_model` (`shard`): each transformer block is its own FSDP2 unit (the
classes a transformers model names in `_no_split_modules`), then the classification head and
the rest of the model. Every parameter is then a DTensor holding one rank's shard.

Evaluation runs on rank 0 alone, and a later phase (lpft's ft after its linear probe) shards the model
afresh, so after a phase the weights are made whole again (`unshard`): the full state dict is
gathered on every rank and poured into an unsharded copy of the module taken before training
(`spare`), whose parameters sat on the meta device meanwhile and cost no memory.

FSDP2 runs on CPU over gloo as well as on GPUs over NCCL, so the tests shard real models.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

__all__ = ["is_sharded", "shard", "spare", "unshard"]

log = logging.getLogger(__name__)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of the transformers model inside `model` (peft-wrapped or not)."""
    inner = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    names = set(inner._no_split_modules or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(module: torch.nn.Module, mesh) -> None:
    """Make every transformer block of `module.model`, the head (if any) and the rest FSDP2 units.

    The head is sharded like the rest: a parameter outside every unit would train on each rank
    with that rank's gradients alone (there is no DDP wrapper to average them).
    """
    if is_sharded(module):  # Lightning may call configure_model again on a module it set up
        return
    blocks = _blocks(module.model)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    if module.head is not None:
        fully_shard(module.head, mesh=mesh)
    fully_shard(module.model, mesh=mesh)
    log.info("FSDP2: %d transformer blocks%s and the rest sharded over %d ranks", len(blocks),
             "" if module.head is None else ", the head", mesh.size())


def spare(module: torch.nn.Module) -> torch.nn.Module:
    """An unsharded copy of `module` to take its full weights after training; its parameters are
    on the meta device (no memory), its buffers are real (some, like rotary frequencies, are not
    in the state dict)."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in module.parameters()}
    return copy.deepcopy(module, memo)


def unshard(module: torch.nn.Module, into: torch.nn.Module) -> None:
    """Gather `module`'s sharded weights (a collective: every rank calls it) into `into` (from
    `spare`), then give `module` the unsharded model and head. Tied parameters stay tied."""
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    filled: dict[int, torch.nn.Parameter] = {}
    for name, param in into.named_parameters(remove_duplicate=False):
        if id(param) not in filled:
            filled[id(param)] = torch.nn.Parameter(full[name].detach(), requires_grad=param.requires_grad)
        owner, _, attr = name.rpartition(".")
        setattr(into.get_submodule(owner), attr, filled[id(param)])
    module.model, module.head = into.model, into.head
