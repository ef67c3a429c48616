"""Typed schemas for every config group (registered with Hydra's ConfigStore by `compose.register`).

The root `TrainConfig` is the first entry of `conf/train.yaml`'s defaults, so every group option
(a YAML file under `conf/<group>/`) is merged into a typed node: a misspelled key, a value of the
wrong type or a closed choice outside its Enum fails at composition with the key's full name.
The defaults live here, once: an option file states only what differs from them (a test holds
every YAML leaf to that).

Closed choices and the method table are `ftdyn.config.choices`; how a field is marked,
`ftdyn.config.settings`.
Every setting is one of two kinds, marked on the field itself:
- what is computed (the default): model, checkpoint, task, method, prompt, few-shot, replay,
  evaluation protocol, optimiser, precision, seed. The run key (`ftdyn.config.keys.run_key`) hashes these.
- how it is launched and logged (`launch=True`): threads, progress bar, log interval, evaluation
  batch size, checkpoint cadence, `keep`, logger, local data directories. Never in the run key.

Numeric bounds are declared on the field too (`ge`, `gt`, `lt`); `TrainConfig.__post_init__`
checks every bound and every group's cross-field `problems()`, and raises one `ConfigError`
listing all of them before anything is loaded (`to_typed`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ftdyn.config.choices import (
    HEAD_METHODS,
    LORA_METHODS,
    METHOD_TABLE,
    MULTI_PROCESS_STRATEGIES,
    TOY_METHODS,
    Diagnostic,
    Keep,
    LabelScoring,
    Method,
    MethodSpec,
    ModelSource,
    PromptFormat,
    ReplaySource,
    SplitKind,
    Strategy,
    TaskKind,
    TaskSource,
)
from ftdyn.config.paths import conf_dir
from ftdyn.config.settings import bound_problems, json_safe, setting


class ConfigError(ValueError):
    """One or more config values are not allowed; the message lists every problem."""


ALL_LINEAR = "all-linear"  #: peft's name for every linear layer of a model but its output layer
#: the linear layers of ftdyn's own ladders (Llama) but the output: what `all-linear` adapts in them
LADDER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _target_problems(key: str, targets: list[str]) -> list[str]:
    """What is wrong with a list of LoRA targets: empty, or `all-linear` beside module names."""
    if not targets:
        return [f"{key} is empty: name the modules LoRA adapts, or [{ALL_LINEAR}]"]
    if ALL_LINEAR in targets and len(targets) > 1:
        return [f"{key}={list(targets)}: {ALL_LINEAR} stands alone (every linear layer but the output); "
                f"allowed [{ALL_LINEAR}] or a list of module names"]
    return []


def _importable(dotted: str) -> bool:
    """Whether `package.module.attribute` names something importable (a `_target_`)."""
    module, _, attribute = dotted.rpartition(".")
    try:
        return bool(module) and hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


def task_options() -> list[str]:
    """The task options: one `conf/task/<name>.yaml` each."""
    return sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


@dataclass
class ArchConfig:
    """Shape of a Llama-architecture model that ftdyn builds from a transformers config."""

    hidden_size: int = setting(128, ge=1)
    num_layers: int = setting(4, ge=1)
    num_heads: int = setting(4, ge=1)
    intermediate_size: int = setting(384, ge=1)
    vocab_size: int = setting(1024, ge=1)  #: BPE vocabulary trained on tinyworld
    max_position: int = setting(1024, ge=1)  #: the context: prompts are cut to fit it (ftdyn.data.encoding)


@dataclass
class PretrainConfig:
    """How ftdyn pre-trains a ladder on tinyworld (tokens = steps * batch_size * seq_len)."""

    steps: int = setting(600, ge=1)
    batch_size: int = setting(32, ge=1)
    seq_len: int = setting(128, ge=1)
    lr: float = setting(3e-3, gt=0)
    warmup_steps: int = setting(30, ge=0)
    world_seed: int = setting(0, ge=0)  #: which world (people and their facts)
    n_people: int = setting(20, ge=1)
    corpus_seed: int = setting(1, ge=0)  #: which documents about it
    heldout_docs: int = setting(200, ge=1)  #: documents of a disjoint stream for the held-out LM loss
    seed: int = setting(0, ge=0)  #: weight initialisation
    #: share of documents that are question-answer text about half the people (ftdyn.world.corpus.qa_people):
    #: what makes the facts extractable by a question (Allen-Zhu & Li 3.1, mixed training); 0: none
    qa_share: float = setting(0.0, ge=0, lt=1)


@dataclass
class TextConfig:
    """A named text dataset (loaded with `datasets.load_dataset`), packed into LM rows: the
    pre-training-distribution text of a hub model, for forgetting (held-out) and replay."""

    path: Optional[str] = None  #: hub id, e.g. wikitext; None: none (held-out measures read tinyworld text instead)
    name: Optional[str] = None  #: dataset config, e.g. wikitext-103-raw-v1
    heldout_split: str = "test"  #: rows for pretrain_loss / forget_ce / forget_kl
    replay_split: str = "train"  #: rows replay rehearses (replay.source=text)
    field: str = "text"
    heldout_rows: int = setting(200, ge=1)  #: packed rows of seq_len tokens kept for the held-out measures
    seq_len: int = setting(256, ge=1)
    #: offline: <local_dir>/<path>/<name>/<split>.jsonl (else $FTDYN_DATA_DIR)
    local_dir: Optional[str] = setting(None, launch=True)


@dataclass
class ModelConfig:
    """A model and its checkpoint ladder. The defaults are the tiny ladder's (`model=tiny`)."""

    name: str = MISSING  #: the option's name, e.g. tiny
    source: ModelSource = ModelSource.ladder  #: ladder: built by ftdyn on tinyworld; hub: loaded by name
    checkpoints: list[int] = MISSING  #: pre-training steps of the ladder, increasing; the last is the final one
    hf_id: Optional[str] = None  #: hub repository (source=hub)
    revision_format: str = "step{step}"  #: hub revision of a step
    arch: ArchConfig = field(default_factory=ArchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trust_remote_code: bool = False  #: run the hub repository's own code (never unless true)
    final_revision: Optional[str] = None  #: hub revision of the last checkpoint (e.g. main), else by revision_format
    #: offline stand-in: one saved checkpoint per revision, in <local_dir>/<revision>/
    local_dir: Optional[str] = setting(None, launch=True)
    dtype: str = "float32"  #: weights as loaded (float32 keeps master weights exact under bf16-mixed)
    #: the modules LoRA adapts in this model unless method.targets says otherwise: module names, or
    #: [all-linear], peft's name for every linear layer but the output (any architecture)
    lora_targets: list[str] = setting([ALL_LINEAR])
    text: TextConfig = field(default_factory=TextConfig)
    width: int = setting(64, ge=1)  #: source=toy: hidden units of each MLP layer
    depth: int = setting(2, ge=1)  #: source=toy: hidden layers of the MLP

    def problems(self) -> list[str]:
        out = []
        if not self.checkpoints:
            out.append("model.checkpoints is empty: list the ladder's pre-training steps")
        if sorted(set(self.checkpoints)) != list(self.checkpoints) or any(s <= 0 for s in self.checkpoints):
            out.append(f"model.checkpoints={list(self.checkpoints)}: must be positive, increasing steps")
        built = self.source in (ModelSource.ladder, ModelSource.toy)  # pre-trained by ftdyn itself
        if built and self.checkpoints and self.checkpoints[-1] != self.pretrain.steps:
            out.append(f"model.checkpoints ends at {self.checkpoints[-1]} but model.pretrain.steps="
                       f"{self.pretrain.steps}: the last checkpoint must be the final step")
        if self.source == ModelSource.hub and not self.hf_id:
            out.append("model.hf_id is required when model.source=hub")
        out += _target_problems("model.lora_targets", self.lora_targets)
        if self.text.path and self.text.heldout_split == self.text.replay_split:
            out.append(f"model.text.heldout_split and model.text.replay_split are both {self.text.heldout_split!r}: "
                       "replay would train on the held-out text; name two different splits")
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
    split: str = MISSING  #: e.g. train, validation, test
    fields: dict[str, str] = field(default_factory=dict)  #: example field -> dataset column
    label_map: dict[str, str] = field(default_factory=dict)  #: dataset label value (as text) -> label word
    formatter: Optional[str] = None  #: named function of ftdyn.tasks.formatters applied to each example
    fewshot_split: Optional[str] = None  #: an eval set's own demonstrations come from this split, not task train


@dataclass
class TaskConfig:
    """A task: where its examples come from, how it is scored, which sets it is evaluated on.

    A task file states what the task is (name, version, family, kind, its sets); sizes default here.
    """

    name: str = MISSING
    version: int = setting(MISSING, ge=1)  #: bump when the task's data or scoring changes
    family: str = MISSING  #: selects the prompt templates (ftdyn.tasks.prompts)
    kind: TaskKind = MISSING
    source: TaskSource = TaskSource.tinyworld
    label_words: list[str] = field(default_factory=list)  #: classification answers, in label order
    train_size: int = setting(2000, ge=1)
    eval_size: int = setting(300, ge=1)  #: examples per evaluation set
    eval_sets: dict[str, SplitKind] = field(default_factory=dict)  #: split name -> split_kind
    eval_only: bool = False  #: evaluation only, never trained on (the knowledge probe, syn_probe)
    max_new_tokens: int = setting(60, ge=1)  #: generation length for kind=generation
    data: dict[str, HubSetConfig] = field(default_factory=dict)  #: source=hub: train, validation, each eval set
    subsample_seed: int = setting(42, ge=0)  #: source=hub: train = shuffle(seed).select(range(train_size))
    #: source=hub: read <local_dir>/<path>/<name>/<split>.jsonl (else $FTDYN_DATA_DIR)
    local_dir: Optional[str] = setting(None, launch=True)
    #: score on this task option's evaluation sets instead of own ones (an instruction set
    #: evaluated on multiple-choice sets, as Tulu on ARC); its demonstrations come from that task
    eval_task: Optional[str] = None

    def problems(self) -> list[str]:
        out = []
        if self.eval_task is not None and self.eval_task not in task_options():
            out.append(f"task.eval_task={self.eval_task!r}: allowed {task_options()} (conf/task/*.yaml)")
        if not self.eval_sets and self.eval_task is None:
            out.append(f"task {self.name}: task.eval_sets is empty")
        if self.source == TaskSource.hub:
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
    """How the model is adapted: which phases run (`METHOD_TABLE`) and their settings.

    One training loop; methods differ in what trains. Head methods score their task through a
    linear head on the last-token feature: lp, lpft and lplora first fit it to convergence on
    the frozen model's features (an L2 logistic regression, the linear probe: probe_*), ft and lorahead start it
    fresh; lpft and ft then train everything, lplora and lorahead LoRA adapters, with the head.
    The training settings below are shared by every method, so a method comparison stays like
    for like unless a method file says otherwise.
    """

    name: Method = MISSING
    lr: float = setting(5e-4, gt=0)
    epochs: int = setting(1, ge=1)
    batch_size: int = setting(8, ge=1)  #: Amuro & Char's batch
    max_steps: int = setting(-1, ge=-1)  #: stop each phase after this many optimiser steps (-1: every epoch)
    rank: int = setting(8, ge=1)  #: LoRA rank r
    #: LoRA scale numerator: updates are scaled by alpha / r (alpha / sqrt(r) if rslora)
    alpha: float = setting(16.0, gt=0)
    dropout: float = setting(0.0, ge=0, lt=1)
    #: modules LoRA adapts: names (e.g. [q_proj, v_proj]), [all-linear] (every linear layer but the
    #: output), or null: the model's own (model.lora_targets)
    targets: Optional[list[str]] = None
    rslora: bool = False  #: rank-stabilised scaling (Kalajdzievski)
    #: linear-probe phase (lp / lpft / lplora): inverse L2 strength of scikit-learn's LogisticRegression,
    #: minimising probe_c * sum of per-example cross-entropy + 0.5 * ||W||^2 (bias not penalised)
    probe_c: float = setting(1.0, gt=0)
    #: linear-probe phase: L-BFGS stops once every gradient entry of that objective / (probe_c * n) is below this
    probe_tol: float = setting(1e-4, gt=0)
    probe_max_iter: int = setting(5000, ge=1)  #: linear-probe phase: L-BFGS iterations at most (Tomihari & Sato's 5000)

    @property
    def spec(self) -> MethodSpec:
        return METHOD_TABLE[Method(self.name)]

    def problems(self) -> list[str]:
        out = []
        if self.max_steps == 0:
            out.append("method.max_steps=0: allowed -1 (every epoch) or >= 1")
        if self.targets is not None and Method(self.name) in LORA_METHODS:
            out += _target_problems("method.targets", self.targets)
        return out


@dataclass
class OptimConfig:
    """The optimiser and learning-rate schedule of every training phase, built with
    `hydra.utils.instantiate`. An option file's mapping merges into the default one.

    The optimiser is called with the phase's trainable parameters and `lr` (method.lr); the
    schedule with the optimiser, `num_warmup_steps` and `num_training_steps` (transformers'
    schedule signature). A linear-probe phase uses neither: it is fitted by L-BFGS (ftdyn.methods.linear_probe).
    """

    optimizer: dict[str, Any] = setting({"_target_": "torch.optim.AdamW", "_partial_": True, "weight_decay": 0.0})
    scheduler: dict[str, Any] = setting({"_target_": "transformers.get_linear_schedule_with_warmup",
                                         "_partial_": True})
    warmup_ratio: float = setting(0.03, ge=0, lt=1)  #: warmup steps = ceil(ratio * a phase's steps)

    def problems(self) -> list[str]:
        out = []
        for key in ("optimizer", "scheduler"):
            target = getattr(self, key).get("_target_")
            if not target:
                out.append(f"optim.{key}._target_ is missing: name the callable, e.g. torch.optim.AdamW")
            elif not _importable(target):
                out.append(f"optim.{key}._target_={target!r}: no such callable (module.attribute)")
            if not getattr(self, key).get("_partial_"):
                out.append(f"optim.{key}._partial_ must be true: ftdyn passes the parameters and steps itself")
        return out


@dataclass
class PromptConfig:
    """Prompt format used for training and the formats every evaluation is run in."""

    train: PromptFormat = PromptFormat.default
    eval: list[PromptFormat] = setting([PromptFormat.default])


@dataclass
class FewshotConfig:
    """Demonstrations from the train split prepended to each evaluated prompt.

    `k_after` defaults to the interpolation `${.k}`: fine-tuned models are scored with the same k
    demonstrations as the base, as Amuro & Char score both (their result ids end `_4shots`), so a
    before/after difference is the fine-tuning's alone. `fewshot.k_after=0` scores them zero-shot.
    The interpolation resolves before the run key is hashed: `k_after` unset and `k_after=<k>` are
    the same run.
    """

    k: int = setting(4, ge=0)  #: before fine-tuning (and for method=base)
    k_after: int = setting("${.k}", ge=0)  #: after fine-tuning (default: the same as k)
    seed: int = setting(0, ge=0)
    #: also score every prompted set 0-shot at both stages (rows of both protocols, told apart by
    #: `shots`): a study in the source's k-shot protocol keeps a zero-shot reading beside it
    also_zero_shot: bool = False


@dataclass
class ReplayConfig:
    """Share of each training batch drawn from pre-training text, trained with the LM loss."""

    rate: float = setting(0.0, ge=0, lt=1)
    source: ReplaySource = ReplaySource.pretrain  #: pretrain: the ladder's own stream (tinyworld); text: model.text
    seq_len: int = setting(64, ge=1)  #: tokens per replay row


@dataclass
class EvalConfig:
    """What every job measures besides its task's own evaluation sets."""

    batch_size: int = setting(64, launch=True, ge=1)  #: prompts per forward pass: speed, not results
    probe: bool = True  #: knowledge cloze on world facts (split_kind=probe)
    pretrain_loss: bool = True  #: LM loss and forgetting on held-out pre-training text (split_kind=pretrain)
    every_n_steps: int = setting(0, ge=0)  #: also record train loss and forgetting every N optimiser steps (0: never)
    #: other task options whose in-domain sets every stage also scores (eval_set <task>/<split>)
    cross_tasks: list[str] = field(default_factory=list)
    #: how classification reads the LM: first_token (logsumexp over the label's first sub-token with
    #: and without a leading space), first_token_space (" label" only), next_word (Amuro & Char's
    #: code: argmax over every token of every label word with and without a leading space) or
    #: constrained (greedy decoding restricted to the label words: acc and acc_vs_base, no calibration)
    label_scoring: LabelScoring = LabelScoring.first_token
    #: cut each greedy continuation at its first newline before Rouge-L (Amuro & Char did not: off)
    cut_at_newline: bool = False
    #: inside-the-run diagnostics (docs/diagnostics.md), any of head_norm (classifier norm at every
    #: in-loop step), features (feature change against the start, Fisher ratio), ntk (NTK split, FT ratio),
    #: ntk_change (each traced step's change of f on trace points as the NTK predicts it, beside the actual one:
    #: the toy, and ladder classification; ftdyn.analysis.ntk_trace)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    diagnostic_size: int = setting(64, ge=2)  #: features: the first N examples of the in-domain test set
    #: ntk: the first N training examples (an N*C x N*C kernel); ntk_change on a ladder model: the
    #: first N examples of the in-domain test set are its trace points (the toy: 64 per set)
    ntk_size: int = setting(16, ge=1)
    ntk_steps: int = setting(32, ge=0)  #: ntk_change: trace the first N optimiser steps (0: every step)
    #: WiSE-FT: also evaluate (1 - a) * theta_0 + a * theta_ft for each a here (stage=after rows with an `alpha`)
    interpolate: list[float] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        unknown = [t for t in self.cross_tasks if t not in task_options()]
        if unknown:
            out.append(f"eval.cross_tasks: unknown task(s) {unknown}; allowed {task_options()} (conf/task/*.yaml)")
        outside = [a for a in self.interpolate if not 0 <= a <= 1]
        if outside:
            out.append(f"eval.interpolate: {outside} outside [0, 1]; each is the fine-tuned model's weight, "
                       "allowed [0, 1]")
        if Diagnostic.head_norm in self.diagnostics and not self.every_n_steps:
            out.append("eval.diagnostics has head_norm, measured at in-loop steps, but eval.every_n_steps=0: "
                       "set it >= 1")
        return out


#: Trainer arguments ftdyn sets itself, per phase; `trainer.extra` may not name them
OWNED_TRAINER_ARGS = ("max_epochs", "max_steps", "logger", "callbacks", "strategy", "num_nodes", "plugins",
                      "use_distributed_sampler", "enable_checkpointing", "enable_model_summary")


@dataclass
class TrainerConfig:
    """The Lightning Trainer: the fields marked `lightning` and `extra` go to `lightning.Trainer`
    as one mapping (`lightning_args`); the rest are ftdyn's own."""

    accelerator: str = setting("cpu")
    devices: int = setting(1, ge=1)
    precision: str = "32-true"
    log_every_n_steps: int = setting(10, launch=True, ge=1)
    enable_progress_bar: bool = setting(False, launch=True)
    #: any other lightning.Trainer argument, passed as is (e.g. gradient_clip_val, accumulate_grad_batches)
    extra: dict[str, Any] = field(default_factory=dict)
    #: torch CPU threads per job (0: torch's default). Tiny models are bound by per-op overhead,
    #: so two 1-thread jobs side by side (hydra/launcher=pairs) train twice as fast.
    threads: int = setting(0, launch=True, ge=0)
    #: save checkpoints/<phase>/last.ckpt this often, to resume a killed job (0: never)
    checkpoint_every_n_steps: int = setting(100, launch=True, ge=0)
    keep: Keep = setting(Keep.none, launch=True)  #: checkpoints a done job keeps: none | last (the final weights) | all
    strategy: Strategy = Strategy.auto  #: Lightning strategy: auto (one process), ddp or fsdp (one process per device)
    num_nodes: int = setting(1, ge=1)  #: machines per job; processes per job = num_nodes * devices
    # The fast path (docs/performance.md). Settings of speed, not results, are launch settings, as
    # eval.batch_size is: they change numbers only within float rounding (tests/test_packing.py).
    #: pack each batch's examples into rows with per-example attention, no padding (ftdyn.data.packing)
    packing: bool = setting(True, launch=True)
    #: tokens per packed row (0: the batch's longest example); a fixed width gives compile few shapes
    pack_width: int = setting(0, launch=True, ge=0)
    #: batch examples of similar length (windows of 50 batches): other batches, so other results
    bucket_by_length: bool = False
    compile: bool = setting(False, launch=True)  #: run the training forward through torch.compile
    #: on CUDA, torch AdamW/Adam with their fused kernel (unless optim.optimizer sets `fused`)
    fused_optimizer: bool = setting(True, launch=True)

    LIGHTNING_FIELDS: typing.ClassVar[tuple[str, ...]] = ("accelerator", "devices", "precision", "log_every_n_steps",
                                                          "enable_progress_bar")

    def lightning_args(self) -> dict[str, Any]:
        """Arguments of `lightning.Trainer` from this config (ftdyn adds the per-phase ones)."""
        return {**{name: getattr(self, name) for name in self.LIGHTNING_FIELDS}, **self.extra}

    def problems(self) -> list[str]:
        import lightning as L

        allowed = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", *OWNED_TRAINER_ARGS,
                                                                           *self.LIGHTNING_FIELDS}
        owned = sorted(set(self.extra) & set(OWNED_TRAINER_ARGS))
        unknown = sorted(set(self.extra) - allowed - set(OWNED_TRAINER_ARGS) - set(self.LIGHTNING_FIELDS))
        out = [f"trainer.extra.{k}: ftdyn sets this Trainer argument itself" for k in owned]
        out += [f"trainer.extra.{k}: not an argument of lightning.Trainer; allowed {sorted(allowed)}" for k in unknown]
        out += [f"trainer.extra.{k}: set trainer.{k} instead"
                for k in sorted(set(self.extra) & set(self.LIGHTNING_FIELDS))]
        return out

    @property
    def world_size(self) -> int:
        """Training processes of one job (ranks): one per device on every node."""
        return self.devices * self.num_nodes if self.strategy in MULTI_PROCESS_STRATEGIES else 1


@dataclass
class LoggerConfig:
    """Where training curves go, as `_target_` leaves built with `hydra.utils.instantiate`.

    `csv` (always): a Lightning logger, called per phase with `save_dir` (the job directory),
    `name` and `version` (the phase), so curves land in `<job>/<phase>/metrics.csv`.
    `wandb` (logger=wandb; null: no W&B): `wandb.init`'s arguments for the job's run
    (ftdyn.launch.wandb_runs adds id, resume, name, job_type, config and the automatic tags; a null
    `group` becomes the sweep's name, a null `mode` offline unless an API key is set).
    """

    csv: dict[str, Any] = setting({"_target_": "lightning.pytorch.loggers.CSVLogger", "_partial_": True})
    wandb: Optional[dict[str, Any]] = None

    def problems(self) -> list[str]:
        out = [] if self.csv.get("_target_") else ["logger.csv._target_ is missing: name a Lightning logger class"]
        if self.wandb is not None:
            mode = self.wandb.get("mode")
            if mode is not None and mode not in WANDB_MODES:
                out.append(f"logger.wandb.mode={mode!r}: allowed {list(WANDB_MODES)} or null (automatic)")
        return out


WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class TrainConfig:
    """One job: a checkpoint of a model, fine-tuned by a method on a task, evaluated before/after."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    fewshot: FewshotConfig = field(default_factory=FewshotConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata={"launch": True})
    seed: int = setting(0, ge=0)

    def __post_init__(self) -> None:
        problems = bound_problems(self)
        problems += [p for group in (self.model, self.task, self.method, self.optim, self.eval, self.trainer,
                                                  self.logger)
                     for p in group.problems()]
        problems += self._cross_group_problems()
        if problems:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))

    def _cross_group_problems(self) -> list[str]:
        out = []
        if self.ckpt.step is not None and self.model.checkpoints and self.ckpt.step not in self.model.checkpoints:
            out.append(f"ckpt.step={self.ckpt.step} is not in the {self.model.name} ladder; "
                       f"available steps: {list(self.model.checkpoints)}")
        if self.method.name in HEAD_METHODS and self.task.kind != TaskKind.classification:
            out.append(f"method={self.method.name} trains a classification head, but task={self.task.name} "
                       f"is {self.task.kind}; methods allowed for it: "
                       f"{[str(m) for m in Method if m not in HEAD_METHODS]}")
        hub = self.model.source == ModelSource.hub
        if hub and self.eval.probe:
            out.append(f"eval.probe=true: the world-facts probe only exists for ladder models, not "
                       f"model.source=hub ({self.model.name}); set eval.probe=false")
        if self.replay.rate > 0 and self.replay.source == ReplaySource.pretrain and hub:
            out.append(f"replay.source=pretrain: ftdyn has no pre-training stream of hub model "
                       f"{self.model.name}; use replay.source=text (model.text)")
        if self.replay.rate > 0 and self.replay.source == ReplaySource.text and not self.model.text.path:
            out.append(f"replay.source=text but model.text.path is not set for {self.model.name}")
        if self.trainer.bucket_by_length and self.replay.rate > 0:
            out.append("trainer.bucket_by_length=true with replay.rate > 0: replay batches follow the replay plan; "
                       "set one of them off")
        out += self._toy_problems() + self._ntk_change_problems()
        if self.task.eval_only and self.method.name != Method.base:
            out.append(f"task={self.task.name} is evaluation-only; use method=base (got method={self.method.name})")
        return out

    def _toy_problems(self) -> list[str]:
        """The two-Gaussians toy (ftdyn.gaussians) pairs its own model and task, and fine-tunes in one process."""
        toy_model, toy_task = self.model.source == ModelSource.toy, self.task.source == TaskSource.gaussians
        out = []
        if toy_model != toy_task:
            out.append(f"model={self.model.name} (source={self.model.source}) with task={self.task.name} "
                       f"(source={self.task.source}): the two-Gaussians toy needs model.source=toy and "
                       f"task.source=gaussians together (model=mlp task=two_gaussians)")
        unknown_sets = sorted(set(self.task.eval_sets) - {"x1", "x2"}) if toy_task else []
        if unknown_sets:
            out.append(f"task.eval_sets: {unknown_sets} are not sets of the two-Gaussians toy; allowed x1, x2")
        if toy_model and self.method.name not in TOY_METHODS:
            out.append(f"method={self.method.name}: the toy MLP allows {[str(m) for m in TOY_METHODS]}")
        if toy_model and (self.trainer.strategy != Strategy.auto or self.trainer.accelerator != "cpu"):
            out.append(f"trainer.strategy={self.trainer.strategy}, trainer.accelerator={self.trainer.accelerator}: "
                       f"the toy MLP trains in one process on the CPU (strategy auto, accelerator cpu)")
        others = sorted(str(d) for d in set(self.eval.diagnostics) - {Diagnostic.ntk_change})
        if toy_model and others:
            out.append(f"eval.diagnostics {others}: the toy MLP has no head or features to measure; allowed ntk_change")
        return out

    def _ntk_change_problems(self) -> list[str]:
        """Where the NTK trace (ftdyn.analysis.ntk_trace) cannot predict a step from one batch on one process."""
        if Diagnostic.ntk_change not in self.eval.diagnostics:
            return []
        out = []
        if self.model.source != ModelSource.toy and self.task.kind != TaskKind.classification:
            out.append(f"eval.diagnostics has ntk_change, which traces a classifier's logits, but "
                       f"task={self.task.name} is {self.task.kind}; allowed for classification tasks and the "
                       f"two-Gaussians toy")
        trainer = self.trainer
        if trainer.strategy != Strategy.auto or trainer.devices * trainer.num_nodes > 1:
            out.append(f"eval.diagnostics has ntk_change with trainer.strategy={trainer.strategy}, "
                       f"{trainer.devices * trainer.num_nodes} device(s): each rank steps on its own batch (fsdp: on "
                       f"sharded weights), so one rank cannot predict the update; allowed in one process "
                       f"(strategy auto, one device)")
        if trainer.extra.get("accumulate_grad_batches", 1) != 1:
            out.append("eval.diagnostics has ntk_change with trainer.extra.accumulate_grad_batches: a batch is not "
                       "an optimiser step; allowed without accumulation")
        return out

    @property
    def lora_targets(self) -> list[str]:
        """The modules LoRA adapts: method.targets, else the model's (model.lora_targets). On
        ftdyn's own ladders, whose layers are known (Llama), [all-linear] is spelled out as their
        seven projections (`LADDER_LINEAR`), so the run key names the modules either way."""
        targets = list(self.method.targets if self.method.targets is not None else self.model.lora_targets)
        if targets == [ALL_LINEAR] and self.model.source == ModelSource.ladder:
            return list(LADDER_LINEAR)
        return targets

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


def as_dict(obj) -> dict:
    """A typed config (or any part of it) as plain nested dicts, Enums as their values."""
    return json_safe(obj)  # json_safe turns a dataclass into its dict
