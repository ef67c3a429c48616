"""The closed choices of ftdyn's configs, as Enums OmegaConf checks at composition, and the method
table: for each method, its stages, what each stage trains, and whether it has a head."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Method(enum.StrEnum):
    base = "base"
    sft = "sft"
    lora = "lora"
    lp = "lp"
    lpft = "lpft"
    lplora = "lplora"


class Trains(enum.StrEnum):
    """What a stage of a method trains."""

    all = "all"  #: every weight of the model (and the head, if any)
    lora = "lora"  #: LoRA adapters (peft) and the head, if any
    head = "head"  #: the classification head alone, on the frozen model's features


@dataclass(frozen=True)
class MethodSpec:
    """One row of the method table: the stages in order, as (stage name, what it trains), and
    whether task rows are scored by a classification head on the last-token feature."""

    stages: tuple[tuple[str, Trains], ...]
    head: bool = False

    @property
    def lora(self) -> bool:
        return any(trains == Trains.lora for _, trains in self.stages)


PROBE = ("probe", Trains.head)  #: lp, lpft, lplora: first fit a linear head on the frozen features

#: The method table: a new method is one row here (and a `conf/method/<name>.yaml`).
METHOD_TABLE: dict[Method, MethodSpec] = {
    Method.base: MethodSpec(()),  # evaluation only
    Method.sft: MethodSpec((("ft", Trains.all),)),
    Method.lora: MethodSpec((("lora", Trains.lora),)),
    Method.lp: MethodSpec((PROBE,), head=True),
    Method.lpft: MethodSpec((PROBE, ("ft", Trains.all)), head=True),  # Kumar et al. 2022
    Method.lplora: MethodSpec((PROBE, ("lora", Trains.lora)), head=True),  # Tomihari & Sato 2024
}
HEAD_METHODS = tuple(m for m, spec in METHOD_TABLE.items() if spec.head)
LORA_METHODS = tuple(m for m, spec in METHOD_TABLE.items() if spec.lora)
LORA_FIELDS = ("rank", "alpha", "dropout", "targets", "rslora")  #: method fields only LoRA methods read
PROBE_FIELDS = ("probe_lr", "probe_epochs")  #: method fields only head methods read


class PromptFormat(enum.StrEnum):
    default = "default"
    io = "io"
    instruct = "instruct"


class TaskKind(enum.StrEnum):
    classification = "classification"
    generation = "generation"
    multiple_choice = "multiple_choice"
    regression = "regression"  #: a number per input, squared error (the two-Gaussians toy, ftdyn.toy)


class TaskSource(enum.StrEnum):
    tinyworld = "tinyworld"
    hub = "hub"
    gaussians = "gaussians"  #: sampled by ftdyn.toy: X1 ~ N(-1, 0.2), X2 ~ N(1, 0.2)


class SplitKind(enum.StrEnum):
    in_domain = "in_domain"
    out_of_domain = "out_of_domain"
    probe = "probe"
    pretrain = "pretrain"


class LabelScoring(enum.StrEnum):
    first_token = "first_token"
    first_token_space = "first_token_space"
    constrained = "constrained"


class ModelSource(enum.StrEnum):
    ladder = "ladder"
    hub = "hub"
    toy = "toy"  #: an MLP that ftdyn pre-trains on the two-Gaussians regression (ftdyn.toy)


TOY_METHODS = (Method.base, Method.sft)  #: what the toy MLP can be fine-tuned by: no LoRA targets, no label head
TOY_MODEL_FIELDS = ("width", "depth")  #: model fields only model.source=toy reads


class ReplaySource(enum.StrEnum):
    pretrain = "pretrain"
    text = "text"


class Keep(enum.StrEnum):
    """Checkpoints a done job keeps."""

    none = "none"
    last = "last"  #: the final stage's end.ckpt: the fine-tuned weights
    all = "all"


class Strategy(enum.StrEnum):
    auto = "auto"  #: one process
    ddp = "ddp"  #: one process (rank) per device, gradients all-reduced
    fsdp = "fsdp"  #: one process per device, parameters sharded (FSDP2)


MULTI_PROCESS_STRATEGIES = (Strategy.ddp, Strategy.fsdp)
