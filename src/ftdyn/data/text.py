"""Language-model text as packed rows: a ladder's pre-training stream, its held-out documents and
named text datasets (a hub model's pre-training stand-in).

Rows are `seq_len` tokens of documents separated by end-of-text, every token labelled. Replay
reads the pre-training text as endless streams of them (`pretrain_stream`, `text_stream`); how
batches mix them with task rows is `ftdyn.data.batches`. Forgetting reads held-out rows
(`model_heldout_rows`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from transformers import PreTrainedTokenizerBase

from ftdyn.config import HubSetConfig, ModelConfig, PretrainConfig, TextConfig
from ftdyn.world.corpus import heldout_documents, pretrain_documents
from ftdyn.world.entities import make_world

log = logging.getLogger(__name__)


def packed_rows(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, seq_len: int,
                chunk: int = 256) -> Iterator[dict]:
    """Pack documents, separated by EOS, into rows of exactly `seq_len` tokens, all labelled,
    as the documents are read: `chunk` documents are tokenised at a time and only the tokens
    not yet in a row are kept, so an endless document stream gives an endless row stream in
    constant memory. The tail shorter than a row is dropped."""
    texts, buffer = iter(texts), []
    while batch := list(islice(texts, chunk)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            buffer.extend(ids + [tokenizer.eos_token_id])
        n_full = len(buffer) // seq_len * seq_len
        for i in range(0, n_full, seq_len):
            row = buffer[i:i + seq_len]
            yield {"input_ids": row, "labels": list(row)}
        del buffer[:n_full]


def encode_text_rows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> list[dict]:
    """Pack documents, separated by EOS, into rows of exactly `seq_len` tokens, all labelled."""
    return list(packed_rows(texts, tokenizer, seq_len))


class PackedStream:
    """A re-iterable stream of packed LM rows: every iteration starts again from the first
    document that `documents()` yields, and reads no further than it is asked to."""

    def __init__(self, documents: Callable[[], Iterable[str]], tokenizer: PreTrainedTokenizerBase, seq_len: int):
        self.documents, self.tokenizer, self.seq_len = documents, tokenizer, seq_len

    def __iter__(self) -> Iterator[dict]:
        return packed_rows(self.documents(), self.tokenizer, self.seq_len)


def pretrain_stream(pretrain: PretrainConfig, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> PackedStream:
    """A ladder's pre-training stream as packed rows, endless: what the build trained on (its
    first rows, at the build's seq_len), and what replay rehearses."""
    world = make_world(pretrain.world_seed, pretrain.n_people)
    return PackedStream(lambda: pretrain_documents(world, pretrain.corpus_seed, pretrain.qa_share), tokenizer, seq_len)


def pretrain_rows(pretrain: PretrainConfig, tokenizer: PreTrainedTokenizerBase, n_rows: int,
                  seq_len: int) -> list[dict]:
    """The first `n_rows` packed rows of a ladder's pre-training stream."""
    return list(islice(pretrain_stream(pretrain, tokenizer, seq_len), n_rows))


def heldout_rows(pretrain: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Held-out pre-training text as packed LM rows: `heldout_docs` documents about the ladder's
    world that the build never trained on. They come from `heldout_documents`, written in
    phrasings the training stream never uses, so none can be a training document (another seed
    of the training generator repeated 73% of the tiny ladder's training documents verbatim)."""
    world = make_world(pretrain.world_seed, pretrain.n_people)
    texts = islice(heldout_documents(world, pretrain.corpus_seed + 10_000), pretrain.heldout_docs)
    return encode_text_rows(tokenizer, texts, pretrain.seq_len)


def model_heldout_rows(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Held-out pre-training-distribution text of a model: tinyworld's held-out documents for a
    ladder (`heldout_rows`), the named held-out split of `model.text` (`model.text.heldout_split`,
    e.g. wikitext-103 test) for a hub model. A hub model that names no text (`model.text.path`
    null, e.g. an offline stand-in) is measured on tinyworld's held-out documents instead,
    `model.text.heldout_rows` rows of `model.text.seq_len` tokens (eval_set `tinyworld_heldout`):
    English-like text it never trained on, not its own pre-training distribution."""
    if model.source == "ladder":
        return heldout_rows(model.pretrain, tokenizer)
    if not model.text.path:
        log.warning("model %s names no held-out text (model.text.path=null): forgetting is measured on "
                    "tinyworld's held-out documents", model.name)
        world = make_world(model.pretrain.world_seed, model.pretrain.n_people)
        texts = heldout_documents(world, model.pretrain.corpus_seed + 10_000)
        return list(islice(packed_rows(texts, tokenizer, model.text.seq_len), model.text.heldout_rows))
    return text_rows(model.text, model.text.heldout_split, tokenizer, model.text.heldout_rows, model.text.seq_len)


def heldout_name(model: ModelConfig) -> str:
    """The eval_set of a model's held-out text: `tinyworld_heldout` for ladders (contract 5),
    `<text dataset>_heldout` (e.g. `wikitext_heldout`) for hub models."""
    return f"{model.text.path.split('/')[-1]}_heldout" if model.source == "hub" and model.text.path \
        else "tinyworld_heldout"


def _text_documents(text: TextConfig, split: str) -> tuple[Callable[[], Iterator[str]], str]:
    """The non-empty documents of a named text dataset's split, read lazily (the split stays on
    disk, memory-mapped by `datasets`), and the split's name for messages."""
    from ftdyn.tasks.hub import describe, load_split  # datasets is needed only here

    spec = HubSetConfig(path=text.path, name=text.name, split=split)
    ds = load_split(spec, text.local_dir)
    if text.field not in ds.column_names:
        raise KeyError(f"text dataset {describe(spec)} has no field {text.field!r}; its fields are "
                       f"{ds.column_names} (set model.text.field)")
    column = ds.select_columns([text.field])

    def read() -> Iterator[str]:
        for batch in column.iter(batch_size=1024):
            yield from (t for t in batch[text.field] if t and t.strip())
    return read, describe(spec)


def text_rows(text: TextConfig, split: str, tokenizer: PreTrainedTokenizerBase, n_rows: int,
              seq_len: int) -> list[dict]:
    """The first `n_rows` packed rows of a named text dataset's split (empty lines skipped)."""
    read, name = _text_documents(text, split)
    rows = list(islice(packed_rows(read(), tokenizer, seq_len), n_rows))
    if not rows:
        raise ValueError(f"text dataset {name}: its non-empty documents make no row of {seq_len} tokens")
    return rows


def text_stream(text: TextConfig, split: str, tokenizer: PreTrainedTokenizerBase, seq_len: int) -> PackedStream:
    """A named text split as an endless stream of packed rows: its non-empty documents in order,
    from the first again after the last (the packing runs on across the seam)."""
    read, name = _text_documents(text, split)
    if next(read(), None) is None:
        raise ValueError(f"text dataset {name}: no non-empty document in field {text.field!r} to replay")

    def cycled() -> Iterator[str]:
        while True:
            yield from read()
    return PackedStream(cycled, tokenizer, seq_len)
