"""The knowledge probe: a cloze on every fact of the tiny world (eval_set `world_facts`, split_kind
`probe`), read by label logits over the attribute's values (ftdyn's own ladders only, `eval.probe`).

Not the linear probe of LP-FT (`ftdyn.methods.linear_probe`): this one measures what the model
knows; that one is a classifier fitted on its features.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftdyn.eval.metrics import agreement
from ftdyn.eval.rows import result_row, scored_row
from ftdyn.eval.scoring import choice_logits
from ftdyn.world.tasks import knowledge_items

EVAL_SET = "world_facts"


def knowledge_predictions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world,
                      batch_size: int = 64) -> tuple[list[int], list[int]]:
    """Per fact of the world, the value the model completes it with (cloze over its attribute's
    values) and the true one, as indices into the choices."""
    items = knowledge_items(world)
    scores = choice_logits(model, tokenizer, [i["prompt"] for i in items], [i["choices"] for i in items], batch_size)
    return [int(s.argmax()) for s in scores], [i["choices"].index(i["label"]) for i in items]


def knowledge_hits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world, batch_size: int = 64) -> list[int]:
    """Per fact of the world, 1 if the model completes it correctly (cloze over its attribute's values)."""
    predicted, golds = knowledge_predictions(model, tokenizer, world, batch_size)
    return [int(p == g) for p, g in zip(predicted, golds)]


def knowledge_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world, batch_size: int = 64) -> float:
    """Share of the world's facts the model completes correctly."""
    hits = knowledge_hits(model, tokenizer, world, batch_size)
    return sum(hits) / len(hits)


def stage_rows(model, stage: str, tokenizer, world, batch_size: int) -> list[dict]:
    """The probe's `acc` at a stage, with its per-example hits (a cloze: no demonstrations, 0 shots)."""
    hits = knowledge_hits(model, tokenizer, world, batch_size)
    return [{**scored_row(EVAL_SET, "probe", stage, None, "acc", hits), "shots": 0}]


def in_loop_rows(model, base_answers: list[int], stage: str, tokenizer, world, batch_size: int) -> list[dict]:
    """The probe's `acc` along training, and `acc_vs_base`: the share of facts completed as the base
    completes them (`base_answers`), which accuracy alone can hide (Kalajdzievski, Fig. 4)."""
    predicted, golds = knowledge_predictions(model, tokenizer, world, batch_size)
    acc = sum(p == g for p, g in zip(predicted, golds)) / len(golds)
    return [result_row(EVAL_SET, "probe", stage, None, "acc", acc),
            result_row(EVAL_SET, "probe", stage, None, "acc_vs_base",
                       agreement(torch.tensor(predicted), torch.tensor(base_answers)))]
