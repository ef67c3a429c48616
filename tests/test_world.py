"""tinyworld: deterministic text, well-formed tasks with balanced, disjoint splits."""

from __future__ import annotations

import collections
import hashlib
import re
from itertools import islice

import pytest

from ftdyn.world.corpus import corpus, documents, heldout_documents
from ftdyn.world.entities import PEOPLE, UNSEEN_PEOPLE, VALUES, make_world
from ftdyn.world.tasks import (
    NLI_LABELS,
    PARA_LABELS,
    SPLITS,
    example_key,
    generate,
    knowledge_items,
)
from ftdyn.world.templates import FACT, TASK_HELD_OUT, TASK_TRAIN


def test_same_seed_same_text_and_other_seed_other_text():
    world = make_world(0)
    assert corpus(world, 1, 50) == corpus(make_world(0), 1, 50)
    assert corpus(world, 1, 50) != corpus(world, 2, 50)
    assert make_world(0).facts != make_world(1).facts


def test_corpus_states_only_true_facts():
    world = make_world(0)
    text = " ".join(corpus(world, 1, 2000))
    person = "Alice"
    city = world.facts[person]["city"]
    assert f"{person} lives in {city}." in text
    for other in VALUES["city"]:
        if other != city:
            assert f"{person} lives in {other}." not in text.replace("that ", "\0")


@pytest.mark.parametrize("task", ["syn_nli", "syn_para", "syn_summ"])
def test_evaluation_splits_never_repeat_train_examples(task):
    world = make_world(0)
    train = generate(world, task, "train", 2000)
    seen = {example_key(e) for e in train}
    for split in SPLITS[1:]:
        examples = generate(world, task, split, 300, exclude=seen)
        assert len(examples) == 300
        assert not seen & {example_key(e) for e in examples}


@pytest.mark.parametrize(("task", "labels"), [("syn_nli", NLI_LABELS), ("syn_para", PARA_LABELS)])
def test_labels_stay_balanced_in_every_split(task, labels):
    world = make_world(0)
    seen = {example_key(e) for e in generate(world, task, "train", 2000)}
    for split in SPLITS[1:]:
        counts = collections.Counter(e["label"] for e in generate(world, task, split, 300, exclude=seen))
        assert set(counts) == set(labels)
        assert min(counts.values()) >= 0.6 * 300 / len(labels), (split, counts)


def _phrasing(sentence: str) -> int:
    """Which phrasing index of FACT a one-fact sentence uses."""
    for templates in FACT.values():
        for index, template in enumerate(templates):
            pattern = re.escape(template).replace(r"\{p\}", r"\w+").replace(r"\{v\}", r"\w+")
            if re.fullmatch(pattern, sentence):
                return index
    raise AssertionError(f"no phrasing matches {sentence!r}")


def test_out_of_domain_sets_use_unseen_people_and_held_out_phrasings():
    world = make_world(0)
    for e in generate(world, "syn_nli", "ood_entities", 200):
        assert e["premise"].split()[0] in UNSEEN_PEOPLE or any(n in e["premise"].split() for n in UNSEEN_PEOPLE)
        assert not set(PEOPLE) & set(e["premise"].rstrip(".").replace(",", "").split())
    assert {_phrasing(e["premise"]) for e in generate(world, "syn_nli", "ood_templates", 200)} == set(TASK_HELD_OUT)
    assert {_phrasing(e["premise"]) for e in generate(world, "syn_nli", "train", 200)} == set(TASK_TRAIN)


def _attribute_and_value(sentence: str) -> tuple[str, str]:
    value = sentence.rstrip(".").split()[-1]
    return next(a for a, values in VALUES.items() if value in values), value


def test_nli_labels_follow_from_the_text():
    examples = generate(make_world(0), "syn_nli", "train", 600)
    negations = 0
    for e in examples:
        stated = _attribute_and_value(e["premise"])
        if e["label"] == "entailment":
            assert e["premise"] == e["hypothesis"]
        elif e["label"] == "contradiction" and " not " in e["hypothesis"]:
            negations += 1
            assert _attribute_and_value(e["hypothesis"]) == stated
        elif e["label"] == "contradiction":
            attribute, value = _attribute_and_value(e["hypothesis"])
            assert attribute == stated[0] and value != stated[1]
        else:  # neutral: the premise plus a fact about another attribute
            assert e["hypothesis"].startswith(e["premise"] + " ")
            added = e["hypothesis"][len(e["premise"]) + 1:]
            assert _attribute_and_value(added)[0] != stated[0]
    assert 0.5 < negations / 200 < 0.8  # two thirds of the contradictions


def _words(sentence: str) -> set[str]:
    return set(sentence.rstrip(".").split())


def test_para_no_pairs_are_mostly_word_order_adversaries():
    pairs = [e for e in generate(make_world(0), "syn_para", "train", 1000) if e["label"] == "no"]
    same_words = [e for e in pairs if _words(e["sentence1"]) == _words(e["sentence2"])]
    overlapping = [e for e in pairs if len(_words(e["sentence1"]) & _words(e["sentence2"]))
                   / len(_words(e["sentence1"]) | _words(e["sentence2"])) >= 0.6]
    assert len(same_words) / len(pairs) > 0.3  # the same words, roles swapped
    assert len(overlapping) / len(pairs) > 0.6


def test_probe_covers_every_fact_with_its_candidates():
    world = make_world(0)
    items = knowledge_items(world)
    assert len(items) == len(world.people) * 3
    for item in items:
        assert item["label"] in item["choices"]
        assert item["prompt"].split()[0] in world.people


def test_multiple_choice_asks_train_and_evaluation_about_disjoint_true_facts():
    from ftdyn.world.entities import JOB_RULES

    world = make_world(0)

    def subjects(split):
        examples = generate(world, "syn_mc", split, 300)
        for e in examples:
            assert len(e["choices"]) == 4 and len(set(e["choices"])) == 4 and e["answer"] in e["choices"]
        named = {w.rstrip("?") for e in examples for w in e["question"].split()}
        return examples, named & (set(world.people) | set(JOB_RULES))

    train, seen = subjects("train")
    test, asked = subjects("test")
    assert seen and asked and not seen & asked
    for e in test:  # the answer is the world's fact
        person = next((p for p in world.people if p in e["question"].split() or f"{p}?" in e["question"]), None)
        if person is not None:
            assert any(e["answer"].endswith(" " + world.facts[person][a]) for a in world.facts[person])
    assert len({len(c) for e in test for c in e["choices"]}) > 3  # choices of many lengths
    with pytest.raises(KeyError, match="unseen people"):
        generate(world, "syn_mc", "ood_entities", 10)


def test_instructions_never_state_false_facts_about_the_worlds_people():
    world = make_world(0)
    for e in generate(world, "syn_instruct", "train", 500):
        for person in world.people:
            for attribute, value in world.facts[person].items():
                for other in VALUES[attribute]:
                    if other != value:
                        assert f"{person} lives in {other}." not in e["response"]
                        assert f"{person} is a {other} " not in e["response"] + " "


# -- held-out pre-training text: never in the training stream ------------------------------------

def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.?]) ", text)


def _training_documents_bound(pretrain) -> list[str]:
    """Every document the ladder's training steps can consume, and a few more: the build trains on
    the first steps x batch_size rows of seq_len tokens, packed from the corpus with an EOS after
    each document. A byte-level BPE token never spans a space, so a document takes at least
    (its words + 1) tokens; reading documents until that count covers every trained token reads
    past the last one trained on (tiny: 2,457,600 tokens, ~110k documents by this bound, ~91k
    by the tokenizer)."""
    world = make_world(pretrain.world_seed, pretrain.n_people)
    budget, docs = pretrain.steps * pretrain.batch_size * pretrain.seq_len, []
    for doc in documents(world, pretrain.corpus_seed):
        docs.append(doc)
        budget -= len(doc.split()) + 1
        if budget < 0:
            return docs


def test_no_heldout_document_is_in_the_tiny_ladders_training_stream():
    from ftdyn import config as C
    from ftdyn.config.compose import compose_config

    pretrain = C.to_typed(compose_config(["model=tiny"])).model.pretrain
    training = _training_documents_bound(pretrain)
    assert len(training) > 100_000
    seen_docs = set(training)
    world = make_world(pretrain.world_seed, pretrain.n_people)
    heldout = list(islice(heldout_documents(world, pretrain.corpus_seed + 10_000), pretrain.heldout_docs))
    assert len(set(heldout)) > 0.9 * len(heldout)
    assert not seen_docs & set(heldout)
    # in the training distribution: nearly every held-out sentence is one the training stream writes
    # (the rest are events of the same templates whose people and objects it never drew together)
    seen_sentences = {s for doc in training for s in _sentences(doc)}
    sentences = [s for doc in heldout for s in _sentences(doc)]
    assert sum(s in seen_sentences for s in sentences) > 0.9 * len(sentences)
    # the scan has teeth: the old held-out text (the training generator, another seed) is mostly training text
    old = list(islice(documents(world, pretrain.corpus_seed + 10_000), pretrain.heldout_docs))
    assert sum(doc in seen_docs for doc in old) > 0.5 * len(old)


def test_the_training_stream_is_the_one_the_cached_ladders_were_built_on():
    """Held-out text has its own generator; the training documents must not move (a change would
    rebuild every ladder and change every number). Pinned: a hash of the first 20,000 documents."""
    docs = corpus(make_world(0, 20), 1, 20_000)
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()
    assert digest == "abefda39a2e38fb719b6a573d7e461d99025067d8dc0d3c52feee7e15bd38096"


def test_heldout_text_has_every_kind_of_document_and_only_true_facts():
    world = make_world(0)
    heldout = list(islice(heldout_documents(world, 5), 2000))
    text = " ".join(heldout)
    for frame in ("In a story,", "In other words,", "One day,", "Every "):
        assert frame in text
    city = world.facts["Alice"]["city"]
    assert f"Alice lives in {city}." in text
    assert not any(f"Alice lives in {other}." in text for other in VALUES["city"] if other != city)
    assert all(doc.count("Is it true that") in (0, 2) for doc in heldout)  # quizzes come in pairs
