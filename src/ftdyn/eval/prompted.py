"""The prompted sets of one stage: the task's own evaluation sets and other tasks' in-domain sets.

How answers are read (label logits, constrained decoding, choice log-likelihood, generation)
lives in `ftdyn.eval.scoring`; this module turns them into result rows. Rows of the per-example
metrics (acc, acc_norm, rougeL) carry their `scores` (one per example, in the set's order), whose
mean is the row's value; `train` writes them to examples.jsonl and drops them from results.jsonl.

Every row of a stage carries `shots`: the demonstrations built for its set's prompts (k, from
the scored task's train split; 0 for an evaluation-only task and for the probe's cloze; None
for held-out text, which has no prompt). The report compares only rows with equal shots.

Every prompt is fitted to the model's context (`ftdyn.data.encoding.PromptEncoder`): demonstrations
are dropped, then the input cut, when it does not fit. A set with any prompt so shortened gets a
`prompts_truncated` row (how many of its prompts, scoring the evaluated model) and a
`demos_dropped` row (how many demonstrations, over those prompts); a set where all fit gets none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftdyn.data.encoding import PromptEncoder
from ftdyn.eval.metrics import agreement, calibration, choice_predictions, fit_temperature
from ftdyn.eval.rows import result_row, scored_row
from ftdyn.eval.scoring import (
    FORMS,
    choice_logits,
    choice_loglik,
    constrained_choice,
    generate,
    next_word_logits,
    per_prompt,
    rouge_l,
)
from ftdyn.models.heads import ClassifierHead, last_token_features
from ftdyn.tasks import EvalSet, TaskData, demonstration_blocks
from ftdyn.tasks.prompts import Prompt

CROSS_METRICS = ("acc", "rougeL")  #: what a cross-task set reports (contract 2)
TRUNCATION_METRICS = ("prompts_truncated", "demos_dropped")  #: a set's prompts shortened to fit the context


def head_logits(model: PreTrainedModel, head: ClassifierHead, tokenizer: PreTrainedTokenizerBase,
                prompts: Sequence[Prompt | str], batch_size: int = 64,
                encoder: PromptEncoder | None = None) -> list[torch.Tensor]:
    """Per prompt, the classification head's logits on its last-token feature (nothing follows
    the prompt, so it may fill the context, as its training row does)."""
    return per_prompt(model, tokenizer, prompts, batch_size,
                      lambda b, _: head(last_token_features(model, b)).float().cpu(), room=0, encoder=encoder)


def truncation_rows(es: EvalSet, stage: str, fmt: str, encoder: PromptEncoder) -> list[dict]:
    """`prompts_truncated` and `demos_dropped` of a set whose prompts went through `encoder`;
    none when every prompt fitted whole."""
    if not encoder.shortened:
        return []
    return [result_row(es.name, es.split_kind, stage, fmt, "prompts_truncated", encoder.shortened),
            result_row(es.name, es.split_kind, stage, fmt, "demos_dropped", encoder.demos_dropped)]


def prompted_rows(model: PreTrainedModel, stage: str, k: int, run, task: TaskData, tokenizer,
                  head: ClassifierHead | None = None, base: PreTrainedModel | None = None,
                  cross: Sequence[TaskData] = ()) -> list[dict]:
    """Rows of every prompted set at one stage: the task's sets and the `cross` tasks' in-domain
    sets, in every eval format and protocol (k shots, and 0 with `fewshot.also_zero_shot`).

    `base` is the checkpoint before fine-tuning (None: `model` is the base itself, so it agrees
    with itself). With a `head`, the task's sets are scored by it; the `cross` tasks' sets always
    read the language model (label logits, likelihood or generation): the head was fitted to this
    task's labels only. A task with an `evaluated` task (an instruction set) is scored on that
    task's sets, demonstrations from its train split. k demonstrations precede every prompt, drawn
    from the train split of the task being scored; fewer, the earliest dropped, where the prompt
    would not fit the model's context (`PromptEncoder`).
    """
    rows = []
    scored = task.evaluated or task
    for shots in protocols(k, run.fewshot.also_zero_shot):
        for fmt in run.prompt.eval:
            for view, demos in _demonstration_groups(scored, shots, run.fewshot.seed, fmt):
                rows += _with_shots(_task_rows(model, stage, fmt, demos, run, view, tokenizer, head, base), demos)
            for other in cross:
                demos = demonstration_blocks(other, shots, run.fewshot.seed, fmt)
                rows += _with_shots(_cross_task_rows(model, stage, fmt, demos, run, other, tokenizer), demos)
    return rows


def protocols(k: int, also_zero_shot: bool) -> list[int]:
    """The numbers of demonstrations a stage's prompted sets are scored with: k, then 0 as well
    when asked (`fewshot.also_zero_shot`); each once."""
    return list(dict.fromkeys([k, *([0] if also_zero_shot else [])]))


def _with_shots(rows: list[dict], demos: Sequence[str]) -> list[dict]:
    """`rows`, each marked with the number of demonstrations its prompts were built with."""
    return [{**r, "shots": len(demos)} for r in rows]


def _demonstration_groups(task: TaskData, k: int, seed: int, fmt: str):
    """(task view, demonstrations) pairs: the sets that draw demonstrations from the task's train
    split together (with the validation split), and each set with its own pool (`EvalSet.fewshot`,
    e.g. tulu's ARC) alone, with demonstrations from that pool."""
    shared = [es for es in task.eval_sets if not es.fewshot]
    if shared:
        yield TaskData(task.cfg, task.train, task.validation, shared), demonstration_blocks(task, k, seed, fmt)
    for es in task.eval_sets:
        if es.fewshot:
            yield TaskData(task.cfg, task.train, [], [es]), demonstration_blocks(task, k, seed, fmt, es)


def _task_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer, head, base) -> list[dict]:
    if task.cfg.kind == "classification":
        return _classification_rows(model, stage, fmt, demos, run, task, tokenizer, head, base)
    if task.cfg.kind == "multiple_choice":
        return _multiple_choice_rows(model, stage, fmt, demos, run, task, tokenizer, base)
    return _generation_rows(model, stage, fmt, demos, run, task, tokenizer)


def _cross_task_rows(model, stage, fmt, demos, run, other: TaskData, tokenizer) -> list[dict]:
    """acc or rougeL of `other`'s in-domain sets, named `<task>/<split>` (`results.is_cross_task`),
    split_kind out_of_domain: the row contract's kinds are in/out-of-domain, probe, pretrain; and
    their truncation counts, if any prompt was shortened."""
    sets = [EvalSet(f"{other.cfg.name}/{es.name}", "out_of_domain", es.examples)
            for es in other.eval_sets if es.split_kind == "in_domain"]
    view = TaskData(other.cfg, other.train, [], sets)  # no validation: no temperature to fit
    rows = _task_rows(model, stage, fmt, demos, run, view, tokenizer, None, None)
    return [r for r in rows if r["metric"] in CROSS_METRICS + TRUNCATION_METRICS]


def _prompts(task: TaskData, examples: list[dict], fmt: str, demos: list[str]) -> list[Prompt]:
    return [task.fewshot_prompt(e, fmt, demos) for e in examples]


def _golds(task: TaskData, examples: list[dict]) -> torch.Tensor:
    return torch.tensor([task.choices(e).index(task.target(e)) for e in examples])


def _scores(model, head, task: TaskData, tokenizer, examples: list[dict], fmt: str, demos: list[str], run,
            encoder: PromptEncoder | None = None):
    """Scores over the task's labels for each example (head logits, or label logits by
    `eval.label_scoring`), and the gold label indices. Prompts are fitted through `encoder`."""
    prompts, batch = _prompts(task, examples, fmt, demos), run.eval.batch_size
    choices = [task.choices(e) for e in examples]
    if head is not None:
        scores = head_logits(model, head, tokenizer, prompts, batch, encoder=encoder)
    elif run.eval.label_scoring == "next_word":
        scores = next_word_logits(model, tokenizer, prompts, choices, batch, encoder=encoder)
    else:
        scores = choice_logits(model, tokenizer, prompts, choices, batch, FORMS[run.eval.label_scoring],
                               encoder=encoder)
    return _pad_choices(scores), _golds(task, examples)


def _pad_choices(scores: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-example choice logits; examples with fewer choices are padded with -inf, which
    softmax gives probability 0, so accuracy, calibration and temperature are unchanged."""
    width = max(len(s) for s in scores)
    return torch.stack([F.pad(s, (0, width - len(s)), value=float("-inf")) for s in scores])


def _classification_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer, head, base) -> list[dict]:
    """acc, calibration before and after temperature scaling (fitted on validation), acc_vs_base.

    Constrained decoding (without a head) gives predictions but no scores: acc and acc_vs_base only.
    """
    if head is None and run.eval.label_scoring == "constrained":
        return _constrained_rows(model, stage, fmt, demos, run, task, tokenizer, base)
    temperature = None
    if task.validation:
        val_logits, val_golds = _scores(model, head, task, tokenizer, task.validation, fmt, demos, run)
        temperature = fit_temperature(val_logits, val_golds)
    rows = []
    for es in task.eval_sets:
        encoder = PromptEncoder.of(model, tokenizer)  # counts this set's shortened prompts
        logits, golds = _scores(model, head, task, tokenizer, es.examples, fmt, demos, run, encoder)
        predicted = logits.argmax(-1)
        base_predicted = predicted if base is None else _scores(base, None, task, tokenizer, es.examples, fmt,
                                                                  demos, run)[0].argmax(-1)
        confidences = torch.softmax(logits, -1).max(-1).values.tolist()  # for the report's reliability diagrams
        rows.append({**scored_row(es.name, es.split_kind, stage, fmt, "acc", (predicted == golds).tolist()),
                     "confidences": confidences})
        values = {**calibration(logits, golds), "acc_vs_base": agreement(predicted, base_predicted)}
        if temperature is not None:
            scaled = calibration(logits, golds, temperature)
            values |= {"ece_ts": scaled["ece"], "mce_ts": scaled["mce"], "temperature": temperature}
        rows += [result_row(es.name, es.split_kind, stage, fmt, metric, value) for metric, value in values.items()]
        rows += truncation_rows(es, stage, fmt, encoder)
    return rows


def _constrained_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer, base) -> list[dict]:
    def predict(model_, examples, encoder=None):
        return torch.tensor(constrained_choice(model_, tokenizer, _prompts(task, examples, fmt, demos),
                                               [task.choices(e) for e in examples], run.eval.batch_size,
                                               encoder=encoder))

    rows = []
    for es in task.eval_sets:
        encoder = PromptEncoder.of(model, tokenizer)
        predicted, golds = predict(model, es.examples, encoder), _golds(task, es.examples)
        base_predicted = predicted if base is None else predict(base, es.examples)
        rows += [scored_row(es.name, es.split_kind, stage, fmt, "acc", (predicted == golds).tolist()),
                 result_row(es.name, es.split_kind, stage, fmt, "acc_vs_base", agreement(predicted, base_predicted)),
                 *truncation_rows(es, stage, fmt, encoder)]
    return rows


def _multiple_choice_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer, base) -> list[dict]:
    """acc (argmax of each choice's summed log-likelihood), acc_norm (of the sum divided by the
    choice's length in characters, as lm-eval-harness), acc_vs_base (on acc's predictions)."""

    def loglik(model_, examples, encoder=None):
        return choice_loglik(model_, tokenizer, _prompts(task, examples, fmt, demos),
                             [task.choices(e) for e in examples], run.eval.batch_size, encoder=encoder)

    rows = []
    for es in task.eval_sets:
        encoder = PromptEncoder.of(model, tokenizer)
        choices, golds = [task.choices(e) for e in es.examples], _golds(task, es.examples)
        predicted, normalised = choice_predictions(loglik(model, es.examples, encoder), choices)
        base_predicted = predicted if base is None else choice_predictions(loglik(base, es.examples), choices)[0]
        rows += [scored_row(es.name, es.split_kind, stage, fmt, "acc", (predicted == golds).tolist()),
                 scored_row(es.name, es.split_kind, stage, fmt, "acc_norm", (normalised == golds).tolist()),
                 result_row(es.name, es.split_kind, stage, fmt, "acc_vs_base", agreement(predicted, base_predicted)),
                 *truncation_rows(es, stage, fmt, encoder)]
    return rows


def _generation_rows(model, stage, fmt, demos, run, task: TaskData, tokenizer) -> list[dict]:
    rows = []
    for es in task.eval_sets:
        encoder = PromptEncoder.of(model, tokenizer)
        outputs = generate(model, tokenizer, _prompts(task, es.examples, fmt, demos), task.cfg.max_new_tokens,
                           run.eval.batch_size, encoder=encoder, cut_at_newline=run.eval.cut_at_newline)
        scores = rouge_l(outputs, [task.target(e) for e in es.examples])
        rows += [scored_row(es.name, es.split_kind, stage, fmt, "rougeL", scores),
                 *truncation_rows(es, stage, fmt, encoder)]
    return rows


