"""The LP-FT diagnostics of a run as result rows (`eval.diagnostics`; docs/diagnostics.md).

- `features` (every method that trains): on a fixed set, the first `eval.diagnostic_size`
  examples of the task's first in-domain set, prompted as training prompts them: stage `before`
  `fisher_ratio` of the start checkpoint's features; stage `after` `feature_cos`, `feature_diff`
  against the start and the fine-tuned `fisher_ratio` (classification tasks), eval_set `features`.
- `ntk` (head methods): the NTK split on the first `eval.ntk_size` training rows, measured by
  `NtkAtStart` when the backbone starts training, with the head it starts with (LP-FT: the
  linear probe's head), eval_set `ntk`, stage `before`. A method whose backbone never trains (lp) is
  measured after fitting: F is 0 there, and so is its FT ratio.
- `head_norm` (head methods): `classifier_norm` at every in-loop step (`ftdyn.eval.inloop`).
- `ntk_change` (every method that trains with optimiser steps, classification): the NTK's
  prediction of each of the first `eval.ntk_steps` steps' change of f on the first
  `eval.ntk_size` in-domain test examples, beside the actual change (`ftdyn.analysis.ntk_trace`;
  f: the head's logits, or the LM methods' label-word logits), eval_set `ntk_change`, stage `after`.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from ftdyn import config as C
from ftdyn.analysis import features as feat
from ftdyn.analysis.ntk_trace import TRACE_POINTS, HeadLogits, LabelLogits, NtkTrace
from ftdyn.config.choices import Diagnostic
from ftdyn.data.batches import collate
from ftdyn.data.rows import encode_prompt
from ftdyn.eval import regression
from ftdyn.eval.rows import result_row
from ftdyn.eval.scoring import FORMS, label_token_ids
from ftdyn.tasks import TaskData

log = logging.getLogger(__name__)


def wants(run: C.TrainConfig, diagnostic: Diagnostic) -> bool:
    """Whether `run` measures `diagnostic`: asked for, on a method that trains, and for the head
    diagnostics a method with a head (`METHOD_TABLE`)."""
    if diagnostic not in run.eval.diagnostics or not run.method.spec.phases:
        return False
    return diagnostic in (Diagnostic.features, Diagnostic.ntk_change) or run.method.spec.head


def fixed_examples(task: TaskData, size: int) -> tuple[list[dict], TaskData]:
    """The fixed set: the first `size` examples of the scored task's first in-domain set."""
    scored = task.evaluated or task
    sets = [es for es in scored.eval_sets if es.split_kind == "in_domain"] or scored.eval_sets
    return sets[0].examples[:size], scored


def feature_rows(run: C.TrainConfig, task: TaskData, tokenizer, base, model) -> list[dict]:
    """Feature change of `model` against `base` and both models' Fisher ratios, as rows."""
    examples, scored = fixed_examples(task, run.eval.diagnostic_size)
    prompts = [scored.prompt(e, run.prompt.train) for e in examples]
    before = feat.last_features(base, tokenizer, prompts, run.eval.batch_size)
    after = feat.last_features(model, tokenizer, prompts, run.eval.batch_size)
    values = {"after": feat.feature_change(before, after), "before": {}}
    if scored.cfg.kind == "classification":
        labels = torch.tensor([scored.choices(e).index(scored.target(e)) for e in examples])
        values["before"]["fisher_ratio"] = feat.fisher_ratio(before, labels)
        values["after"]["fisher_ratio"] = feat.fisher_ratio(after, labels)
    return [result_row("features", None, stage, None, metric, value)
            for stage, measures in values.items() for metric, value in measures.items()]


def ntk_batch(run: C.TrainConfig, task: TaskData, tokenizer, max_len: int) -> dict[str, torch.Tensor]:
    """The first `eval.ntk_size` training rows, as the head trains on them (right-padded)."""
    labels = list(task.cfg.label_words)
    rows = [{**encode_prompt(tokenizer, task.prompt(e, run.prompt.train), max_len),
             "class_label": labels.index(task.target(e))} for e in task.train[:run.eval.ntk_size]]
    return collate(rows, tokenizer.pad_token_id)


class NtkAtStart(L.Callback):
    """Measures the NTK split once, at the start of the first training phase whose backbone
    trains, with the model and head as that phase starts (LP-FT: the linear probe's head).

    A method whose backbone never trains (lp) is measured after fitting instead (`measure`, from
    `rows`): F is 0 either way. The rows ride in every checkpoint, so a resumed job neither
    measures twice nor measures a half-trained model.
    """

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch
        self.rows: list[dict] = []

    def on_train_start(self, trainer, module):
        trains_backbone = any(p.requires_grad for p in module.model.parameters())
        if trains_backbone and not self.rows and module.head is not None and trainer.is_global_zero:
            self.measure(module.model, module.head)

    def measure(self, model, head) -> None:
        batch = {k: v.to(head.weight.device) for k, v in self.batch.items()}
        pre, ft, delta = feat.ntk_split(model, head, batch)
        measures = feat.ntk_measures(pre, ft, delta, head.out_features)
        self.rows = [result_row("ntk", None, "before", None, m, v) for m, v in measures.items()]
        log.info("NTK split: FT ratio %.3f, FT share %.3f", measures["ft_ratio"], measures["ft_share"])

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


def ntk_trace(run: C.TrainConfig, task: TaskData, tokenizer, max_len: int) -> NtkTrace:
    """The NTK trace of a ladder job: trace points the first `eval.ntk_size` in-domain test
    examples, prompted as training prompts them (right-padded, [n, 2, L]); f the head's logits,
    or without a head the label-word logits the scorer reads (first sub-tokens in the forms of
    `eval.label_scoring`; first_token's for next_word and constrained)."""
    examples, scored = fixed_examples(task, run.eval.ntk_size)
    rows = [encode_prompt(tokenizer, scored.prompt(e, run.prompt.train), max_len) for e in examples]
    batch = collate(rows, tokenizer.pad_token_id)
    points = {"ntk_change": torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1)}
    if run.method.spec.head:
        return NtkTrace(points, lambda module: HeadLogits(module.model, module.head), steps=run.eval.ntk_steps)
    forms = FORMS.get(str(run.eval.label_scoring), FORMS["first_token"])
    ids = label_token_ids(tokenizer, list(scored.cfg.label_words), forms)
    return NtkTrace(points, lambda module: LabelLogits(module.model, ids), steps=run.eval.ntk_steps)


def callbacks(run: C.TrainConfig, task: TaskData, tokenizer, model, base=None) -> list[L.Callback]:
    """The training callbacks the asked-for diagnostics need: `NtkAtStart` for `ntk`, `NtkTrace`
    for `ntk_change` (the toy's with `base`, the checkpoint, whose frozen kernel predicts too)."""
    if task.cfg.kind == C.TaskKind.regression:  # the toy: f is the MLP itself, on its sets' first points
        points = {name: x[:TRACE_POINTS] for name, x in regression.points(task).items()}
        return [NtkTrace(points, base=base, steps=run.eval.ntk_steps)] if wants(run, Diagnostic.ntk_change) else []
    max_len, out = model.config.max_position_embeddings, []
    if wants(run, Diagnostic.ntk_change):
        out.append(ntk_trace(run, task, tokenizer, max_len))
    if not wants(run, Diagnostic.ntk):
        return out
    if run.trainer.strategy == C.Strategy.fsdp:
        log.warning("eval.diagnostics=ntk is not measured under trainer.strategy=fsdp (sharded weights)")
        return out
    return [*out, NtkAtStart(ntk_batch(run, task, tokenizer, max_len))]


def rows(run: C.TrainConfig, task: TaskData, tokenizer, base, fitted, measured: list[L.Callback]) -> list[dict]:
    """Every diagnostic row of a finished fit (`ftdyn.methods.Fitted`): the features', the NTK
    split's (measured now where no phase trained the backbone) and the NTK trace's."""
    out = []
    for cb in measured:
        if isinstance(cb, NtkAtStart):
            if not cb.rows:
                cb.measure(fitted.model, fitted.head)
            out += cb.rows
        if isinstance(cb, NtkTrace):  # per set of points: the toy's sets keep their split kind
            kinds = {es.name: es.split_kind for es in task.eval_sets}
            out += [result_row(name, kinds.get(name), "after", None, metric, value)
                    for name, metric, value in cb.measures()]
    if wants(run, Diagnostic.features):
        out += feature_rows(run, task, tokenizer, base, fitted.model)
    return out
