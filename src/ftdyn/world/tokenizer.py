"""A byte-level BPE tokenizer trained on tinyworld text with `tokenizers`.

Byte-level, so any string (prompt formats, unseen names, real-task text) encodes without
unknown tokens; the vocabulary is learned from the corpus, so the world's names are whole tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Learn a BPE vocabulary of `vocab_size` (special tokens included) from `texts`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD,
                                   bos_token=EOS, padding_side="left")


def tinyworld_tokenizer(n_docs: int = 2000, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A BPE tokenizer learned in about a second from `n_docs` tinyworld documents and the label
    words: what the bench and the stand-ins of real models (`ftdyn.models.stand_ins`) use (a
    ladder's own tokenizer also learns the prompt formats: `ftdyn.pretrain.ladder`)."""
    from ftdyn.world.corpus import corpus
    from ftdyn.world.entities import make_world
    from ftdyn.world.tasks import NLI_LABELS, PARA_LABELS

    texts = corpus(make_world(0, 20), 1, n_docs)
    return train_tokenizer(texts + [" ".join([*NLI_LABELS, *PARA_LABELS])] * 20, vocab_size)
