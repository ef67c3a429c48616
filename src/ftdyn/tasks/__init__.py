"""Task registry: a task config names where examples come from; this turns it into splits.

`load(task_cfg, world)` returns a `TaskData`: the train and validation examples and every
evaluation set with its split kind. Prompts are rendered per format (`ftdyn.tasks.prompts`);
few-shot demonstrations come from the train split only, or from an evaluation set's own pool
(`EvalSet.fewshot`, hub sets with a `fewshot_split`), as separate blocks (`demonstration_blocks`,
`TaskData.fewshot_prompt`) so the encoder can drop whole ones from a prompt too long to fit.
`task_config(name)` reads another task option (`conf/task/<name>.yaml`) onto the typed schema, for cross-task evaluation and for an
instruction set scored on another task's sets, without composing inside a running Hydra app.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from omegaconf import OmegaConf

from ftdyn import config as C
from ftdyn.tasks import gaussians, hub
from ftdyn.tasks.prompts import Prompt, render, target
from ftdyn.world.entities import World
from ftdyn.world.tasks import example_key, generate

SOURCES = ("tinyworld", "hub", "gaussians")  #: hub: real datasets by name (ftdyn.tasks.hub); gaussians: the toy


@dataclasses.dataclass
class EvalSet:
    name: str
    split_kind: str
    examples: list[dict]
    fewshot: list[dict] = dataclasses.field(default_factory=list)  #: its own demonstrations (else task train)


@dataclasses.dataclass
class TaskData:
    cfg: C.TaskConfig
    train: list[dict]
    validation: list[dict]
    eval_sets: list[EvalSet]
    evaluated: TaskData | None = None  #: the task whose sets are scored instead (`task.eval_task`)

    def choices(self, example: dict) -> list[str]:
        """The candidate answers of a classification example: its own, or the task's label words."""
        return list(example.get("choices") or self.cfg.label_words)

    def prompt(self, example: dict, fmt: str, demos: str = "") -> str:
        """The prompt's text: `demos` (pre-joined demonstrations, or none) then the example's prompt."""
        return demos + render(self.cfg.family, fmt, example)

    def fewshot_prompt(self, example: dict, fmt: str, demos: Sequence[str] = ()) -> Prompt:
        """The prompt in parts (`demonstration_blocks`, then the example's prompt), so the encoder
        can drop whole demonstrations when it does not fit; its text is `prompt`'s."""
        return Prompt(render(self.cfg.family, fmt, example), tuple(demos))

    def target(self, example: dict) -> str:
        return target(self.cfg.family, example)


def task_config(name: str) -> C.TaskConfig:
    """The typed config of task option `name` (conf/task/<name>.yaml)."""
    if name not in C.task_options():
        raise C.ConfigError(f"unknown task {name!r}; allowed {C.task_options()} (conf/task/*.yaml)")
    node = OmegaConf.merge(OmegaConf.structured(C.TaskConfig), OmegaConf.load(C.conf_dir() / "task" / f"{name}.yaml"))
    cfg = OmegaConf.to_object(node)
    problems = cfg.problems()
    if problems:
        raise C.ConfigError(f"conf/task/{name}.yaml:\n  - " + "\n  - ".join(problems))
    return cfg


def load(cfg: C.TaskConfig, world: World | None, seed: int = 0) -> TaskData:
    """Every split of a task; evaluation sets never repeat a train example."""
    if cfg.source not in SOURCES:
        raise KeyError(f"task {cfg.name}: task.source={cfg.source!r} is not available; allowed: {list(SOURCES)}")
    if cfg.source == "gaussians":
        return _gaussians(cfg, seed)
    if cfg.source == "hub":
        train, validation, sets = hub.load_splits(cfg)
        return TaskData(cfg, train, validation, [EvalSet(s, cfg.eval_sets[s], e, hub.fewshot_pool(cfg, s))
                                                 for s, e in sets.items()])
    train = [] if cfg.eval_only else generate(world, cfg.name, "train", cfg.train_size, seed)
    seen = {example_key(e) for e in train}
    validation = [] if cfg.eval_only else generate(world, cfg.name, "validation", cfg.eval_size, seed, seen)
    seen |= {example_key(e) for e in validation}
    eval_sets = []
    for split, kind in cfg.eval_sets.items():
        examples = generate(world, cfg.name, split, cfg.eval_size, seed, seen)
        if not examples:
            raise ValueError(f"task {cfg.name}: evaluation set {split!r} is empty after removing train examples")
        eval_sets.append(EvalSet(split, kind, examples))
    # the sets an instruction set is scored on are its evaluation sets: its eval_size applies
    evaluated = (load(dataclasses.replace(task_config(cfg.eval_task), eval_size=cfg.eval_size), world, seed)
                 if cfg.eval_task else None)
    return TaskData(cfg, train, validation, eval_sets, evaluated)


def _gaussians(cfg: C.TaskConfig, seed: int) -> TaskData:
    """The two-Gaussians toy's task (`ftdyn.tasks.gaussians`): X1 points with the moved target to
    train on, `eval_size` fixed points of each evaluation set (x1, x2), no validation split."""
    points = gaussians.evaluation_points(cfg.eval_size, seed)
    sets = [EvalSet(name, cfg.eval_sets[name], [{"x": v} for v in x.tolist()])
            for name, x in points.items() if name in cfg.eval_sets]
    return TaskData(cfg, gaussians.finetune_rows(cfg.train_size, seed), [], sets)


def load_cross_task(name: str, world: World, seed: int = 0, eval_size: int | None = None) -> TaskData:
    """Task option `name` for cross-task evaluation: the task whose in-domain sets are scored (an
    instruction set's `eval_task`), which must have some. `eval_size` (the job's own task's) caps
    its sets, so a study that shrinks its sets shrinks the cross-task ones too."""
    cfg = task_config(name)
    if eval_size is not None:
        cfg = dataclasses.replace(cfg, eval_size=min(cfg.eval_size, eval_size))
    task = load(cfg, world, seed)
    task = task.evaluated or task
    if not any(es.split_kind == "in_domain" for es in task.eval_sets):
        raise C.ConfigError(f"eval.cross_tasks: task {name!r} has no in_domain evaluation set to score "
                            f"(its sets: {[(es.name, es.split_kind) for es in task.eval_sets]})")
    return task


def demonstrations(task: TaskData, k: int, seed: int, fmt: str, eval_set: EvalSet | None = None) -> str:
    """`demonstration_blocks` joined: the text to prepend to every evaluated prompt."""
    return "".join(demonstration_blocks(task, k, seed, fmt, eval_set))


def demonstration_blocks(task: TaskData, k: int, seed: int, fmt: str,
                         eval_set: EvalSet | None = None) -> list[str]:
    """k train examples, each rendered as its prompt, a space and its answer, then a newline.

    Drawn from the train split, which shares no example with any evaluation set (`load`), or,
    for an `eval_set` with demonstrations of its own (`EvalSet.fewshot`: tulu's multiple-choice
    sets, from each dataset's train split), from those. A task without a train split (the knowledge probe)
    has nothing to draw from and is evaluated zero-shot.
    """
    own = eval_set.fewshot if eval_set is not None else []
    if k == 0 or (task.cfg.eval_only and not own):
        return []
    pool = own or task.train
    if len(pool) < k:
        raise ValueError(f"fewshot.k={k} but task {task.cfg.name} has only {len(pool)} train examples")
    demos = random.Random(seed).sample(pool, k)
    return [f"{task.prompt(d, fmt).rstrip()} {task.target(d)}\n" for d in demos]
