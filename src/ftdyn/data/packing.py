"""Padding-free training batches: several examples packed into each row, each attending only to itself.

A padded batch of 8 MNLI-like examples is about half padding (`make bench` reports the share). A
packed batch lays the same examples back to back in rows of `width` tokens (first fit, longest
first), so almost every position is a real token. Exactness rests on three things:

- positions restart at 0 for every example, and the model is called with `position_ids`, no
  attention mask and no cache: transformers 5 (`masking_utils.find_packed_sequence_indices`, in
  Llama's `create_causal_mask`) then reads the restarts as document boundaries and builds
  per-document causal attention (SDPA with a block mask, or flash-attention varlen), so no
  token attends to another example;
- the first token of every example is unlabelled: in a padded row nothing predicts it either,
  while in a packed row the previous example's last token would;
- the tail of a row is padding that forms a document of its own, unlabelled.

The LM loss (the mean over labelled tokens) and the head's last-token features are then the
padded batch's, within float rounding; tests/test_packing.py checks losses, gradients and
isolation. A packed batch holds the same examples as the padded one would, so an optimiser step
sees the same data either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ftdyn.data.rows import IGNORE


def first_fit(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `width` tokens: first fit, longest first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        b = next((b for b, free in enumerate(room) if free >= lengths[i]), None)
        if b is None:
            bins.append([]), room.append(width)
            b = len(bins) - 1
        bins[b].append(i)
        room[b] -= lengths[i]
    return bins


def pack(rows: Sequence[dict], pad_id: int, width: int = 0) -> dict:
    """Rows (`input_ids`, `labels`, optional `class_label`) packed into rows of `width` tokens.

    Args:
        rows: Encoded examples, each at most the model's context.
        pad_id: Token id of a row's unused tail.
        width: Tokens per packed row; 0 or less than the longest example: the longest example.
            A fixed width gives `torch.compile` few shapes (only the row count varies).

    Returns:
        `input_ids`, `position_ids`, `labels` (packed rows x width), `last` (one (row, position)
        per example, in input order: its last token, where a head reads its feature),
        `class_label` if any row has one, and `rows` and `tokens` (ints: examples and real tokens).
    """
    lengths = [len(r["input_ids"]) for r in rows]
    width = max(width, *lengths)
    bins = first_fit(lengths, width)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    last = torch.zeros((len(rows), 2), dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for i in members:
            n = lengths[i]
            ids[b, at:at + n] = torch.tensor(rows[i]["input_ids"])
            labels[b, at + 1:at + n] = torch.tensor(rows[i]["labels"][1:])  # nothing in the row predicts token 0
            positions[b, at:at + n] = torch.arange(n)
            last[i] = torch.tensor([b, at + n - 1])
            at += n
        positions[b, at:] = torch.arange(width - at)  # the tail: a document of its own, unlabelled
    packed = {"input_ids": ids, "position_ids": positions, "labels": labels, "last": last,
              "rows": len(rows), "tokens": sum(lengths)}
    if any("class_label" in r for r in rows):
        packed["class_label"] = torch.tensor([r.get("class_label", IGNORE) for r in rows], dtype=torch.long)
    return packed


def collate_packed(rows: Sequence[dict], pad_id: int, width: int = 0) -> dict:
    """A training batch of packed parts: `task` rows and `replay` rows packed apart (the training
    step weighs each part by its share of the batch's rows), a part only where it has rows."""
    parts = {"task": [r for r in rows if not r.get("replay", False)],
             "replay": [r for r in rows if r.get("replay", False)]}
    return {"packed": {name: pack(part, pad_id, width) for name, part in parts.items() if part},
            "rows": len(rows)}


def packed_forward(model, part: dict, **kwargs):
    """The model on a packed part. No attention mask and no cache: that is what makes
    transformers build per-document attention from the restarting `position_ids` (with the
    default `use_cache=True` a cache is made and the examples would attend to each other)."""
    return model(input_ids=part["input_ids"], position_ids=part["position_ids"], use_cache=False, **kwargs)
