"""The fixed world that tinyworld text talks about.

Small on purpose: the tiny ladder must be able to learn its facts in a few minutes of CPU
pre-training (a sizing probe on a 2-core CPU: 20 people with 3 attributes each were learned in ~580 steps),
so that knowledge rises visibly across the checkpoints. Within each category the names start
with distinct letters, which keeps the first sub-token of every candidate answer distinct.
"""

from __future__ import annotations

import dataclasses
import random

PEOPLE = ("Alice", "Bruno", "Clara", "Daniel", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
          "Karla", "Leo", "Maya", "Nolan", "Olga", "Pablo", "Quinn", "Rosa", "Simon", "Tara")
# Never mentioned in the pre-training corpus: out-of-domain sets use them as unseen entities.
UNSEEN_PEOPLE = ("Uma", "Victor", "Wendy", "Xavier", "Yusuf", "Zoe", "Ansel", "Bianca",
                 "Cyrus", "Delia", "Emil", "Fiona")

# Characters of the corpus's quiz stories only: they get random attributes in every story, so a
# quiz about them can only be answered from its own context (never from memorised facts).
STORY_PEOPLE = ("Abel", "Beth", "Cleo", "Dario", "Edith", "Fabio", "Gina", "Hector", "Ines", "Jasper",
                "Kira", "Lucas")

# attribute -> candidate values
VALUES = {
    "city": ("Paris", "Berlin", "Cairo", "Dublin", "Lima", "Madrid", "Oslo", "Rome", "Tokyo",
             "Vienna"),
    "job": ("baker", "doctor", "farmer", "pilot", "teacher", "singer", "lawyer", "nurse"),
    "pet": ("cat", "dog", "horse", "parrot", "rabbit", "turtle"),
}
ATTRIBUTES = tuple(VALUES)
OBJECTS = ("book", "letter", "lamp", "gift", "map", "key")

# A generic rule per job: pre-training text states it, nothing else depends on it.
JOB_RULES = {
    "baker": "wakes up before dawn", "doctor": "helps sick people", "farmer": "grows wheat",
    "pilot": "flies planes", "teacher": "explains lessons", "singer": "sings songs",
    "lawyer": "reads long contracts", "nurse": "cares for patients",
}


@dataclasses.dataclass(frozen=True)
class World:
    """People and their attributes, drawn once from a seed."""

    facts: dict[str, dict[str, str]]  # person -> attribute -> value
    seed: int

    @property
    def people(self) -> tuple[str, ...]:
        return tuple(self.facts)


def make_world(seed: int = 0, n_people: int = len(PEOPLE)) -> World:
    """Draw every person's city, job and pet; the same seed gives the same world."""
    if not 2 <= n_people <= len(PEOPLE):
        raise ValueError(f"world.n_people={n_people}: allowed 2..{len(PEOPLE)}")
    rng = random.Random(seed)
    facts = {p: {a: rng.choice(VALUES[a]) for a in ATTRIBUTES} for p in PEOPLE[:n_people]}
    return World(facts=facts, seed=seed)


def random_person_facts(rng: random.Random) -> dict[str, str]:
    """Attributes for a person the world does not know (out-of-domain entities)."""
    return {a: rng.choice(VALUES[a]) for a in ATTRIBUTES}
