"""Sentence templates shared by the corpus and the synthetic tasks.

Each attribute has several phrasings. The pre-training corpus uses all of them; the tasks train
on the `TASK_TRAIN` phrasings and test out-of-domain on the held-out ones, so a model that
learned from pre-training that "is from" and "has a home in" mean the same transfers better.
"""

FACT = {
    "city": ("{p} lives in {v}.", "{p} is from {v}.", "{p} has a home in {v}.",
             "The home of {p} is in {v}."),
    "job": ("{p} works as a {v}.", "{p} is a {v}.", "{p} earns a living as a {v}.",
            "By trade, {p} is a {v}."),
    "pet": ("{p} owns a {v}.", "{p} has a pet {v}.", "{p} looks after a {v}.",
            "The pet of {p} is a {v}."),
}
# The negation of each phrasing, index for index: what NLI contradictions most often look like.
NEGATED = {
    "city": ("{p} does not live in {v}.", "{p} is not from {v}.", "{p} does not have a home in {v}.",
             "The home of {p} is not in {v}."),
    "job": ("{p} does not work as a {v}.", "{p} is not a {v}.", "{p} does not earn a living as a {v}.",
            "By trade, {p} is not a {v}."),
    "pet": ("{p} does not own a {v}.", "{p} does not have a pet {v}.", "{p} does not look after a {v}.",
            "The pet of {p} is not a {v}."),
}
TASK_TRAIN = (0, 1)  # template indices the tasks train on; 2 and 3 are held out
TASK_HELD_OUT = (2, 3)

# The cloze prompt of each attribute for the knowledge probe: FACT[a][0] without its value.
CLOZE = {"city": "{p} lives in", "job": "{p} works as a", "pet": "{p} owns a"}

# Two-person events, each with its meaning-preserving rewrite (the argument order flips,
# so a word-order swap of the original is the PAWS-style adversary).
EVENTS = (
    ("{a} gave a {o} to {b}.", "{b} received a {o} from {a}."),
    ("{a} visited {b} in {c}.", "{b} was visited by {a} in {c}."),
    ("{a} is older than {b}.", "{b} is younger than {a}."),
    ("{a} sent a {o} to {b}.", "{b} got a {o} from {a}."),
    ("{a} called {b} from {c}.", "{b} got a call from {a} in {c}."),
)
EVENTS_TASK_TRAIN = (0, 1, 2)  # events 3 and 4 are out-of-domain templates for syn_para

SUMMARY = "{p} is a {job} from {city} who owns a {pet}."

# Questions about a person's attribute (syn_mc, syn_instruct), indexed like FACT: the tasks train
# on the TASK_TRAIN phrasings, and syn_mc's `ood_templates` set asks in the held-out ones.
QUESTION = {
    "city": ("Where does {p} live?", "Which city is {p} from?", "Where does {p} have a home?",
             "In which city is the home of {p}?"),
    "job": ("What does {p} work as?", "What is the job of {p}?", "How does {p} earn a living?",
            "What is {p} by trade?"),
    "pet": ("What pet does {p} own?", "Which pet does {p} have?", "What animal does {p} look after?",
            "What is the pet of {p}?"),
}
RULE_QUESTION = ("What does every {job} do?", "What is true of every {job}?", "What do people who work as a {job} do?",
                 "What does a {job} do every day?")
# An answer choice per attribute: a few tokens, whose length varies with the value.
ANSWER = {"city": "in {v}", "job": "a {v}", "pet": "a {v}"}
