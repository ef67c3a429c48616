"""tinyworld: deterministic text, well-formed tasks with balanced, disjoint splits."""

from __future__ import annotations

import collections

import pytest

from ftdyn.world.corpus import corpus
from ftdyn.world.entities import PEOPLE, UNSEEN_PEOPLE, VALUES, make_world
from ftdyn.world.tasks import NLI_LABELS, PARA_LABELS, SPLITS, example_key, generate, probe_items
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


def test_out_of_domain_sets_use_unseen_people_and_held_out_phrasings():
    world = make_world(0)
    for e in generate(world, "syn_nli", "ood_entities", 200):
        assert e["premise"].split()[0] in UNSEEN_PEOPLE or any(n in e["premise"] for n in UNSEEN_PEOPLE)
        assert not any(p in e["premise"] for p in PEOPLE)
    held_out = [FACT[a][i].split("{v}")[0].format(p="") for a in FACT for i in TASK_HELD_OUT]
    trained = [FACT[a][i].split("{v}")[0].format(p="") for a in FACT for i in TASK_TRAIN]
    for e in generate(world, "syn_nli", "ood_templates", 200):
        assert any(h.strip() in e["premise"] for h in held_out)
    for e in generate(world, "syn_nli", "train", 200):
        assert any(t.strip() in e["premise"] for t in trained)


def _attribute_and_value(sentence: str) -> tuple[str, str]:
    value = sentence.rstrip(".").split()[-1]
    return next(a for a, values in VALUES.items() if value in values), value


def test_nli_labels_follow_from_the_text():
    for e in generate(make_world(0), "syn_nli", "train", 300):
        stated, hypothesis = _attribute_and_value(e["premise"]), _attribute_and_value(e["hypothesis"])
        if e["label"] == "entailment":
            assert e["premise"] == e["hypothesis"]
        elif e["label"] == "contradiction":
            assert stated[0] == hypothesis[0] and stated[1] != hypothesis[1]
        else:
            assert stated[0] != hypothesis[0]


def test_para_no_pairs_are_mostly_word_order_swaps():
    pairs = [e for e in generate(make_world(0), "syn_para", "train", 600) if e["label"] == "no"]
    same_words = [e for e in pairs if sorted(e["sentence1"].split()) == sorted(e["sentence2"].split())]
    assert len(same_words) / len(pairs) > 0.3


def test_probe_covers_every_fact_with_its_candidates():
    world = make_world(0)
    items = probe_items(world)
    assert len(items) == len(world.people) * 3
    for item in items:
        assert item["label"] in item["choices"]
        assert item["prompt"].split()[0] in world.people
