"""Task registry: a task config names where examples come from; this turns it into splits.

`load(task_cfg, world)` returns a `TaskData`: the train and validation examples and every
evaluation set with its split kind. Prompts are rendered per format (`ftdyn.tasks.prompts`);
few-shot demonstrations come from the train split only, or from an evaluation set's own pool
(`EvalSet.fewshot`, hub sets with a `fewshot_split`).
"""

from __future__ import annotations

import dataclasses
import random

from ftdyn import config as C
from ftdyn.tasks import hub
from ftdyn.tasks.prompts import render, target
from ftdyn.world.entities import World
from ftdyn.world.tasks import example_key, generate

SOURCES = ("tinyworld", "hub")  #: hub: real datasets by name (ftdyn.tasks.hub)


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

    def choices(self, example: dict) -> list[str]:
        """The candidate answers of a classification example: its own, or the task's label words."""
        return list(example.get("choices") or self.cfg.label_words)

    def prompt(self, example: dict, fmt: str, demos: str = "") -> str:
        return demos + render(self.cfg.family, fmt, example)

    def target(self, example: dict) -> str:
        return target(self.cfg.family, example)


def load(cfg: C.TaskConfig, world: World, seed: int = 0) -> TaskData:
    """Every split of a task; evaluation sets never repeat a train example."""
    if cfg.source not in SOURCES:
        raise KeyError(f"task {cfg.name}: task.source={cfg.source!r} is not available; allowed: {list(SOURCES)}")
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
    return TaskData(cfg, train, validation, eval_sets)


def demonstrations(task: TaskData, k: int, seed: int, fmt: str, eval_set: EvalSet | None = None) -> str:
    """k train examples rendered as prompt + answer lines, to prepend to every evaluated prompt.

    Drawn from the train split, which shares no example with any evaluation set (`load`), or,
    for an `eval_set` with demonstrations of its own (`EvalSet.fewshot`: tulu's multiple-choice
    sets, from each dataset's train split), from those. A task without a train split (a probe)
    has nothing to draw from and is evaluated zero-shot.
    """
    own = eval_set.fewshot if eval_set is not None else []
    if k == 0 or (task.cfg.eval_only and not own):
        return ""
    pool = own or task.train
    if len(pool) < k:
        raise ValueError(f"fewshot.k={k} but task {task.cfg.name} has only {len(pool)} train examples")
    demos = random.Random(seed).sample(pool, k)
    return "".join(f"{task.prompt(d, fmt).rstrip()} {task.target(d)}\n" for d in demos)
