"""Tokenisation: the loss sees only the completion; collation pads and masks."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from ftdyn.data.batches import collate
from ftdyn.data.rows import IGNORE, encode_pair
from ftdyn.data.text import encode_text_rows
from ftdyn.eval.scoring import first_token_ids
from ftdyn.tasks.prompts import FORMATS, render


def _tokenizer(micro_ladder) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(micro_ladder / "tokenizer")


def test_labels_cover_exactly_the_completion_and_eos(micro_ladder):
    tok = _tokenizer(micro_ladder)
    row = encode_pair(tok, "### Inference: ", "neutral", max_len=512)
    completion = tok(" neutral", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(tok("### Inference:", add_special_tokens=False)["input_ids"])
    assert row["input_ids"][n_prompt:] == completion
    assert row["labels"] == [IGNORE] * n_prompt + completion


def test_long_prompts_keep_their_end(micro_ladder):
    tok = _tokenizer(micro_ladder)
    row = encode_pair(tok, "Alice lives in Paris. " * 50, "yes", max_len=32)
    assert len(row["input_ids"]) == 32 and row["labels"][-1] == tok.eos_token_id


def test_text_rows_are_packed_to_full_length(micro_ladder):
    tok = _tokenizer(micro_ladder)
    rows = encode_text_rows(tok, ["Alice lives in Paris."] * 40, seq_len=16)
    assert rows and all(len(r["input_ids"]) == 16 and r["labels"] == r["input_ids"] for r in rows)


def test_collate_right_pads_and_masks():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_label_words_have_distinct_first_subtokens(micro_ladder):
    tok = _tokenizer(micro_ladder)
    assert len(set(first_token_ids(tok, ["entailment", "neutral", "contradiction"]))) == 3
    assert len(set(first_token_ids(tok, ["yes", "no"]))) == 2


# Amuro & Char's templates (Sun & Dredze 2024 v5 Table 5 and the authors' code), character for character.
REFERENCE = {
    ("nli", "default"): "### Input_1: P.\n ### Input_2: H.\n ### Inference: ",
    ("nli", "io"): "P. H.",
    ("nli", "instruct"): "Consider the following texts: Text 1: P. Text 2: H. The relation is ",
    ("para", "default"): "### Input_1: A.\n ### Input_2: B.\n ### Paraphrase Classification: ",
    ("para", "io"): "A. B.",
    ("para", "instruct"): "Let\u2019s compare the two sentences: Sentence_1: A. Sentence_2: B. Are they paraphrasing?: ",
}


@pytest.mark.parametrize(("family", "fmt"), sorted(REFERENCE))
def test_prompt_formats_render_the_reference_templates_exactly(family, fmt):
    example = {"premise": "P.", "hypothesis": "H.", "sentence1": "A.", "sentence2": "B."}
    assert render(family, fmt, example) == REFERENCE[family, fmt]
    assert set(FORMATS[family]) == {"default", "io", "instruct"}


@pytest.mark.parametrize("task_name", ["syn_nli", "syn_para"])
def test_fewshot_demonstrations_come_from_train_and_never_contain_an_evaluated_example(task_name):
    from ftdyn import config as C
    from ftdyn import tasks
    from ftdyn.config.compose import compose_config
    from ftdyn.world.entities import make_world

    task = tasks.load(C.to_typed(compose_config([f"task={task_name}"])).task, make_world(0))
    train_lines = {f"{task.prompt(e, 'default').rstrip()} {task.target(e)}" for e in task.train}
    for seed in range(20):
        demos = tasks.demonstrations(task, 4, seed, "default").splitlines(keepends=True)
        lines = ["".join(demos[i:i + 3]).rstrip("\n") for i in range(0, len(demos), 3)]  # 3 lines each
        assert len(lines) == 4 and set(lines) <= train_lines
        for es in task.eval_sets:
            evaluated = {task.prompt(e, "default").rstrip() for e in es.examples}
            assert not any(line.rsplit(" ", 1)[0] in evaluated for line in lines)
    assert tasks.demonstrations(task, 0, 0, "default") == ""


def test_ranks_split_each_pass_into_equal_disjoint_shares():
    from ftdyn.data.batches import ShuffledBatches

    whole = list(ShuffledBatches(40, 8, seed=3))  # 5 batches
    ranks = [list(ShuffledBatches(40, 8, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [3, 3]  # ceil(5 / 2) each, so DDP ranks step together
    assert ranks[0] == [whole[0], whole[2], whole[4]] and ranks[1] == [whole[1], whole[3], whole[0]]  # wraps round
    uninterrupted = ShuffledBatches(40, 8, seed=3, rank=1, world_size=2)
    two_passes = list(uninterrupted) + list(uninterrupted)
    resumed = ShuffledBatches(40, 8, seed=3, skip=4, rank=1, world_size=2)  # rank 1 resumed at its step 4
    assert list(resumed) == two_passes[4:]


# -- replay streams: packed rows read as they are needed ------------------------------------------

def test_the_pretraining_stream_is_the_corpus_packed_in_order(micro_ladder, micro_model_cfg):
    from itertools import islice

    from ftdyn.data.text import pretrain_rows, pretrain_stream
    from ftdyn.world.corpus import corpus
    from ftdyn.world.entities import make_world

    tok, pretrain = _tokenizer(micro_ladder), micro_model_cfg.pretrain
    world = make_world(pretrain.world_seed, pretrain.n_people)
    packed = encode_text_rows(tok, corpus(world, pretrain.corpus_seed, 2000), seq_len=64)  # rows as built before
    stream = pretrain_stream(pretrain, tok, seq_len=64)
    assert len(packed) > 700 and list(islice(stream, 700)) == packed[:700]
    assert list(islice(stream, 10)) == packed[:10]  # every iteration starts again from the first document
    assert pretrain_rows(pretrain, tok, 300, 64) == packed[:300]


def _text_config(root, lines: list[str]):
    from test_catalogue_tasks import write

    from ftdyn import config as C

    write(root, "local/text", None, "train", [{"text": t} for t in lines])
    return C.TextConfig(path="local/text", local_dir=str(root))


def test_a_text_split_streams_its_documents_in_order_and_cycles(micro_ladder, tmp_path):
    from itertools import islice

    from ftdyn.data.text import text_rows, text_stream

    tok = _tokenizer(micro_ladder)
    docs = [f"Alice lives in Paris {i} and Bob is a baker." for i in range(12)]
    text = _text_config(tmp_path, ["", *docs[:6], "  ", *docs[6:]])  # empty lines are skipped
    one_pass = encode_text_rows(tok, docs, seq_len=16)
    three_passes = encode_text_rows(tok, docs * 3, seq_len=16)  # the packing runs on across the seam
    rows = list(islice(text_stream(text, "train", tok, seq_len=16), len(three_passes)))
    assert len(rows) > 2 * len(one_pass) and rows == three_passes
    assert text_rows(text, "train", tok, 1000, 16) == one_pass  # held-out rows: one pass, never cycled


def test_a_text_split_with_nothing_to_replay_is_refused_by_name(micro_ladder, tmp_path):
    from ftdyn.data.text import text_stream

    with pytest.raises(ValueError, match="text dataset local/text:train: no non-empty document in field 'text'"):
        text_stream(_text_config(tmp_path, ["", "  "]), "train", _tokenizer(micro_ladder), seq_len=16)


def test_a_hub_models_heldout_split_may_not_be_the_one_replay_trains_on():
    from ftdyn import config as C
    from ftdyn.config.compose import compose_config

    assert C.to_typed(compose_config(["model=pythia160m"])).model.text.heldout_split == "test"  # named, held out
    with pytest.raises(C.ConfigError, match="model.text.heldout_split and model.text.replay_split are both 'train'"):
        C.to_typed(compose_config(["model=pythia160m", "model.text.heldout_split=train"]))


def test_heldout_rows_are_the_heldout_documents_packed(micro_ladder, micro_model_cfg):
    from itertools import islice

    from ftdyn.data.text import heldout_rows
    from ftdyn.world.corpus import heldout_documents
    from ftdyn.world.entities import make_world

    tok, pretrain = _tokenizer(micro_ladder), micro_model_cfg.pretrain
    world = make_world(pretrain.world_seed, pretrain.n_people)
    docs = list(islice(heldout_documents(world, pretrain.corpus_seed + 10_000), pretrain.heldout_docs))
    assert heldout_rows(pretrain, tok) == encode_text_rows(tok, docs, pretrain.seq_len)
