"""Tokenisation and collation, in one place, and the LightningDataModule that feeds training.

An example becomes `prompt_ids + completion_ids`: the prompt with trailing whitespace removed,
then the completion with one leading space and the end-of-text token. Labels are -100 on the
prompt, so only the completion is trained (Amuro & Char's `encode_with_prompt_completion_format`,
seed-methods.md §1.4). Evaluation scores the first completion token at the last prompt position,
so training and scoring see the same token boundary.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

IGNORE = -100


def completion_text(completion: str) -> str:
    """The completion as appended after a prompt: one leading space, no trailing space."""
    return " " + completion.strip()


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str,
                max_len: int) -> dict[str, list[int]]:
    """Token ids and labels of prompt + completion + EOS; labels only on the completion."""
    prompt_ids = tokenizer(prompt.rstrip(), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    prompt_ids = prompt_ids[-(max_len - len(completion_ids)):]  # keep the end of a long prompt
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + completion_ids}


def encode_text_rows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int) -> list[dict]:
    """Pack documents, separated by EOS, into rows of exactly `seq_len` tokens, all labelled."""
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [tokenizer.eos_token_id])
    rows = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    return [{"input_ids": row, "labels": list(row)} for row in rows]


def collate(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest; padding is masked and unlabelled."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class TrainDataModule(L.LightningDataModule):
    """Encoded training rows, shuffled with a fixed seed, padded per batch."""

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int, seed: int = 0):
        super().__init__()
        if not rows:
            raise ValueError("no training rows: the task's train split is empty")
        self.rows, self.batch_size, self.pad_id, self.seed = rows, batch_size, pad_id, seed

    def steps_per_epoch(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.rows, batch_size=self.batch_size, shuffle=True, generator=generator,
                          collate_fn=lambda b: collate(b, self.pad_id))


def sample(items: Sequence, n: int, seed: int) -> list:
    """`n` items drawn without replacement with a fixed seed (all of them if fewer)."""
    if n >= len(items):
        return list(items)
    return random.Random(seed).sample(list(items), n)
