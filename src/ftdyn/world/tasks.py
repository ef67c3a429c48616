"""Synthetic tasks in the tinyworld language.

Every task has the splits `train`, `validation`, `test` (in-domain) and two out-of-domain sets:
`ood_templates` (phrasings the task never trains on but the pre-training corpus uses) and
`ood_entities` (people the corpus never mentions). Evaluation splits never repeat an example
of the train split. Examples are plain dicts whose fields the prompt formats name.

NLI premises and summary documents state *random* attributes of the world's people, not their
true ones: the task is decided by the text alone (world knowledge is no shortcut: with true
facts, "entailment" hypotheses were true facts and "contradiction" ones false), and the space
of examples is large enough that every split keeps balanced labels after removing train
examples. What pre-training contributes is the language: names, phrasings and their synonymy.
World knowledge itself is measured by the knowledge probe.

`syn_mc` is the exception, and the ARC of tinyworld: four-way multiple-choice questions about
the world's *true* facts (where a person lives, what every baker does), answered from what
pre-training taught. Its train split asks about half of the people and jobs, its evaluation sets
about the other half, so fine-tuning teaches the format, never the answers. `syn_instruct`
(instruction -> response pairs: questions about train-half facts, reading a stated fact,
summaries) is the Tulu of tinyworld, scored on syn_mc's sets. Both have no `ood_entities` set:
unseen people have no facts to ask about.

`syn_qa` and `syn_cloze` are knowledge tasks over the same true facts, classified over the
attribute's values: `syn_qa` asks a question ("Where does Maya live?" -> Oslo), `syn_cloze`
completes a statement in the corpus's own phrasing ("Maya lives in" -> Oslo). Both train on the
facts of `qa_people` (the people a `model.pretrain.qa_share` corpus asks questions about) and are
tested on the other people's, whose answers only pre-training text states: only a checkpoint
that stored those facts extractably can gain. Their splits are every fact once per phrasing
(60 per set with the default world); the train split repeats its facts in shuffled passes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from ftdyn.world.corpus import fact_sentence, qa_people
from ftdyn.world.entities import (
    ATTRIBUTES,
    JOB_RULES,
    OBJECTS,
    STORY_PEOPLE,
    UNSEEN_PEOPLE,
    VALUES,
    World,
    random_person_facts,
)
from ftdyn.world.templates import (
    ANSWER,
    CLOZE,
    EVENTS,
    EVENTS_TASK_TRAIN,
    FACT,
    NEGATED,
    QUESTION,
    RULE_QUESTION,
    SUMMARY,
    TASK_HELD_OUT,
    TASK_TRAIN,
)

SPLITS = ("train", "validation", "test", "ood_templates", "ood_entities")
NLI_LABELS = ("entailment", "neutral", "contradiction")
PARA_LABELS = ("yes", "no")
N_CHOICES = 4  #: syn_mc answer choices


class _Draw:
    """What one split draws from: whose facts, and which phrasings."""

    def __init__(self, world: World, split: str, rng: random.Random):
        self.rng = rng
        self.unseen = split == "ood_entities"
        self.templates = TASK_HELD_OUT if split == "ood_templates" else TASK_TRAIN
        self.events = (tuple(i for i in range(len(EVENTS)) if i not in EVENTS_TASK_TRAIN)
                       if split == "ood_templates" else EVENTS_TASK_TRAIN)
        self.world = world
        self.split = split

    def person(self) -> tuple[str, dict[str, str]]:
        """A person (known, or unseen for `ood_entities`) with random attributes."""
        pool = UNSEEN_PEOPLE if self.unseen else self.world.people
        return self.rng.choice(pool), random_person_facts(self.rng)

    def pair(self) -> tuple[str, str]:
        pool = UNSEEN_PEOPLE if self.unseen else self.world.people
        a, b = self.rng.sample(pool, 2)
        return a, b

    def fact(self, person: str, attribute: str, value: str) -> str:
        return fact_sentence(self.rng, person, attribute, value, self.templates)


def _nli(d: _Draw, label: str) -> dict:
    """One stated fact; the hypothesis restates it, contradicts it, or adds an unstated fact.

    Contradictions are two thirds negations of the premise and one third the premise with
    another value; neutral hypotheses restate the premise and add a fact it does not state.
    Reading these cues (a negation, an added sentence) decides all but the changed-value
    contradictions, which only comparing the two values tells from entailments: a cue-only
    model tops out near 8/9 in-domain. The hypothesis uses the premise's phrasing index;
    held-out phrasings (`ood_templates`) test whether that transfers.
    """
    person, facts = d.person()
    stated = d.rng.choice(ATTRIBUTES)
    phrasing = d.rng.choice(d.templates)
    told = facts[stated]
    premise = FACT[stated][phrasing].format(p=person, v=told)
    if label == "entailment":
        hypothesis = premise
    elif label == "contradiction" and d.rng.random() < 2 / 3:
        hypothesis = NEGATED[stated][phrasing].format(p=person, v=told)
    elif label == "contradiction":
        hypothesis = FACT[stated][phrasing].format(p=person, v=d.rng.choice([v for v in VALUES[stated] if v != told]))
    else:
        other = d.rng.choice([a for a in ATTRIBUTES if a != stated])
        hypothesis = f"{premise} {d.fact(person, other, facts[other])}"
    return {"premise": premise, "hypothesis": hypothesis, "label": label}


def _para(d: _Draw, label: str) -> dict:
    a, b = d.pair()
    plain, rewrite = EVENTS[d.rng.choice(d.events)]
    fill = dict(a=a, b=b, o=d.rng.choice(OBJECTS), c=d.rng.choice(VALUES["city"]))
    first = plain.format(**fill)
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


def _summ(d: _Draw, label: None) -> dict:
    person, facts = d.person()
    order = list(ATTRIBUTES)
    d.rng.shuffle(order)
    document = " ".join(d.fact(person, a, facts[a]) for a in order)
    return {"document": document, "summary": SUMMARY.format(p=person, **facts)}


def _known_half(d: _Draw, items: tuple[str, ...]) -> tuple[str, ...]:
    """Train and validation ask about every other item from the first, evaluation sets about the rest."""
    if d.unseen:
        raise KeyError(f"split {d.split!r}: syn_mc and syn_instruct ask about true facts, which unseen "
                       "people do not have; splits: train, validation, test, ood_templates")
    return items[0::2] if d.split in ("train", "validation") else items[1::2]


def _choices(d: _Draw, answer: str, others: list[str]) -> list[str]:
    choices = [answer, *d.rng.sample(others, N_CHOICES - 1)]
    d.rng.shuffle(choices)
    return choices


def _mc(d: _Draw, label: None) -> dict:
    """A question about a true fact; the answer and three distractors, multi-token, of varied length."""
    phrasing = d.rng.choice(d.templates)
    if d.rng.random() < 0.25:
        job = d.rng.choice(_known_half(d, tuple(sorted(JOB_RULES))))
        answer, others = JOB_RULES[job], [r for j, r in JOB_RULES.items() if j != job]
        question = RULE_QUESTION[phrasing].format(job=job)
    else:
        person, attribute = d.rng.choice(_known_half(d, d.world.people)), d.rng.choice(ATTRIBUTES)
        value = d.world.facts[person][attribute]
        answer = ANSWER[attribute].format(v=value)
        others = [ANSWER[attribute].format(v=v) for v in VALUES[attribute] if v != value]
        question = QUESTION[attribute][phrasing].format(p=person)
    return {"question": question, "choices": _choices(d, answer, others), "answer": answer}


def _instruct(d: _Draw, label: None) -> dict:
    """An instruction and its response: a question about a train-half fact or rule, or a question
    or summary answered from the text about a story character (random facts, as the corpus's
    quizzes: nothing false is said about the world's people)."""
    kind = d.rng.random()
    phrasing = d.rng.choice(d.templates)
    if kind < 0.25:
        person, attribute = d.rng.choice(_known_half(d, d.world.people)), d.rng.choice(ATTRIBUTES)
        instruction = QUESTION[attribute][phrasing].format(p=person)
        response = FACT[attribute][0].format(p=person, v=d.world.facts[person][attribute])
    elif kind < 0.4:
        job = d.rng.choice(_known_half(d, tuple(sorted(JOB_RULES))))
        instruction, response = RULE_QUESTION[phrasing].format(job=job), f"Every {job} {JOB_RULES[job]}."
    elif kind < 0.7:
        person, facts = d.rng.choice(STORY_PEOPLE), random_person_facts(d.rng)
        attribute = d.rng.choice(ATTRIBUTES)
        instruction = f"Read the text and answer. {d.fact(person, attribute, facts[attribute])} " \
                      f"{QUESTION[attribute][phrasing].format(p=person)}"
        response = ANSWER[attribute].format(v=facts[attribute]).capitalize() + "."
    else:
        person, facts = d.rng.choice(STORY_PEOPLE), random_person_facts(d.rng)
        document = " ".join(d.fact(person, a, facts[a]) for a in d.rng.sample(ATTRIBUTES, len(ATTRIBUTES)))
        instruction, response = f"Summarise the text. {document}", SUMMARY.format(p=person, **facts)
    return {"instruction": instruction, "response": response}


def _cloze(template: str, person: str) -> str:
    """A FACT phrasing up to its value: "{p} lives in {v}." -> "Maya lives in"."""
    return template.split(" {v}")[0].format(p=person)


#: the knowledge tasks: how each asks for (person, attribute, phrasing), as an example without its answer
FACT_TASKS: dict[str, Callable[[str, str, int], dict]] = {
    "syn_qa": lambda p, a, i: {"question": QUESTION[a][i].format(p=p)},
    "syn_cloze": lambda p, a, i: {"prompt": _cloze(FACT[a][i], p)},
}
_ANSWER_FIELD = {"syn_qa": "answer", "syn_cloze": "label"}  # the target field of each task's family (mc, probe)


def fact_split_people(world: World, split: str) -> tuple[str, ...]:
    """Whose facts a knowledge task's split asks about: train and validation the QA people,
    test and ood_templates the others."""
    if split == "ood_entities":
        raise KeyError("split 'ood_entities': syn_qa and syn_cloze ask about true facts, which unseen people do "
                       "not have; splits: train, validation, test, ood_templates")
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; allowed: {list(SPLITS[:-1])}")
    asked = qa_people(world)
    return asked if split in ("train", "validation") else tuple(p for p in world.people if p not in asked)


def fact_items(world: World, task: str, split: str) -> list[dict]:
    """Every fact of the split's people once per phrasing: train and test in the TASK_TRAIN
    phrasings, validation and ood_templates in the held-out ones."""
    phrasings = TASK_TRAIN if split in ("train", "test") else TASK_HELD_OUT
    return [{**FACT_TASKS[task](p, a, i), "choices": list(VALUES[a]), _ANSWER_FIELD[task]: world.facts[p][a]}
            for p in fact_split_people(world, split) for a in ATTRIBUTES for i in phrasings]


def fact_examples(world: World, task: str, split: str, n: int, seed: int = 0,
                  exclude: set[str] | None = None) -> list[dict]:
    """`n` examples of a knowledge task's split: the train split repeats its facts in shuffled
    passes (a few dozen facts give a few hundred steps); other splits hold each fact at most once."""
    items = [e for e in fact_items(world, task, split) if example_key(e) not in (exclude or ())]
    rng = random.Random(_seed(world.seed, task, split, seed))
    if split != "train":
        rng.shuffle(items)
        return items[:n]
    examples = []
    while items and len(examples) < n:
        rng.shuffle(items)
        examples += items[:n - len(examples)]
    return examples


def knowledge_items(world: World) -> list[dict]:
    """The knowledge probe: every fact of the world as a cloze over its attribute's values."""
    return [{"prompt": CLOZE[a].format(p=p), "label": world.facts[p][a], "choices": list(VALUES[a])}
            for p in world.people for a in ATTRIBUTES]


GENERATORS: dict[str, Callable[[_Draw, str | None], dict]] = {"syn_nli": _nli, "syn_para": _para, "syn_summ": _summ,
                                                               "syn_mc": _mc, "syn_instruct": _instruct}
LABELS: dict[str, tuple[str, ...] | tuple[None]] = {"syn_nli": NLI_LABELS, "syn_para": PARA_LABELS, "syn_summ": (None,),
                                                    "syn_mc": (None,), "syn_instruct": (None,)}
MAX_TRIES = 200  # draws per example before a label's space counts as used up


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def generate(world: World, task: str, split: str, n: int, seed: int = 0,
             exclude: set[str] | None = None) -> list[dict]:
    """`n` examples of `task`'s `split`, labels in equal shares, none whose key is in `exclude`.

    Labels take turns, and each example is drawn until it is new, so removing train examples
    from an evaluation split never shifts its label balance.
    """
    if task == "syn_probe":
        return knowledge_items(world)[:n]
    if task in FACT_TASKS:
        return fact_examples(world, task, split, n, seed, exclude)
    if task not in GENERATORS:
        raise KeyError(f"unknown tinyworld task {task!r}; allowed: {sorted([*GENERATORS, *FACT_TASKS, 'syn_probe'])}")
    if split not in SPLITS:
        raise KeyError(f"task {task}: unknown split {split!r}; allowed: {list(SPLITS)}")
    draw = _Draw(world, split, random.Random(_seed(world.seed, task, split, seed)))
    labels = LABELS[task]
    examples, seen = [], set(exclude or ())
    for i in range(n):
        for _ in range(MAX_TRIES):
            example = GENERATORS[task](draw, labels[i % len(labels)])
            if example_key(example) not in seen:
                break
        else:
            raise ValueError(f"task {task}, split {split}: no new example with label {labels[i % len(labels)]!r} "
                             f"after {i} examples; the world has too few for n={n} (lower task.train_size "
                             "or task.eval_size)")
        seen.add(example_key(example))
        examples.append(example)
    return examples


def example_key(example: dict) -> str:
    """The example's fields (inputs, choices, label) as one string, to tell examples apart across splits."""
    return "\x1f".join(str(example[k]) for k in sorted(example))
