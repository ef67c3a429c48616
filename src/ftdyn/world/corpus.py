"""The tinyworld pre-training corpus: English-like documents about one fixed world.

Five kinds of document, mixed at fixed odds: a profile (facts about one person in varied
phrasings), a narrative (two people meet; their facts are restated in passing), rules (what
people of a job do), events (two-person sentences, each with its rewrite) and quizzes (a fact
about a story character, then whether a claim about them holds: yes, no, or not said).

Quizzes play the part of the question-answer text of real corpora. Their characters get random
attributes in every quiz, so a quiz can only be answered by checking the claim against its
context, never from memory. Statements about the world's people are always true.
Deterministic: the same world and seed give the same documents.

The held-out text (`heldout_documents`) has the same five kinds at the same odds, written with
phrasings and frames the training stream never uses (`templates.HELDOUT_TEXT_*`): the training
stream, however far it is read, cannot contain a held-out document. With a closed world of 20
people, another seed of the same generator would repeat most training documents verbatim.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import partial

from ftdyn.world.entities import ATTRIBUTES, JOB_RULES, OBJECTS, STORY_PEOPLE, VALUES, World
from ftdyn.world.templates import EVENTS, FACT, HELDOUT_TEXT_EVENTS, HELDOUT_TEXT_FACT


def fact_sentence(rng: random.Random, person: str, attribute: str, value: str,
                  templates: tuple[int, ...] | None = None, phrasings: dict = FACT) -> str:
    """One statement of one fact, in a random phrasing of `phrasings` (from `templates` if given)."""
    options = phrasings[attribute]
    index = rng.choice(templates) if templates is not None else rng.randrange(len(options))
    return options[index].format(p=person, v=value)


def _profile(rng: random.Random, world: World, phrasings: dict = FACT) -> str:
    person = rng.choice(world.people)
    facts = list(world.facts[person].items())
    rng.shuffle(facts)
    return " ".join(fact_sentence(rng, person, a, v, phrasings=phrasings) for a, v in facts)


def _narrative(rng: random.Random, world: World) -> str:
    a, b = rng.sample(world.people, 2)
    fa, fb = world.facts[a], world.facts[b]
    return (f"One day, {a} left {fa['city']} to see {b}. {b} lives in {fb['city']}. "
            f"{a} brought the {fa['pet']}. {b} is a {fb['job']}, and {a} is a {fa['job']}. "
            f"In the evening {a} went back to {fa['city']}.")


def _rules(rng: random.Random, world: World) -> str:
    person = rng.choice(world.people)
    job = world.facts[person]["job"]
    other = rng.choice(sorted(JOB_RULES))
    return (f"Every {job} {JOB_RULES[job]}. {person} is a {job}, so {person} {JOB_RULES[job]}. "
            f"Every {other} {JOB_RULES[other]}.")


def _events(rng: random.Random, world: World, events: tuple = EVENTS) -> str:
    sentences = []
    for _ in range(2):
        a, b = rng.sample(world.people, 2)
        event = rng.randrange(len(events))
        plain = events[event][0]
        rewrite = events[event][1]
        fill = dict(a=a, b=b, o=rng.choice(OBJECTS), c=world.facts[a]["city"])
        sentences.append(f"{plain.format(**fill)} In other words, {rewrite.format(**fill)}")
    return " ".join(sentences)


def _quiz(rng: random.Random, world: World, phrasings: dict = FACT) -> str:
    person = rng.choice(STORY_PEOPLE)
    stated = rng.choice(ATTRIBUTES)
    told = rng.choice(VALUES[stated])
    answer = rng.choice(("Yes.", "No.", "Not said."))
    attribute, value = stated, told
    if answer == "No.":
        value = rng.choice([v for v in VALUES[stated] if v != told])
    elif answer == "Not said.":
        attribute = rng.choice([a for a in ATTRIBUTES if a != stated])
        value = rng.choice(VALUES[attribute])
    claim = fact_sentence(rng, person, attribute, value, phrasings=phrasings).rstrip(".")
    told_sentence = fact_sentence(rng, person, stated, told, phrasings=phrasings)
    return f"In a story, {told_sentence} Is it true that {claim}? {answer}"


def _heldout_narrative(rng: random.Random, world: World) -> str:
    a, b = rng.sample(world.people, 2)
    fa, fb = world.facts[a], world.facts[b]
    return (f"{a} and {b} met in {fa['city']}, where {a} lives. {b} came from {fb['city']} with a {fb['pet']}. "
            f"{a} is a {fa['job']}, and {b} is a {fb['job']}. The next day {b} went back to {fb['city']}.")


def _heldout_rules(rng: random.Random, world: World) -> str:
    person = rng.choice(world.people)
    job = world.facts[person]["job"]
    other = rng.choice(sorted(JOB_RULES))
    return (f"{person} is a {job}, and every {job} {JOB_RULES[job]}. So {person} {JOB_RULES[job]} too. "
            f"Every {other} {JOB_RULES[other]}.")


DOCUMENT_KINDS = ((_profile, 0.4), (_narrative, 0.15), (_rules, 0.1), (_events, 0.15), (_quiz, 0.2))
# The same kinds at the same odds, each with phrasings or a frame the training stream never uses.
HELDOUT_DOCUMENT_KINDS = ((partial(_profile, phrasings=HELDOUT_TEXT_FACT), 0.4), (_heldout_narrative, 0.15),
                          (_heldout_rules, 0.1), (partial(_events, events=HELDOUT_TEXT_EVENTS), 0.15),
                          (partial(_quiz, phrasings=HELDOUT_TEXT_FACT), 0.2))


def _stream(kinds, world: World, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    makers, weights = zip(*kinds)
    while True:
        yield rng.choices(makers, weights)[0](rng, world)


def documents(world: World, seed: int) -> Iterator[str]:
    """An endless, seeded stream of documents about `world`: the pre-training text."""
    return _stream(DOCUMENT_KINDS, world, seed)


def heldout_documents(world: World, seed: int) -> Iterator[str]:
    """An endless, seeded stream of held-out documents about `world`, none of which `documents`
    can yield for any seed: each has a sentence in a held-out phrasing or frame."""
    return _stream(HELDOUT_DOCUMENT_KINDS, world, seed)


def corpus(world: World, seed: int, n_docs: int) -> list[str]:
    """The first `n_docs` documents of the stream for `seed`."""
    stream = documents(world, seed)
    return [next(stream) for _ in range(n_docs)]
