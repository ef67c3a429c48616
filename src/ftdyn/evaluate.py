"""Measurements: classification by label logits, greedy generation + Rouge-L, held-out LM loss.

Batches are sorted by length and left-padded with explicit position ids, so each row sees the
same positions it would alone and the scores do not depend on the batch size. Classification
reads one forward pass per batch at the last prompt position (Amuro & Char's TokenProb,
seed-methods.md §1.5): the predicted label is the candidate whose first sub-token has the
highest logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftdyn.data import IGNORE, collate, completion_text
from ftdyn.methods.heads import ClassifierHead, last_token_features
from ftdyn.tasks import TaskData, demonstrations
from ftdyn.world.tasks import probe_items


def first_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """The first sub-token of each word as it follows a prompt; they must all differ."""
    ids = [tokenizer(completion_text(w), add_special_tokens=False)["input_ids"][0] for w in words]
    if len(set(ids)) != len(ids):
        tokens = [tokenizer.convert_ids_to_tokens(i) for i in ids]
        raise ValueError(f"label words {list(words)} share first sub-tokens {tokens}: "
                         "label-logit scoring cannot tell them apart")
    return ids


def _left_padded(token_lists: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(token_lists):
        ids[i, width - len(t):] = torch.tensor(t)
        mask[i, width - len(t):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def _length_sorted_batches(token_lists: Sequence[list[int]], batch_size: int):
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _per_prompt(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                batch_size: int, score) -> list[torch.Tensor]:
    """`score(batch)` -> one row of outputs per prompt, over length-sorted, left-padded batches."""
    encoded = [tokenizer(p.rstrip(), add_special_tokens=False)["input_ids"] for p in prompts]
    out: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    model.eval()
    for idx in _length_sorted_batches(encoded, batch_size):
        batch = _left_padded([encoded[i] for i in idx], tokenizer.pad_token_id)
        rows = score({k: v.to(_device(model)) for k, v in batch.items()}).float().cpu()
        for row, i in enumerate(idx):
            out[i] = rows[row]
    return out


def choice_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  choices: Sequence[Sequence[str]], batch_size: int = 64) -> list[torch.Tensor]:
    """Per prompt, the last-position logits of each of its choices' first sub-tokens."""
    candidates = [first_token_ids(tokenizer, c) for c in choices]
    last = _per_prompt(model, tokenizer, prompts, batch_size, lambda b: model(**b, logits_to_keep=1).logits[:, -1])
    return [logits[ids] for logits, ids in zip(last, candidates)]


def head_logits(model: PreTrainedModel, head: ClassifierHead, tokenizer: PreTrainedTokenizerBase,
                prompts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """Per prompt, the classification head's logits on its last-token feature."""
    return _per_prompt(model, tokenizer, prompts, batch_size, lambda b: head(last_token_features(model, **b)))


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
             max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy continuations (KV cache), cut at the end-of-text token and the first newline."""
    encoded = [tokenizer(p.rstrip(), add_special_tokens=False)["input_ids"] for p in prompts]
    out = [""] * len(prompts)
    model.eval()
    for idx in _length_sorted_batches(encoded, batch_size):
        batch = _left_padded([encoded[i] for i in idx], tokenizer.pad_token_id)
        batch.pop("position_ids")  # generate derives positions from the mask
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
        new = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(new[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, i in enumerate(idx):
            out[i] = texts[row].split("\n")[0].strip()
    return out


_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Rouge-L F-measure per example (rouge-score, stemmed)."""
    return [_ROUGE.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


@torch.no_grad()
def lm_loss(model: PreTrainedModel, rows: Sequence[dict], pad_id: int, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy over every labelled position of `rows`."""
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(_device(model)) for k, v in collate(rows[start:start + batch_size], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        total += F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE,
                                 reduction="sum").item()
        count += int((labels != IGNORE).sum())
    return total / max(count, 1)


def _row(eval_set: str, split_kind: str | None, stage: str, prompt: str | None, metric: str, value: float) -> dict:
    return {"eval_set": eval_set, "split_kind": split_kind, "stage": stage, "prompt": prompt,
            "metric": metric, "value": value}


def evaluate_stage(model: PreTrainedModel, stage: str, k: int, run, task: TaskData, tokenizer, world,
                   heldout: Sequence[dict], head: ClassifierHead | None = None) -> list[dict]:
    """Result rows of one stage: every eval set in every eval format, the probe, the LM loss.

    With a `head`, the task's sets are scored by it; the probe always reads label logits, so it
    measures what the language model itself still knows.
    """
    batch = run.eval.batch_size
    rows = []
    for fmt in run.prompt.eval:
        demos = demonstrations(task, k, run.fewshot.seed, fmt)
        for es in task.eval_sets:
            prompts = [task.prompt(e, fmt, demos) for e in es.examples]
            if task.cfg.kind == "classification":
                choices = [task.choices(e) for e in es.examples]
                scores = (head_logits(model, head, tokenizer, prompts, batch) if head is not None
                          else choice_logits(model, tokenizer, prompts, choices, batch))
                golds = [c.index(task.target(e)) for c, e in zip(choices, es.examples)]
                value = sum(int(s.argmax()) == g for s, g in zip(scores, golds)) / len(golds)
                rows.append(_row(es.name, es.split_kind, stage, fmt, "acc", value))
            else:
                outputs = generate(model, tokenizer, prompts, task.cfg.max_new_tokens, batch)
                scores = rouge_l(outputs, [task.target(e) for e in es.examples])
                rows.append(_row(es.name, es.split_kind, stage, fmt, "rougeL", sum(scores) / len(scores)))
    if run.eval.probe:
        items = probe_items(world)
        scores = choice_logits(model, tokenizer, [i["prompt"] for i in items], [i["choices"] for i in items], batch)
        value = sum(int(s.argmax()) == i["choices"].index(i["label"]) for s, i in zip(scores, items)) / len(items)
        rows.append(_row("world_facts", "probe", stage, None, "acc", value))
    if run.eval.pretrain_loss:
        rows.append(_row("tinyworld_heldout", "pretrain", stage, None, "pretrain_loss",
                         lm_loss(model, heldout, tokenizer.pad_token_id, batch)))
    return rows
