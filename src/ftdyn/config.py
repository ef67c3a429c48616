"""Typed schemas for every config group, registered with Hydra's ConfigStore.

The root `TrainConfig` is the first entry of `conf/train.yaml`'s defaults, so every group option
(a YAML file under `conf/<group>/`) is merged into a typed node: a misspelled key or a value of
the wrong type fails at composition with the key's full name. Checks that span fields live in
`problems()` methods; `TrainConfig.__post_init__` gathers all of them into one `ConfigError`,
raised by `to_typed(cfg)` before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

METHODS = ("base", "sft", "lora", "lp", "lpft", "lplora")
HEAD_METHODS = ("lp", "lpft", "lplora")  #: a classification head on the last-token feature
LORA_METHODS = ("lora", "lplora")
LORA_FIELDS = ("rank", "alpha", "dropout", "targets", "rslora")
PROBE_FIELDS = ("probe_lr", "probe_epochs")
PROMPT_FORMATS = ("default", "io", "instruct")
TASK_KINDS = ("classification", "generation", "multiple_choice")
SPLIT_KINDS = ("in_domain", "out_of_domain", "probe", "pretrain")
LABEL_SCORINGS = ("first_token", "first_token_space", "constrained")
MODEL_SOURCES = ("ladder", "hub")
KEEP = ("none", "last", "all")  #: trainer.keep
RESUME_FIELDS = ("checkpoint_every_n_steps", "keep")  #: trainer fields that never change a result
STRATEGIES = ("auto", "ddp", "fsdp")
MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp")  #: one process (rank) per device
LOGGER_KINDS = ("csv", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


class ConfigError(ValueError):
    """One or more config values are not allowed; the message lists every problem."""


def cache_root() -> Path:
    """`$FTDYN_CACHE` (default `~/.cache/ftdyn`): built ladders and checkpoint fingerprints."""
    return Path(os.environ.get("FTDYN_CACHE", Path.home() / ".cache" / "ftdyn"))


def conf_dir() -> Path:
    """`conf/` inside an installed wheel, else the repository's `conf/` beside `src/`."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def task_options() -> list[str]:
    """The task options: one `conf/task/<name>.yaml` each."""
    return sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


@dataclass
class ArchConfig:
    """Shape of a Llama-architecture model that ftdyn builds from a transformers config."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    vocab_size: int = 1024  #: BPE vocabulary trained on tinyworld
    max_position: int = 1024


@dataclass
class PretrainConfig:
    """How ftdyn pre-trains a ladder on tinyworld (tokens = steps * batch_size * seq_len)."""

    steps: int = 600
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 30
    world_seed: int = 0  #: which world (people and their facts)
    n_people: int = 20
    corpus_seed: int = 1  #: which documents about it
    heldout_docs: int = 200  #: documents of a disjoint stream for the held-out LM loss
    seed: int = 0  #: weight initialisation


@dataclass
class TextConfig:
    """A named text dataset (loaded with `datasets.load_dataset`), packed into LM rows: the
    pre-training-distribution text of a hub model, for forgetting (held-out) and replay."""

    path: Optional[str] = None  #: hub id, e.g. wikitext; None: the model has none
    name: Optional[str] = None  #: dataset config, e.g. wikitext-103-raw-v1
    heldout_split: str = "test"  #: rows for pretrain_loss / forget_ce / forget_kl
    replay_split: str = "train"  #: rows replay rehearses (replay.source=text)
    field: str = "text"
    heldout_rows: int = 200  #: packed rows of seq_len tokens kept for the held-out measures
    seq_len: int = 256
    local_dir: Optional[str] = None  #: offline: <local_dir>/<path>/<name>/<split>.jsonl (else $FTDYN_DATA_DIR)


@dataclass
class ModelConfig:
    """A model and its checkpoint ladder."""

    name: str = "tiny"
    source: str = "ladder"  #: ladder: built by ftdyn on tinyworld; hub: loaded by name
    checkpoints: list[int] = field(default_factory=list)  #: pre-training steps of the ladder
    hf_id: Optional[str] = None  #: hub repository (source=hub)
    revision_format: str = "step{step}"  #: hub revision of a step
    arch: ArchConfig = field(default_factory=ArchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trust_remote_code: bool = False  #: run the hub repository's own code (never unless true)
    final_revision: Optional[str] = None  #: hub revision of the last checkpoint (e.g. main), else by revision_format
    local_dir: Optional[str] = None  #: offline stand-in: one saved checkpoint per revision, in <local_dir>/<revision>/
    dtype: str = "float32"  #: weights as loaded (float32 keeps master weights exact under bf16-mixed)
    text: TextConfig = field(default_factory=TextConfig)

    def problems(self) -> list[str]:
        out = []
        if self.source not in MODEL_SOURCES:
            out.append(f"model.source={self.source!r}: allowed {list(MODEL_SOURCES)}")
        if not self.checkpoints:
            out.append("model.checkpoints is empty: list the ladder's pre-training steps")
        if sorted(set(self.checkpoints)) != list(self.checkpoints) or any(s <= 0 for s in self.checkpoints):
            out.append(f"model.checkpoints={list(self.checkpoints)}: must be positive, increasing steps")
        if self.source == "ladder" and self.checkpoints and self.checkpoints[-1] != self.pretrain.steps:
            out.append(f"model.checkpoints ends at {self.checkpoints[-1]} but model.pretrain.steps="
                       f"{self.pretrain.steps}: the last checkpoint must be the final step")
        if self.source == "hub" and not self.hf_id:
            out.append("model.hf_id is required when model.source=hub")
        return out


@dataclass
class CkptConfig:
    """Which checkpoint of the ladder: `step` null means the final one."""

    step: Optional[int] = None


@dataclass
class HubSetConfig:
    """One split of a hub dataset as a task's examples (`ftdyn.tasks.hub`)."""

    path: str = ""  #: hub id, e.g. glue, SetFit/qqp
    name: Optional[str] = None  #: dataset config, e.g. mnli
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)  #: example field -> dataset column
    label_map: dict[str, str] = field(default_factory=dict)  #: dataset label value (as text) -> label word
    formatter: Optional[str] = None  #: named function of ftdyn.tasks.formatters applied to each example
    fewshot_split: Optional[str] = None  #: an eval set's own demonstrations come from this split, not task train


@dataclass
class TaskConfig:
    """A task: where its examples come from, how it is scored, which sets it is evaluated on."""

    name: str = "syn_nli"
    version: int = 1
    family: str = "nli"  #: selects the prompt templates (ftdyn.tasks.prompts)
    kind: str = "classification"
    source: str = "tinyworld"
    label_words: list[str] = field(default_factory=list)  #: classification answers, in label order
    train_size: int = 2000
    eval_size: int = 300  #: examples per evaluation set
    eval_sets: dict[str, str] = field(default_factory=dict)  #: split name -> split_kind
    eval_only: bool = False  #: a probe: never trained on
    max_new_tokens: int = 60  #: generation length for kind=generation
    data: dict[str, HubSetConfig] = field(default_factory=dict)  #: source=hub: train, validation, each eval set
    subsample_seed: int = 42  #: source=hub: train = shuffle(seed).select(range(train_size))
    local_dir: Optional[str] = None  #: source=hub: read <local_dir>/<path>/<name>/<split>.jsonl (else $FTDYN_DATA_DIR)
    #: score on this task option's evaluation sets instead of own ones (an instruction set
    #: evaluated on multiple-choice sets, as Tulu on ARC); its demonstrations come from that task
    eval_task: Optional[str] = None

    def problems(self) -> list[str]:
        out = []
        if self.kind not in TASK_KINDS:
            out.append(f"task.kind={self.kind!r}: allowed {list(TASK_KINDS)}")
        if self.eval_task is not None and self.eval_task not in task_options():
            out.append(f"task.eval_task={self.eval_task!r}: allowed {task_options()} (conf/task/*.yaml)")
        if not self.eval_sets and self.eval_task is None:
            out.append(f"task {self.name}: task.eval_sets is empty")
        for split, kind in self.eval_sets.items():
            if kind not in SPLIT_KINDS:
                out.append(f"task.eval_sets.{split}={kind!r}: allowed {list(SPLIT_KINDS)}")
        if self.train_size <= 0 or self.eval_size <= 0:
            out.append(f"task.train_size and task.eval_size must be > 0, got {self.train_size}, {self.eval_size}")
        if self.source == "hub":
            needed = [*([] if self.eval_only else ["train"]), *self.eval_sets]
            out += [f"task {self.name}: task.data.{s} is missing: source=hub needs a hub set for every split "
                    f"it uses ({needed})" for s in needed if s not in self.data]
            out += [f"task.data.{s}.path is empty: name the hub dataset" for s, d in self.data.items() if not d.path]
            out += [f"task.data.{s}.label_map maps to {word!r}, not a label word of {self.name}: "
                    f"allowed {list(self.label_words)}" for s, d in self.data.items()
                    for word in d.label_map.values() if word not in self.label_words]
        return out


@dataclass
class MethodConfig:
    """How the model is adapted. One training loop; methods differ in what trains.

    lp, lpft and lplora first fit a linear head on the frozen model's last-token feature
    (probe_lr, probe_epochs); lpft then trains everything, lplora LoRA adapters, with the head.
    """

    name: str = "sft"
    lr: float = 5e-4
    epochs: int = 1
    batch_size: int = 8
    max_steps: int = -1  #: stop each stage after this many optimiser steps (-1: every epoch)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    rank: int = 8  #: LoRA rank r
    alpha: float = 16.0  #: LoRA scale numerator: updates are scaled by alpha / r (alpha / sqrt(r) if rslora)
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])  #: every attention and MLP projection
    rslora: bool = False  #: rank-stabilised scaling (Kalajdzievski)
    probe_lr: float = 1e-2  #: linear-probe stage of lp / lpft / lplora
    probe_epochs: int = 1

    def problems(self) -> list[str]:
        out = []
        if self.name not in METHODS:
            out.append(f"method.name={self.name!r}: allowed {list(METHODS)}")
        out += [f"method.{key}={value}: must be > 0" for key, value in (("lr", self.lr), ("probe_lr", self.probe_lr))
                if value <= 0]
        if self.rank <= 0:
            out.append(f"method.rank={self.rank}: must be a positive integer")
        if not 0 <= self.dropout < 1:
            out.append(f"method.dropout={self.dropout}: allowed [0, 1)")
        if self.epochs <= 0 or self.batch_size <= 0:
            out.append(f"method.epochs={self.epochs}, method.batch_size={self.batch_size}: must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            out.append(f"method.warmup_ratio={self.warmup_ratio}: allowed [0, 1)")
        return out


@dataclass
class PromptConfig:
    """Prompt format used for training and the formats every evaluation is run in."""

    train: str = "default"
    eval: list[str] = field(default_factory=lambda: ["default"])

    def problems(self) -> list[str]:
        bad = [f for f in [self.train, *self.eval] if f not in PROMPT_FORMATS]
        return [f"prompt format {f!r}: allowed {list(PROMPT_FORMATS)}" for f in bad]


@dataclass
class FewshotConfig:
    """Demonstrations from the train split prepended to each evaluated prompt."""

    k: int = 4  #: before fine-tuning (and for method=base)
    k_after: int = 0  #: after fine-tuning
    seed: int = 0

    def problems(self) -> list[str]:
        if self.k < 0 or self.k_after < 0:
            return [f"fewshot.k={self.k}, fewshot.k_after={self.k_after}: must be >= 0"]
        return []


REPLAY_SOURCES = ("pretrain", "text")


@dataclass
class ReplayConfig:
    """Share of each training batch drawn from pre-training text, trained with the LM loss."""

    rate: float = 0.0
    source: str = "pretrain"  #: pretrain: the ladder's own stream (tinyworld); text: model.text's replay split
    seq_len: int = 64  #: tokens per replay row

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.rate < 1:
            out.append(f"replay.rate={self.rate}: allowed [0, 1)")
        if self.source not in REPLAY_SOURCES:
            out.append(f"replay.source={self.source!r}: allowed {list(REPLAY_SOURCES)}")
        if self.seq_len <= 0:
            out.append(f"replay.seq_len={self.seq_len}: must be > 0")
        return out


@dataclass
class EvalConfig:
    """What every job measures besides its task's own evaluation sets."""

    batch_size: int = 64
    probe: bool = True  #: knowledge cloze on world facts (split_kind=probe)
    pretrain_loss: bool = True  #: LM loss and forgetting on held-out pre-training text (split_kind=pretrain)
    every_n_steps: int = 0  #: also record train loss and forgetting every N optimiser steps (0: never)
    #: other task options whose in-domain sets every stage also scores (eval_set <task>/<split>)
    cross_tasks: list[str] = field(default_factory=list)
    #: how classification reads the LM: first_token (logsumexp over the label's first sub-token with
    #: and without a leading space), first_token_space (" label" only) or constrained (greedy
    #: decoding restricted to the label words: acc and acc_vs_base, no calibration)
    label_scoring: str = "first_token"

    def problems(self) -> list[str]:
        out = [f"eval.batch_size={self.batch_size}: must be > 0"] if self.batch_size <= 0 else []
        if self.every_n_steps < 0:
            out.append(f"eval.every_n_steps={self.every_n_steps}: must be >= 0 (0: never)")
        if self.label_scoring not in LABEL_SCORINGS:
            out.append(f"eval.label_scoring={self.label_scoring!r}: allowed {list(LABEL_SCORINGS)}")
        unknown = [t for t in self.cross_tasks if t not in task_options()]
        if unknown:
            out.append(f"eval.cross_tasks: unknown task(s) {unknown}; allowed {task_options()} (conf/task/*.yaml)")
        return out


@dataclass
class TrainerConfig:
    """Arguments of the Lightning Trainer."""

    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "32-true"
    log_every_n_steps: int = 10
    enable_progress_bar: bool = False
    threads: int = 0  #: torch CPU threads per job (0: torch's default). Tiny models are bound by
    #: per-op overhead, so two 1-thread jobs side by side (hydra/launcher=joblib) train twice as fast.
    checkpoint_every_n_steps: int = 100  #: save checkpoints/<stage>/last.ckpt this often, to resume a killed job (0: never)
    keep: str = "none"  #: checkpoints a done job keeps: none | last (the final weights) | all
    strategy: str = "auto"  #: Lightning strategy: auto (one process), ddp or fsdp (one process per device)
    num_nodes: int = 1  #: machines per job; processes per job = num_nodes * devices

    def problems(self) -> list[str]:
        out = []
        if self.checkpoint_every_n_steps < 0:
            out.append(f"trainer.checkpoint_every_n_steps={self.checkpoint_every_n_steps}: must be >= 0 (0: never)")
        if self.keep not in KEEP:
            out.append(f"trainer.keep={self.keep!r}: allowed {list(KEEP)}")
        if self.strategy not in STRATEGIES:
            out.append(f"trainer.strategy={self.strategy!r}: allowed {list(STRATEGIES)}")
        if self.devices <= 0 or self.num_nodes <= 0:
            out.append(f"trainer.devices={self.devices}, trainer.num_nodes={self.num_nodes}: must be > 0")
        return out

    @property
    def world_size(self) -> int:
        """Training processes of one job (ranks): one per device on every node."""
        return self.devices * self.num_nodes if self.strategy in MULTI_PROCESS_STRATEGIES else 1


@dataclass
class LoggerConfig:
    """Where training curves go: `csv` writes metrics.csv in the job directory; `wandb` also logs
    the run to Weights & Biases (ftdyn.wandb_logging)."""

    kind: str = "csv"
    project: str = "ftdyn"  #: W&B project
    entity: Optional[str] = None  #: W&B team or user (null: the API key's default)
    group: Optional[str] = None  #: W&B group (null: the sweep's name, the sweep directory's name)
    tags: list[str] = field(default_factory=list)  #: added to the automatic task / ckpt / model tags
    mode: Optional[str] = None  #: online, offline or disabled (null: offline unless an API key is set)

    def problems(self) -> list[str]:
        out = []
        if self.kind not in LOGGER_KINDS:
            out.append(f"logger.kind={self.kind!r}: allowed {list(LOGGER_KINDS)}")
        if self.mode is not None and self.mode not in WANDB_MODES:
            out.append(f"logger.mode={self.mode!r}: allowed {list(WANDB_MODES)} or null (automatic)")
        return out


@dataclass
class TrainConfig:
    """One job: a checkpoint of a model, fine-tuned by a method on a task, evaluated before/after."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    fewshot: FewshotConfig = field(default_factory=FewshotConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [p for group in (self.model, self.task, self.method, self.prompt, self.fewshot,
                                    self.replay, self.eval, self.trainer, self.logger) for p in group.problems()]
        if self.ckpt.step is not None and self.model.checkpoints and self.ckpt.step not in self.model.checkpoints:
            problems.append(f"ckpt.step={self.ckpt.step} is not in the {self.model.name} ladder; "
                            f"available steps: {list(self.model.checkpoints)}")
        if self.method.name in HEAD_METHODS and self.task.kind != "classification":
            problems.append(f"method={self.method.name} trains a classification head, but task={self.task.name} "
                            f"is {self.task.kind}; methods allowed for it: "
                            f"{[m for m in METHODS if m not in HEAD_METHODS]}")
        if self.model.source == "hub" and self.eval.probe:
            problems.append(f"eval.probe=true: the world-facts probe only exists for ladder models, not "
                            f"model.source=hub ({self.model.name}); set eval.probe=false")
        if self.replay.rate > 0 and self.replay.source == "pretrain" and self.model.source == "hub":
            problems.append(f"replay.source=pretrain: ftdyn has no pre-training stream of hub model "
                            f"{self.model.name}; use replay.source=text (model.text)")
        if self.model.source == "hub" and (self.eval.pretrain_loss or self.eval.every_n_steps) \
                and not self.model.text.path:
            problems.append(f"eval.pretrain_loss / eval.every_n_steps measure held-out pre-training text, "
                            f"but model.text.path is not set for hub model {self.model.name}")
        if self.replay.rate > 0 and self.replay.source == "text" and not self.model.text.path:
            problems.append(f"replay.source=text but model.text.path is not set for {self.model.name}")
        if self.task.eval_only and self.method.name != "base":
            problems.append(f"task={self.task.name} is evaluation-only; use method=base "
                            f"(got method={self.method.name})")
        if problems:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))

    @property
    def ckpt_step(self) -> int:
        """The resolved pre-training step: the one asked for, or the ladder's final one."""
        return self.ckpt.step if self.ckpt.step is not None else self.model.checkpoints[-1]


def _unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys of `node` that `schema` does not declare, recursively (`+key=...` bypasses struct mode)."""
    types = typing.get_type_hints(schema)
    problems = []
    for key in node.keys():
        if key not in types:
            problems.append(f"unknown key {prefix}{key}: allowed keys of {prefix.rstrip('.') or 'the root'} "
                            f"are {sorted(types)}")
        elif dataclasses.is_dataclass(types[key]):
            problems += _unknown_keys(node[key], types[key], f"{prefix}{key}.")
    return problems


def to_typed(cfg: DictConfig) -> TrainConfig:
    """Turn a composed config into a `TrainConfig`, raising `ConfigError` with every problem."""
    unknown = _unknown_keys(cfg, TrainConfig)
    if unknown:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(unknown))
    return OmegaConf.to_object(cfg)


def register() -> None:
    """Make the root schema available to `conf/train.yaml` as `train_schema`, the `ftdyn.join`
    resolver that turns a list into a sweep's comma list (`conf/ckpt/range.yaml`), and
    `ftdyn.gpus`, the GPUs per node a launcher reserves for the trainer."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("ftdyn.join"):
        OmegaConf.register_new_resolver("ftdyn.join", lambda items: ",".join(str(i) for i in items))
    if not OmegaConf.has_resolver("ftdyn.gpus"):  # GPUs a launcher reserves per node (conf/hydra/launcher)
        OmegaConf.register_new_resolver("ftdyn.gpus", lambda accelerator, devices:
                                        devices if accelerator in ("gpu", "cuda") else 0)


def as_dict(obj) -> dict:
    """A typed config (or any part of it) as plain nested dicts."""
    return dataclasses.asdict(obj)
