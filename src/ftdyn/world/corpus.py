"""The tinyworld pre-training corpus: English-like documents about one fixed world.

Five kinds of document, mixed at fixed odds: a profile (facts about one person in varied
phrasings), a narrative (two people meet; their facts are restated in passing), rules (what
people of a job do), events (two-person sentences, each with its rewrite) and quizzes (a fact
about a story character, then whether a claim about them holds: yes, no, or not said).

Quizzes play the part of the question-answer text of real corpora. Their characters get random
attributes in every quiz, so a quiz can only be answered by checking the claim against its
context, never from memory. Statements about the world's people are always true.
Deterministic: the same world and seed give the same documents.

The held-out text (`heldout_documents`) has the same five kinds at the same odds, built from
the training stream's own sentences but combined as no training document is (two facts of a
profile's three, four events instead of two, ...): the training stream, however far it is read,
cannot contain a held-out document. Another seed of the training generator would not do: with a
closed world of 20 people it repeats most training documents verbatim (73% of 200, tiny ladder).
New phrasings would not do either: the tiny ladder rejects sentences it never saw, and its loss
on them rises with pre-training (5.5 -> 8.2 nats from step 20 to 600), so they measure
surprise at unseen wording, not language modelling of the pre-training distribution.

`pretrain_documents` adds, when asked (`model.pretrain.qa_share`), documents of another kind:
question-answer text about the world's *true* facts of a fixed half of its people
(`qa_people`), as Allen-Zhu & Li's "mixed training" (Physics of LMs 3.1): facts become
extractable by a question only when pre-training shows questions answered about some people.
At its default (0) the stream is `documents`' own, document for document.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from ftdyn.world.entities import ATTRIBUTES, JOB_RULES, OBJECTS, STORY_PEOPLE, VALUES, World
from ftdyn.world.templates import EVENTS, FACT, QUESTION


def fact_sentence(rng: random.Random, person: str, attribute: str, value: str,
                  templates: tuple[int, ...] | None = None) -> str:
    """One statement of one fact, in a random phrasing (from `templates` if given)."""
    options = FACT[attribute]
    index = rng.choice(templates) if templates is not None else rng.randrange(len(options))
    return options[index].format(p=person, v=value)


def _profile(rng: random.Random, world: World) -> str:
    person = rng.choice(world.people)
    facts = list(world.facts[person].items())
    rng.shuffle(facts)
    return " ".join(fact_sentence(rng, person, a, v) for a, v in facts)


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


def _events(rng: random.Random, world: World) -> str:
    sentences = []
    for _ in range(2):
        a, b = rng.sample(world.people, 2)
        event = rng.randrange(len(EVENTS))
        plain = EVENTS[event][0]
        rewrite = EVENTS[event][1]
        fill = dict(a=a, b=b, o=rng.choice(OBJECTS), c=world.facts[a]["city"])
        sentences.append(f"{plain.format(**fill)} In other words, {rewrite.format(**fill)}")
    return " ".join(sentences)


def _quiz(rng: random.Random, world: World) -> str:
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
    claim = fact_sentence(rng, person, attribute, value).rstrip(".")
    return f"In a story, {fact_sentence(rng, person, stated, told)} Is it true that {claim}? {answer}"


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.?]) ", text)


def _dropping_one(maker, last: bool = False):
    """A training kind with one sentence left out (the last, or one at random): the training
    stream always writes all of them."""
    def make(rng: random.Random, world: World) -> str:
        sentences = _sentences(maker(rng, world))
        del sentences[-1 if last else rng.randrange(len(sentences))]
        return " ".join(sentences)
    return make


def _twice(maker):
    """Two documents of a training kind as one (the training stream writes one per document)."""
    return lambda rng, world: f"{maker(rng, world)} {maker(rng, world)}"


DOCUMENT_KINDS = ((_profile, 0.4), (_narrative, 0.15), (_rules, 0.1), (_events, 0.15), (_quiz, 0.2))
# The same kinds at the same odds, in sentences of the training stream, combined as it never does:
# a profile with two of its three facts, a narrative without its last sentence, rules without the
# other job's, four events instead of two, two quizzes in one document.
HELDOUT_DOCUMENT_KINDS = ((_dropping_one(_profile), 0.4), (_dropping_one(_narrative, last=True), 0.15),
                          (_dropping_one(_rules, last=True), 0.1), (_twice(_events), 0.15), (_twice(_quiz), 0.2))


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
    can yield for any seed: each combines training sentences as no training document does."""
    return _stream(HELDOUT_DOCUMENT_KINDS, world, seed)


def corpus(world: World, seed: int, n_docs: int) -> list[str]:
    """The first `n_docs` documents of the stream for `seed`."""
    stream = documents(world, seed)
    return [next(stream) for _ in range(n_docs)]


def qa_people(world: World) -> tuple[str, ...]:
    """The people whose facts question-answer text shows (every other one, from the first):
    the corpus's QA documents and `syn_qa`'s train split ask about them, its test sets about the rest."""
    return world.people[0::2]


def qa_document(rng: random.Random, world: World) -> str:
    """Questions about every fact of one QA person, in random order and phrasings, each answered
    by the bare value: `Q: Where does Alice live? A: Oslo. Q: ...`."""
    person = rng.choice(qa_people(world))
    attributes = list(ATTRIBUTES)
    rng.shuffle(attributes)
    return " ".join(f"Q: {rng.choice(QUESTION[a]).format(p=person)} A: {world.facts[person][a]}."
                    for a in attributes)


def pretrain_documents(world: World, seed: int, qa_share: float = 0.0) -> Iterator[str]:
    """The pre-training stream: `documents`, where each document is instead, with probability
    `qa_share`, a `qa_document`. At `qa_share=0` it is `documents(world, seed)` itself."""
    if not 0 <= qa_share < 1:
        raise ValueError(f"model.pretrain.qa_share={qa_share}: allowed 0 <= qa_share < 1")
    if qa_share == 0:
        yield from documents(world, seed)
        return
    rng = random.Random(seed)
    makers, weights = zip(*DOCUMENT_KINDS)
    while True:
        maker = qa_document if rng.random() < qa_share else rng.choices(makers, weights)[0]
        yield maker(rng, world)


def pretrain_corpus(world: World, seed: int, n_docs: int, qa_share: float = 0.0) -> list[str]:
    """The first `n_docs` documents of `pretrain_documents`."""
    stream = pretrain_documents(world, seed, qa_share)
    return [next(stream) for _ in range(n_docs)]
