"""Tokenisation: the loss sees only the completion; collation pads and masks."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from ftdyn.data import IGNORE, collate, encode_pair, encode_text_rows
from ftdyn.evaluate import first_token_ids
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


def test_default_formats_render_the_reference_templates():
    nli = {"premise": "P.", "hypothesis": "H."}
    assert render("nli", "default", nli) == "### Input_1: P.\n ### Input_2: H.\n ### Inference: "
    para = {"sentence1": "A.", "sentence2": "B."}
    assert render("para", "default", para) == "### Input_1: A.\n ### Input_2: B.\n ### Paraphrase Classification: "
    assert set(FORMATS["nli"]) == {"default", "io", "instruct"}
