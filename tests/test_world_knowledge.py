"""The extractable-knowledge world: question-answer text in the corpus (model.pretrain.qa_share)
and the knowledge tasks syn_qa and syn_cloze (train on some people's facts, test on the others')."""

from __future__ import annotations

import dataclasses
import json
import re
from itertools import islice

import pytest
from conftest import MICRO

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.data.text import packed_rows, pretrain_stream
from ftdyn.models import ladders
from ftdyn.tasks import load, task_config
from ftdyn.train import train
from ftdyn.world.corpus import corpus, documents, pretrain_corpus, qa_people
from ftdyn.world.entities import VALUES, make_world
from ftdyn.world.tasks import SPLITS, fact_split_people, generate
from ftdyn.world.templates import QUESTION

QA = re.compile(r"Q: (.+?\?) A: (\w+)\.")


def test_default_corpus_options_leave_the_stream_unchanged(micro_ladder):
    """At qa_share=0 the pre-training stream is the one every existing ladder was built from,
    document for document and row for row, and the ladder keys (and caches) stay the same."""
    world = make_world(0)
    assert pretrain_corpus(world, 1, 500) == corpus(world, 1, 500)
    model = C.to_typed(compose_config(["model=micro"])).model
    tokenizer = ladders.PreTrainedTokenizerFast.from_pretrained(micro_ladder / "tokenizer")
    rows = list(islice(pretrain_stream(model.pretrain, tokenizer, 64), 200))
    assert rows == list(islice(packed_rows(documents(world, model.pretrain.corpus_seed), tokenizer, 64), 200))
    spec = ladders._pretrain_spec(model.pretrain)
    assert "qa_share" not in spec and spec == {k: v for k, v in C.as_dict(model.pretrain).items() if k != "qa_share"}
    asked = dataclasses.replace(model, pretrain=dataclasses.replace(model.pretrain, qa_share=0.2))
    assert ladders.ladder_key(asked) != ladders.ladder_key(model)


def _person(world, text: str) -> str:
    return next(p for p in world.people if re.search(rf"\b{p}\b", text))


def test_qa_documents_ask_only_about_the_qa_people_and_answer_true_facts():
    world = make_world(0)
    docs = pretrain_corpus(world, 1, 3000, qa_share=0.3)
    qa_docs = [d for d in docs if d.startswith("Q: ")]
    assert 0.25 < len(qa_docs) / len(docs) < 0.35
    asked = set()
    for doc in qa_docs:
        pairs = QA.findall(doc)
        assert len(pairs) == 3 and " ".join(f"Q: {q} A: {a}." for q, a in pairs) == doc
        for question, answer in pairs:
            person = _person(world, question)
            attribute = next(a for a, qs in QUESTION.items() if question in {q.format(p=person) for q in qs})
            assert answer == world.facts[person][attribute]
            asked.add(person)
    assert asked == set(qa_people(world))
    assert not any(d.startswith("Q: ") for d in corpus(world, 1, 3000))  # the default corpus has none


def test_qa_share_out_of_range_is_refused():
    with pytest.raises(ValueError, match="model.pretrain.qa_share=1.0"):
        next(iter(pretrain_corpus(make_world(0), 1, 1, qa_share=1.0)))


@pytest.mark.parametrize(("task", "field", "answer"), [("syn_qa", "question", "answer"),
                                                       ("syn_cloze", "prompt", "label")])
def test_knowledge_task_trains_and_tests_on_disjoint_people_with_true_answers(task, field, answer):
    world = make_world(0)
    train_people, test_people = fact_split_people(world, "train"), fact_split_people(world, "test")
    assert not set(train_people) & set(test_people) and set(train_people) | set(test_people) == set(world.people)
    assert train_people == qa_people(world)  # what pre-training's QA text asks about
    for split in SPLITS[:-1]:
        examples = generate(world, task, split, 1200)
        people = fact_split_people(world, split)
        for e in examples:
            person = _person(world, e[field])
            assert person in people
            attribute = next(a for a in VALUES if e["choices"] == list(VALUES[a]))
            assert e[answer] == world.facts[person][attribute]
        distinct = {(e[field], e[answer]) for e in examples}
        assert len(distinct) == len(people) * 3 * 2  # every fact, in two phrasings
        assert len(examples) == (1200 if split == "train" else len(distinct))
    with pytest.raises(KeyError, match="ood_entities"):
        generate(world, task, "ood_entities", 10)


def test_knowledge_task_loads_with_evaluation_sets_about_other_people():
    task = load(task_config("syn_qa"), make_world(0))
    train_questions = {e["question"] for e in task.train}
    for es in task.eval_sets:
        assert es.examples and not train_questions & {e["question"] for e in es.examples}
        assert all(task.target(e) in task.choices(e) for e in es.examples)


def test_sft_on_syn_qa_runs_on_a_qa_ladder(tmp_path):
    """A whole job on a micro ladder whose corpus holds QA text: the options reach the build."""
    overrides = MICRO + ["task=syn_qa", "model.pretrain.qa_share=0.2", "task.train_size=64", "fewshot.k=0"]
    model = C.to_typed(compose_config(overrides)).model
    assert ladders.ladder_key(model) != ladders.ladder_key(C.to_typed(compose_config(["model=micro"])).model)
    train(compose_config(overrides), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    scored = {(r["stage"], r["eval_set"]) for r in rows if r["metric"] == "acc"}
    assert {("before", "test"), ("after", "test"), ("after", "ood_templates")} <= scored
