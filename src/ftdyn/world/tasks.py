"""Synthetic tasks grounded in the tinyworld world.

Every task has the splits `train`, `validation`, `test` (in-domain) and two out-of-domain sets:
`ood_templates` (phrasings the task never trains on but the pre-training corpus uses) and
`ood_entities` (people the corpus never mentions). Evaluation splits never repeat an example
of the train split. Examples are plain dicts whose fields the prompt formats name.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from ftdyn.world.corpus import fact_sentence
from ftdyn.world.entities import ATTRIBUTES, OBJECTS, UNSEEN_PEOPLE, VALUES, World, random_person_facts
from ftdyn.world.templates import CLOZE, EVENTS, EVENTS_TASK_TRAIN, SUMMARY, TASK_HELD_OUT, TASK_TRAIN

SPLITS = ("train", "validation", "test", "ood_templates", "ood_entities")
NLI_LABELS = ("entailment", "neutral", "contradiction")
PARA_LABELS = ("yes", "no")


class _Draw:
    """What one split draws from: whose facts, and which phrasings."""

    def __init__(self, world: World, split: str, rng: random.Random):
        self.rng = rng
        self.unseen = split == "ood_entities"
        self.templates = TASK_HELD_OUT if split == "ood_templates" else TASK_TRAIN
        self.events = (tuple(i for i in range(len(EVENTS)) if i not in EVENTS_TASK_TRAIN)
                       if split == "ood_templates" else EVENTS_TASK_TRAIN)
        self.world = world

    def person(self) -> tuple[str, dict[str, str]]:
        if self.unseen:
            return self.rng.choice(UNSEEN_PEOPLE), random_person_facts(self.rng)
        name = self.rng.choice(self.world.people)
        return name, self.world.facts[name]

    def pair(self) -> tuple[str, str]:
        pool = UNSEEN_PEOPLE if self.unseen else self.world.people
        a, b = self.rng.sample(pool, 2)
        return a, b

    def fact(self, person: str, attribute: str, value: str) -> str:
        return fact_sentence(self.rng, person, attribute, value, self.templates)


def _nli(d: _Draw) -> dict:
    person, facts = d.person()
    stated = d.rng.sample(ATTRIBUTES, d.rng.choice((1, 2)))
    premise = " ".join(d.fact(person, a, facts[a]) for a in stated)
    label = d.rng.choice(NLI_LABELS)
    if label == "neutral":
        attribute = d.rng.choice([a for a in ATTRIBUTES if a not in stated])
        value = d.rng.choice(VALUES[attribute])
    else:
        attribute = d.rng.choice(stated)
        value = facts[attribute]
        if label == "contradiction":
            value = d.rng.choice([v for v in VALUES[attribute] if v != value])
    return {"premise": premise, "hypothesis": d.fact(person, attribute, value), "label": label}


def _para(d: _Draw) -> dict:
    a, b = d.pair()
    plain, rewrite = EVENTS[d.rng.choice(d.events)]
    fill = dict(a=a, b=b, o=d.rng.choice(OBJECTS), c=d.rng.choice(VALUES["city"]))
    first = plain.format(**fill)
    label = d.rng.choice(PARA_LABELS)
    if label == "yes":
        second = rewrite.format(**fill)
    elif d.rng.random() < 0.7:  # PAWS-style: same words, roles swapped
        swapped = dict(fill, a=b, b=a)
        second = (rewrite if d.rng.random() < 0.5 else plain).format(**swapped)
    else:  # one detail changed
        other = dict(fill, o=d.rng.choice([o for o in OBJECTS if o != fill["o"]]),
                     c=d.rng.choice([c for c in VALUES["city"] if c != fill["c"]]))
        second = rewrite.format(**other)
    if d.rng.random() < 0.5:
        first, second = second, first
    return {"sentence1": first, "sentence2": second, "label": label}


def _summ(d: _Draw) -> dict:
    person, facts = d.person()
    order = list(ATTRIBUTES)
    d.rng.shuffle(order)
    document = " ".join(d.fact(person, a, facts[a]) for a in order)
    return {"document": document, "summary": SUMMARY.format(p=person, **facts)}


def probe_items(world: World) -> list[dict]:
    """The knowledge probe: every fact of the world as a cloze over its attribute's values."""
    return [{"prompt": CLOZE[a].format(p=p), "label": world.facts[p][a], "choices": list(VALUES[a])}
            for p in world.people for a in ATTRIBUTES]


GENERATORS: dict[str, Callable[[_Draw], dict]] = {"syn_nli": _nli, "syn_para": _para, "syn_summ": _summ}


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def generate(world: World, task: str, split: str, n: int, seed: int = 0,
             exclude: set[str] | None = None) -> list[dict]:
    """`n` examples of `task`'s `split`, skipping any whose text is in `exclude`."""
    if task == "syn_probe":
        return probe_items(world)[:n]
    if task not in GENERATORS:
        raise KeyError(f"unknown tinyworld task {task!r}; allowed: {sorted(GENERATORS) + ['syn_probe']}")
    if split not in SPLITS:
        raise KeyError(f"task {task}: unknown split {split!r}; allowed: {list(SPLITS)}")
    draw = _Draw(world, split, random.Random(_seed(world.seed, task, split, seed)))
    examples, seen = [], set(exclude or ())
    for _ in range(50 * n):
        example = GENERATORS[task](draw)
        key = example_key(example)
        if key not in seen:
            seen.add(key)
            examples.append(example)
            if len(examples) == n:
                break
    return examples


def example_key(example: dict) -> str:
    """The example's inputs and label as one string, to tell examples apart across splits."""
    return "\x1f".join(str(example[k]) for k in sorted(example) if k != "choices")
