"""Every real task loads from local files in each dataset's own schema (no network).

`task.local_dir` (or $FTDYN_DATA_DIR) points the same loading code at
`<dir>/<hub id>/<config>/<split>.jsonl`; the rows below use the real column names and label
encodings of each dataset (GLUE ClassLabel ints, STS-B float similarity, SocialIQa answerA..C,
ARC choices {text, label} with answerKey, HellaSwag string labels, BoolQ bools, TÜLU messages).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from conftest import MICRO

from ftdyn import config as C
from ftdyn import tasks
from ftdyn.config.compose import compose_config
from ftdyn.tasks import hub
from ftdyn.world.entities import make_world


def write(root: Path, path: str, name: str | None, split: str, rows: list[dict]) -> Path:
    file = root / path / (name or "default") / f"{split}.jsonl"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return file


def nli_rows(n: int, prefix: str, labels=(0, 1, 2)) -> list[dict]:
    return [{"premise": f"{prefix} premise {i}", "hypothesis": f"{prefix} hypothesis {i}",
             "label": labels[i % len(labels)], "idx": i} for i in range(n)]


def load(overrides: list[str]) -> tasks.TaskData:
    run = C.to_typed(compose_config(MICRO + overrides))
    return tasks.load(run.task, make_world(0, 4))


@pytest.fixture
def mnli_dir(tmp_path) -> Path:
    write(tmp_path, "nyu-mll/glue", "mnli", "train", nli_rows(40, "train"))
    write(tmp_path, "nyu-mll/glue", "mnli", "validation_matched", nli_rows(6, "matched"))
    write(tmp_path, "nyu-mll/glue", "mnli", "validation_mismatched", nli_rows(5, "mismatched"))
    write(tmp_path, "nyu-mll/glue", "rte", "train",
          [{"sentence1": f"rte s1 {i}", "sentence2": f"rte s2 {i}", "label": i % 2, "idx": i} for i in range(4)])
    write(tmp_path, "pietrolesci/gpt3_nli", None, "train",
          [{"text_a": f"gpt3 a {i}", "text_b": f"gpt3 b {i}", "label": i % 3, "guid": i} for i in range(3)])
    return tmp_path


def test_mnli_loads_every_set_with_glue_labels_and_rte_mapped(mnli_dir):
    task = load(["task=mnli", f"task.local_dir={mnli_dir}", "task.train_size=10", "task.eval_size=5"])
    assert len(task.train) == 10 and len(task.validation) == 5
    assert set(task.train[0]) == {"premise", "hypothesis", "label"}
    sets = {s.name: s for s in task.eval_sets}
    assert [(s.name, s.split_kind) for s in task.eval_sets] == [
        ("mnli_matched", "in_domain"), ("mnli_mismatched", "in_domain"), ("rte", "out_of_domain"),
        ("gpt3nli", "out_of_domain")]
    assert len(sets["mnli_matched"].examples) == 5 and len(sets["mnli_mismatched"].examples) == 5
    # RTE: 1 (not_entailment) -> neutral, 0 -> entailment; rows read in file order (4 <= eval_size)
    assert [e["label"] for e in sets["rte"].examples] == ["entailment", "neutral", "entailment", "neutral"]
    assert sets["rte"].examples[1] == {"premise": "rte s1 1", "hypothesis": "rte s2 1", "label": "neutral"}
    assert [e["label"] for e in sets["gpt3nli"].examples] == ["entailment", "neutral", "contradiction"]
    # the GLUE ClassLabel ints of the train rows map to the label words
    by_premise = {f"train premise {i}": ["entailment", "neutral", "contradiction"][i % 3] for i in range(40)}
    assert all(e["label"] == by_premise[e["premise"]] for e in task.train)
    assert task.prompt(sets["rte"].examples[0], "default") == (
        "### Input_1: rte s1 0\n ### Input_2: rte s2 0\n ### Inference: ")


def test_train_is_the_seeded_shuffle_and_validation_never_repeats_it(mnli_dir):
    overrides = ["task=mnli", f"task.local_dir={mnli_dir}", "task.train_size=10", "task.eval_size=5"]
    first, again = load(overrides), load(overrides)
    assert first.train == again.train  # deterministic
    raw = datasets.load_dataset("json", data_files=str(mnli_dir / "nyu-mll/glue/mnli/train.jsonl"), split="train")
    expected = raw.shuffle(seed=42).select(range(10))["premise"]
    assert [e["premise"] for e in first.train] == expected
    assert [e["premise"] for e in first.validation] == raw.shuffle(seed=42).select(range(10, 15))["premise"]
    assert not {e["premise"] for e in first.train} & {e["premise"] for e in first.validation}
    other = load(overrides + ["task.subsample_seed=7"])
    assert [e["premise"] for e in other.train] == raw.shuffle(seed=7).select(range(10))["premise"] != expected


def test_the_environment_variable_selects_local_files_too(mnli_dir, monkeypatch):
    monkeypatch.setenv("FTDYN_DATA_DIR", str(mnli_dir))
    task = load(["task=mnli", "task.train_size=4", "task.eval_size=3"])
    assert len(task.train) == 4 and len(task.eval_sets[2].examples) == 3


def test_a_set_with_no_label_left_fails_naming_the_dataset(mnli_dir):
    write(mnli_dir, "nyu-mll/glue", "mnli", "validation_mismatched", nli_rows(3, "unlabelled", labels=(-1,)))
    with pytest.raises(ValueError) as err:
        load(["task=mnli", f"task.local_dir={mnli_dir}", "task.train_size=4", "task.eval_size=3"])
    message = str(err.value)
    assert "nyu-mll/glue/mnli:validation_mismatched is empty after filtering (3 rows read" in message
    assert "label values without a label_map entry: ['-1']" in message


def test_a_missing_local_file_fails_naming_the_file_and_what_is_there(mnli_dir):
    (mnli_dir / "pietrolesci/gpt3_nli/default/train.jsonl").rename(mnli_dir / "pietrolesci/gpt3_nli/default/x.jsonl")
    with pytest.raises(FileNotFoundError, match=r"dataset pietrolesci/gpt3_nli:train: no local file .*"
                                                r"files there: \['x.jsonl'\]"):
        load(["task=mnli", f"task.local_dir={mnli_dir}", "task.train_size=4", "task.eval_size=3"])


def para_rows(n: int) -> list[dict]:
    return [{"id": i, "sentence1": f"paws a {i}", "sentence2": f"paws b {i}", "label": i % 2} for i in range(n)]


@pytest.fixture
def paws_dir(tmp_path) -> Path:
    for split in ("train", "validation", "test"):
        write(tmp_path, "google-research-datasets/paws", "labeled_final", split, para_rows(6))
    write(tmp_path, "SetFit/qqp", None, "test",
          [{"text1": "q1", "text2": "q2", "label": 1, "idx": 0, "label_text": "duplicate"},
           {"text1": "q3", "text2": "q4", "label": 0, "idx": 1, "label_text": "not duplicate"}])
    write(tmp_path, "SetFit/stsb", None, "test",
          [{"text1": f"s{i}", "text2": f"t{i}", "label": score, "idx": i}
           for i, score in enumerate([0.0, 3.5, 3.6, 5.0, 2.75])])
    return tmp_path


def test_paws_maps_qqp_duplicates_and_the_stsb_threshold(paws_dir):
    task = load(["task=paws", f"task.local_dir={paws_dir}", "task.train_size=6", "task.eval_size=10"])
    sets = {s.name: s.examples for s in task.eval_sets}
    assert [e["label"] for e in sets["paws"]] == ["no", "yes", "no", "yes", "no", "yes"]
    assert sets["qqp"] == [{"sentence1": "q1", "sentence2": "q2", "label": "yes"},
                           {"sentence1": "q3", "sentence2": "q4", "label": "no"}]
    # STS-B: similarity > 3.5 is a paraphrase; exactly 3.5 is not
    assert [e["label"] for e in sets["stsb"]] == ["no", "no", "yes", "yes", "no"]
    assert len(task.validation) == 6 and task.choices(sets["stsb"][0]) == ["yes", "no"]


def test_a_missing_field_fails_naming_dataset_field_and_existing_fields(paws_dir):
    write(paws_dir, "SetFit/stsb", None, "test", [{"text1": "s", "sentence_b": "t", "label": 4.0}])
    with pytest.raises(KeyError) as err:
        load(["task=paws", f"task.local_dir={paws_dir}", "task.train_size=6", "task.eval_size=10"])
    assert ("task paws: dataset SetFit/stsb:test has no field ['text2']; its fields are "
            "['text1', 'sentence_b', 'label']") in str(err.value)


def test_xsum_reads_each_sets_own_columns(tmp_path):
    for split in ("train", "test"):
        write(tmp_path, "EdinburghNLP/xsum", None, split,
              [{"document": f"doc {split} {i}", "summary": f"sum {i}", "id": str(i)} for i in range(3)])
    write(tmp_path, "csebuetnlp/xlsum", "english", "test",
          [{"id": "a", "url": "u", "title": "t", "summary": "xl summary", "text": "xl text"}])
    write(tmp_path, "abisee/cnn_dailymail", "3.0.0", "test",
          [{"article": "cnn article", "highlights": "cnn highlights", "id": "h"}])
    task = load(["task=xsum", f"task.local_dir={tmp_path}", "task.train_size=2", "task.eval_size=5"])
    sets = {s.name: s.examples for s in task.eval_sets}
    assert len(task.train) == 2 and task.validation == []
    assert sets["xlsum"] == [{"document": "xl text", "summary": "xl summary"}]
    assert sets["cnn_dailymail"] == [{"document": "cnn article", "summary": "cnn highlights"}]
    assert task.target(sets["cnn_dailymail"][0]) == "cnn highlights"
    assert task.prompt(sets["xlsum"][0], "default") == "### Input: xl text\n ### Summary: "


def test_socialiqa_question_generation_prompts_follow_the_authors_format(tmp_path):
    siqa = [{"context": "Tracy went home.", "question": "Why did Tracy do this?", "answerA": "tired",
             "answerB": "bored", "answerC": "hungry", "label": "1"}]
    for split in ("train", "validation"):
        write(tmp_path, "allenai/social_i_qa", None, split, siqa)
    write(tmp_path, "allenai/sciq", None, "test",
          [{"question": "What gas?", "distractor3": "d3", "distractor1": "d1", "distractor2": "d2",
            "correct_answer": "oxygen", "support": "Plants make it."}])
    write(tmp_path, "ucsbnlp/tweet_qa", None, "train",
          [{"Question": "who won?", "Answer": ["the team", "team"], "Tweet": "We won!", "qid": "q"},
           {"Question": "unanswered", "Answer": [], "Tweet": "t", "qid": "r"}])
    task = load(["task=socialiqa", f"task.local_dir={tmp_path}", "task.train_size=1", "task.eval_size=5"])
    sets = {s.name: s.examples for s in task.eval_sets}
    example = sets["socialiqa"][0]
    assert task.prompt(example, "default") == ("### Input: Tracy went home.\n ### Answer: Answer A: tired "
                                               "Answer B: boredAnswer C: hungry\n ### Question: ")
    assert task.prompt(example, "io") == "Tracy went home.tiredboredhungry"
    assert task.prompt(example, "instruct") == ("Given the context: Tracy went home. And the answer: Answer A: "
                                                "tired Answer B: boredAnswer C: hungryGenerate a suitable question: ")
    assert task.target(example) == "Why did Tracy do this?"
    assert sets["sciq"][0]["answers"] == "Answer A: oxygen Answer B: d1Answer C: d2Answer D: d3"
    assert sets["tweetqa"] == [{"context": "We won!", "question": "who won?", "answers": "the team",
                                "answers_plain": "the team"}]  # a row with no answer is dropped


def test_tulu_trains_on_chat_turns_and_evaluates_multiple_choice_sets(tmp_path):
    write(tmp_path, "allenai/tulu-v2-sft-mixture", None, "train", [
        {"dataset": "flan", "id": "1", "messages": [{"role": "user", "content": "Hi?"},
                                                    {"role": "assistant", "content": "Hello."},
                                                    {"role": "user", "content": "Sum 2+2"},
                                                    {"role": "assistant", "content": "4"}]},
        {"dataset": "flan", "id": "2", "messages": [{"role": "user", "content": "no reply"}]}])
    arc = {"id": "a", "question": "Which is a metal?", "choices": {"text": ["wood", "iron", "salt"],
                                                                   "label": ["A", "B", "C"]}, "answerKey": "B"}
    sets = {
        ("allenai/ai2_arc", "ARC-Easy"): [arc],
        ("allenai/ai2_arc", "ARC-Challenge"): [
            {**arc, "choices": {"text": ["x", "y", "z", "w"], "label": ["1", "2", "3", "4"]}, "answerKey": "4"}],
        ("allenai/openbookqa", "main"): [
            {"id": "o", "question_stem": "Sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]},
             "answerKey": "A"}],
        ("Rowan/hellaswag", None): [
            {"ind": 1, "activity_label": "Baking", "ctx_a": "a", "ctx_b": "b", "ctx": "She mixes flour",
             "endings": ["and sings.", "and water.", "then flies.", "no."], "source_id": "s", "split": "val",
             "split_type": "indomain", "label": "1"}],
        ("google/boolq", None): [{"question": "is water wet", "answer": True, "passage": "Water is a liquid."}],
        ("allenai/sciq", None): [{"question": "What gas?", "distractor3": "d3", "distractor1": "d1",
                                  "distractor2": "d2", "correct_answer": "oxygen", "support": "Plants make it."}],
    }
    for (path, name), rows in sets.items():
        write(tmp_path, path, name, "validation", rows)
        write(tmp_path, path, name, "train", rows * 2)  # the set's own few-shot pool
    task = load(["task=tulu", f"task.local_dir={tmp_path}", "task.train_size=5", "task.eval_size=5"])
    assert task.cfg.kind == "multiple_choice"
    assert task.train == [{"question": "<|user|>\nHi?\n<|assistant|>\nHello.\n<|user|>\nSum 2+2\n<|assistant|>\n",
                           "label": "4"}]
    sets = {s.name: s.examples[0] for s in task.eval_sets}
    assert sets["arc_easy"] == {"question": "Question: Which is a metal?\nAnswer:", "choices": ["wood", "iron", "salt"],
                                "label": "iron", "gold": 1}
    assert (sets["arc_challenge"]["gold"], sets["arc_challenge"]["label"]) == (3, "w")
    assert sets["openbookqa"]["question"] == "Question: Sun is a\nAnswer:" and sets["openbookqa"]["gold"] == 0
    assert sets["hellaswag"] == {"question": "Baking: She mixes flour", "gold": 1, "label": "and water.",
                                 "choices": ["and sings.", "and water.", "then flies.", "no."]}
    assert sets["boolq"]["choices"] == ["no", "yes"] and sets["boolq"]["gold"] == 1
    assert sets["sciq"]["choices"] == ["d1", "d2", "d3", "oxygen"] and sets["sciq"]["gold"] == 3
    assert task.prompt(sets["boolq"], "default") == "Water is a liquid.\nQuestion: is water wet?\nAnswer:"
    assert task.choices(sets["sciq"]) == ["d1", "d2", "d3", "oxygen"]
    assert task.target(sets["arc_easy"]) == "iron"
    boolq = next(s for s in task.eval_sets if s.name == "boolq")
    assert len(boolq.fewshot) == 2  # demonstrations from BoolQ's train split, not from TÜLU chats
    assert tasks.demonstrations(task, 2, 0, "default", boolq) == (
        "Water is a liquid.\nQuestion: is water wet?\nAnswer: yes\n" * 2)
    assert "<|user|>" in tasks.demonstrations(task, 1, 0, "default")  # without a set: task train


def test_a_hub_task_must_name_a_set_for_every_split_it_uses():
    cfg = compose_config(["task=paws", "~task.data.qqp"])
    with pytest.raises(C.ConfigError, match=r"task paws: task.data.qqp is missing: source=hub needs a hub set "
                                            r"for every split it uses \(\['train', 'paws', 'qqp', 'stsb'\]\)"):
        C.to_typed(cfg)


def test_a_label_map_must_map_to_the_tasks_label_words():
    cfg = compose_config(["task=mnli", "task.data.rte.label_map.1=not_entailment"])
    with pytest.raises(C.ConfigError, match=r"task.data.rte.label_map maps to 'not_entailment', not a label word "
                                            r"of mnli: allowed \['entailment', 'neutral', 'contradiction'\]"):
        C.to_typed(cfg)


def test_an_unknown_formatter_is_named_with_the_available_ones(paws_dir):
    with pytest.raises(KeyError, match=r"formatter 'nope' of SetFit/stsb:test is not defined; available: \["):
        load(["task=paws", f"task.local_dir={paws_dir}", "task.data.stsb.formatter=nope"])


def test_subsample_keeps_a_small_set_whole_and_in_order():
    ds = datasets.Dataset.from_dict({"x": list(range(5))})
    assert hub.subsample(ds, 10, 42)["x"] == [0, 1, 2, 3, 4]
    assert hub.subsample(ds, 3, 42)["x"] == ds.shuffle(seed=42).select(range(3))["x"]
