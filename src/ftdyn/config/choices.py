"""The closed choices of ftdyn's configs, as Enums OmegaConf checks at composition, and the method
table: for each method, its phases, what each phase trains, and whether it has a head.

A method's *phases* (probe, ft, lora) are the steps of its training; a result row's *stage*
(before, after, step_N, run) says when a measurement was taken. The two words never mix."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Method(enum.StrEnum):
    base = "base"
    sft = "sft"
    lora = "lora"
    lp = "lp"
    ft = "ft"  #: full fine-tuning with a fresh linear head (the FT of Kumar et al., Tomihari & Sato)
    lpft = "lpft"
    lorahead = "lorahead"  #: LoRA with a fresh linear head (the LoRA of Tomihari & Sato)
    lplora = "lplora"


class Trains(enum.StrEnum):
    """What a phase of a method trains."""

    all = "all"  #: every weight of the model (and the head, if any)
    lora = "lora"  #: LoRA adapters (peft) and the head, if any
    head = "head"  #: the classification head alone: a converged L2 logistic regression on frozen features


@dataclass(frozen=True)
class MethodSpec:
    """One row of the method table: the phases in order, as (phase name, what it trains), and
    whether task rows are scored by a classification head on the last-token feature."""

    phases: tuple[tuple[str, Trains], ...]
    head: bool = False

    @property
    def lora(self) -> bool:
        return any(trains == Trains.lora for _, trains in self.phases)

    @property
    def linear_probe(self) -> bool:
        """Whether a linear-probe phase fits the head alone first (its fields: `PROBE_FIELDS`)."""
        return any(trains == Trains.head for _, trains in self.phases)


LINEAR_PROBE = ("probe", Trains.head)  #: lp, lpft, lplora: first fit a linear head on the frozen features

#: The method table: a new method is one row here (and a `conf/method/<name>.yaml`). `head=True`
#: is the one place that says a method scores its task through a linear head on the last-token
#: feature (trained, evaluated and diagnosed as such); without a linear-probe phase the head starts fresh.
METHOD_TABLE: dict[Method, MethodSpec] = {
    Method.base: MethodSpec(()),  # evaluation only
    Method.sft: MethodSpec((("ft", Trains.all),)),  # through the LM's label words (Amuro & Char)
    Method.lora: MethodSpec((("lora", Trains.lora),)),
    Method.lp: MethodSpec((LINEAR_PROBE,), head=True),
    Method.ft: MethodSpec((("ft", Trains.all),), head=True),  # FT baseline of Kumar et al. 2022, Tomihari & Sato 2024
    Method.lpft: MethodSpec((LINEAR_PROBE, ("ft", Trains.all)), head=True),  # Kumar et al. 2022
    Method.lorahead: MethodSpec((("lora", Trains.lora),), head=True),  # LoRA baseline of Tomihari & Sato 2024
    Method.lplora: MethodSpec((LINEAR_PROBE, ("lora", Trains.lora)), head=True),  # Tomihari & Sato 2024
}
HEAD_METHODS = tuple(m for m, spec in METHOD_TABLE.items() if spec.head)
LORA_METHODS = tuple(m for m, spec in METHOD_TABLE.items() if spec.lora)
LORA_FIELDS = ("rank", "alpha", "dropout", "targets", "rslora")  #: method fields only LoRA methods read
PROBE_FIELDS = ("probe_c", "probe_tol", "probe_max_iter")  #: method fields only methods with a linear-probe phase read


class Diagnostic(enum.StrEnum):
    """What `eval.diagnostics` measures inside a run (docs/diagnostics.md)."""

    head_norm = "head_norm"  #: classifier norm ||V||_F at every in-loop step (head methods)
    features = "features"  #: feature change against the start checkpoint, Fisher ratio
    ntk = "ntk"  #: the NTK split into pre-train- and FT-effective parts, FT ratio (head methods)
    #: the NTK's prediction of each traced step's change beside the actual one (the toy; ladder
    #: classification: head logits, or the LM methods' label-word logits)
    ntk_change = "ntk_change"


class PromptFormat(enum.StrEnum):
    default = "default"
    io = "io"
    instruct = "instruct"


class TaskKind(enum.StrEnum):
    classification = "classification"
    generation = "generation"
    multiple_choice = "multiple_choice"
    regression = "regression"  #: a number per input, squared error (the two-Gaussians toy, ftdyn.gaussians)


class TaskSource(enum.StrEnum):
    tinyworld = "tinyworld"
    hub = "hub"
    gaussians = "gaussians"  #: sampled by ftdyn.gaussians: X1 ~ N(-1, 0.2), X2 ~ N(1, 0.2)


class SplitKind(enum.StrEnum):
    in_domain = "in_domain"
    out_of_domain = "out_of_domain"
    probe = "probe"
    pretrain = "pretrain"


class LabelScoring(enum.StrEnum):
    """How classification reads a label off the language model (`ftdyn.eval.scoring`)."""

    first_token = "first_token"  #: logsumexp of the first sub-token's logits of " word" and "word"
    first_token_space = "first_token_space"  #: the first sub-token of " word" only
    next_word = "next_word"  #: Amuro & Char's `--constraint_type next_word`: argmax over every token of every form
    constrained = "constrained"  #: greedy decoding restricted to the label words' token sequences


class ModelSource(enum.StrEnum):
    ladder = "ladder"
    hub = "hub"
    toy = "toy"  #: an MLP that ftdyn pre-trains on the two-Gaussians regression (ftdyn.gaussians)


TOY_METHODS = (Method.base, Method.sft)  #: what the toy MLP can be fine-tuned by: no LoRA targets, no label head
TOY_MODEL_FIELDS = ("width", "depth")  #: model fields only model.source=toy reads


class ReplaySource(enum.StrEnum):
    pretrain = "pretrain"
    text = "text"


class Keep(enum.StrEnum):
    """Checkpoints a done job keeps."""

    none = "none"
    last = "last"  #: the final phase's end.ckpt: the fine-tuned weights
    all = "all"


class Strategy(enum.StrEnum):
    auto = "auto"  #: one process
    ddp = "ddp"  #: one process (rank) per device, gradients all-reduced
    fsdp = "fsdp"  #: one process per device, parameters sharded (FSDP2)


MULTI_PROCESS_STRATEGIES = (Strategy.ddp, Strategy.fsdp)
