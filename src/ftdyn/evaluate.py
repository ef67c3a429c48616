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
from ftdyn.metrics import agreement, calibration, fit_temperature, forgetting
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
                batch_size: int, run_batch) -> list:
    """`run_batch(batch)` -> one output per row, over length-sorted, left-padded batches of
    `prompts`; the outputs come back in the prompts' order."""
    encoded = [tokenizer(p.rstrip(), add_special_tokens=False)["input_ids"] for p in prompts]
    out: list = [None] * len(prompts)
    model.eval()
    for idx in _length_sorted_batches(encoded, batch_size):
        batch = _left_padded([encoded[i] for i in idx], tokenizer.pad_token_id)
        outputs = run_batch({k: v.to(_device(model)) for k, v in batch.items()})
        for row, i in enumerate(idx):
            out[i] = outputs[row]
    return out


def choice_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  choices: Sequence[Sequence[str]], batch_size: int = 64) -> list[torch.Tensor]:
    """Per prompt, the last-position logits of each of its choices' first sub-tokens."""
    candidates = [first_token_ids(tokenizer, c) for c in choices]
    last = _per_prompt(model, tokenizer, prompts, batch_size,
                       lambda b: model(**b, logits_to_keep=1).logits[:, -1].float().cpu())
    return [logits[ids] for logits, ids in zip(last, candidates)]


def head_logits(model: PreTrainedModel, head: ClassifierHead, tokenizer: PreTrainedTokenizerBase,
                prompts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """Per prompt, the classification head's logits on its last-token feature."""
    return _per_prompt(model, tokenizer, prompts, batch_size,
                       lambda b: head(last_token_features(model, **b)).float().cpu())


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
             max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy continuations (KV cache), cut at the end-of-text token and the first newline."""

    def continue_batch(batch: dict[str, torch.Tensor]) -> list[str]:
        inputs = {k: v for k, v in batch.items() if k != "position_ids"}  # generate derives them from the mask
        new = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(new[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [text.split("\n")[0].strip() for text in texts]

    return _per_prompt(model, tokenizer, prompts, batch_size, continue_batch)


_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Rouge-L F-measure per example (rouge-score, stemmed)."""
    return [_ROUGE.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


def result_row(eval_set: str, split_kind: str | None, stage: str, prompt: str | None, metric: str,
               value: float) -> dict:
    """One measurement, without the run's columns (train() adds those)."""
    return {"eval_set": eval_set, "split_kind": split_kind, "stage": stage, "prompt": prompt,
            "metric": metric, "value": value}


def evaluate_stage(model: PreTrainedModel, stage: str, k: int, run, task: TaskData, tokenizer, world,
                   heldout: Sequence[dict], head: ClassifierHead | None = None,
                   base: PreTrainedModel | None = None) -> list[dict]:
    """Result rows of one stage: every eval set in every eval format, the probe, forgetting.

    `base` is the checkpoint before fine-tuning (None: `model` is the base itself, so it agrees
    with itself and has forgotten nothing). With a `head`, the task's sets are scored by it; the
    probe always reads label logits, so it measures what the language model itself still knows.
    """
    rows = []
    for fmt in run.prompt.eval:
        demos = demonstrations(task, k, run.fewshot.seed, fmt)
        if task.cfg.kind == "classification":
            rows += _classification_rows(model, stage, fmt, demos, run, task, tokenizer, head, base)
        else:
            rows += _generation_rows(model, stage, fmt, demos, run, task, tokenizer)
    if run.eval.probe:
        rows.append(_probe_row(model, stage, tokenizer, world, run.eval.batch_size))
    if run.eval.pretrain_loss:
        rows += _pretrain_rows(model, base, stage, heldout, tokenizer.pad_token_id, run.eval.batch_size)
    return rows


def _scores(model, head, task: TaskData, tokenizer, examples: list[dict], fmt: str, demos: str, batch: int):
    """Logits over the task's labels for each example, and the gold label indices."""
    prompts = [task.prompt(e, fmt, demos) for e in examples]
    choices = [task.choices(e) for e in examples]
    scores = (head_logits(model, head, tokenizer, prompts, batch) if head is not None
              else choice_logits(model, tokenizer, prompts, choices, batch))
    golds = torch.tensor([c.index(task.target(e)) for c, e in zip(choices, examples)])
    return _pad_choices(scores), golds


def _pad_choices(scores: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-example choice logits; examples with fewer choices are padded with -inf, which
    softmax gives probability 0, so accuracy, calibration and temperature are unchanged."""
    width = max(len(s) for s in scores)
    return torch.stack([F.pad(s, (0, width - len(s)), value=float("-inf")) for s in scores])


def _classification_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer, head, base) -> list[dict]:
    """acc, calibration before and after temperature scaling (fitted on validation), acc_vs_base."""
    batch = run.eval.batch_size
    temperature = None
    if task.validation:
        val_logits, val_golds = _scores(model, head, task, tokenizer, task.validation, fmt, demos, batch)
        temperature = fit_temperature(val_logits, val_golds)
    rows = []
    for es in task.eval_sets:
        logits, golds = _scores(model, head, task, tokenizer, es.examples, fmt, demos, batch)
        predicted = logits.argmax(-1)
        base_predicted = predicted if base is None else _scores(base, None, task, tokenizer, es.examples, fmt,
                                                                  demos, batch)[0].argmax(-1)
        values = {"acc": float((predicted == golds).double().mean()), **calibration(logits, golds),
                  "acc_vs_base": agreement(predicted, base_predicted)}
        if temperature is not None:
            scaled = calibration(logits, golds, temperature)
            values |= {"ece_ts": scaled["ece"], "mce_ts": scaled["mce"], "temperature": temperature}
        rows += [result_row(es.name, es.split_kind, stage, fmt, metric, value) for metric, value in values.items()]
    return rows


def _generation_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer) -> list[dict]:
    rows = []
    for es in task.eval_sets:
        prompts = [task.prompt(e, fmt, demos) for e in es.examples]
        outputs = generate(model, tokenizer, prompts, task.cfg.max_new_tokens, run.eval.batch_size)
        scores = rouge_l(outputs, [task.target(e) for e in es.examples])
        rows.append(result_row(es.name, es.split_kind, stage, fmt, "rougeL", sum(scores) / len(scores)))
    return rows


def probe_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world, batch_size: int = 64) -> float:
    """Share of the world's facts the model completes correctly (cloze over each attribute's values)."""
    items = probe_items(world)
    scores = choice_logits(model, tokenizer, [i["prompt"] for i in items], [i["choices"] for i in items], batch_size)
    return sum(int(s.argmax()) == i["choices"].index(i["label"]) for s, i in zip(scores, items)) / len(items)


def _probe_row(model, stage: str, tokenizer, world, batch: int) -> dict:
    return result_row("world_facts", "probe", stage, None, "acc", probe_accuracy(model, tokenizer, world, batch))


@torch.no_grad()
def heldout_measures(model, base, heldout: Sequence[dict], pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """On held-out pre-training text, per labelled position: the LM loss (`pretrain_loss`) and
    forgetting against `base` (`forget_ce`, `forget_kl`; seed-methods §2.1). `base` None: `model`
    is the base, and its forgetting is zero."""
    totals = {"pretrain_loss": 0.0, "forget_ce": 0.0, "forget_kl": 0.0}
    count = 0
    for model_ in filter(None, (model, base)):
        model_.eval()
    for start in range(0, len(heldout), batch_size):
        batch = {k: v.to(_device(model)) for k, v in collate(heldout[start:start + batch_size], pad_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs).logits[:, :-1].float()
        base_logits = logits if base is None else base(**inputs).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        totals["pretrain_loss"] += F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                                   reduction="sum").item()
        ce, kl = forgetting(base_logits, logits, mask)
        totals["forget_ce"] += ce
        totals["forget_kl"] += kl
        count += int(mask.sum())
    return {metric: total / max(count, 1) for metric, total in totals.items()}


def _pretrain_rows(model, base, stage: str, heldout: Sequence[dict], pad_id: int, batch_size: int) -> list[dict]:
    return [result_row("tinyworld_heldout", "pretrain", stage, None, metric, value)
            for metric, value in heldout_measures(model, base, heldout, pad_id, batch_size).items()]
