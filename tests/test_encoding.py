"""The one prompt encoder and its context budget: the rule, and evaluation of 4-shot prompts
longer than a small model's context (shortened to fit, and counted in `prompts_truncated` rows)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import MICRO

from ftdyn import config as C
from ftdyn import tasks
from ftdyn.config.compose import compose_config
from ftdyn.data.encoding import PromptEncoder
from ftdyn.data.rows import completion_text, encode_pair
from ftdyn.eval.stage import StageEvaluator
from ftdyn.models import checkpoints
from ftdyn.runs import check
from ftdyn.tasks.prompts import Prompt, render
from ftdyn.train import train
from ftdyn.world.entities import make_world

K = 4


@pytest.fixture(scope="module")
def micro(micro_ladder, micro_model_cfg):
    return checkpoints.load_checkpoint(micro_model_cfg, 40)


def _task(name: str, eval_size: int = 24) -> tasks.TaskData:
    cfg = dataclasses.replace(tasks.task_config(name), train_size=200, eval_size=eval_size)
    return tasks.load(cfg, make_world(0, C.PretrainConfig().n_people))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text.rstrip(), add_special_tokens=False)["input_ids"]


def _nli_prompt() -> tuple[tasks.TaskData, dict, Prompt]:
    task = _task("syn_nli")
    example = task.eval_sets[0].examples[0]
    return task, example, task.fewshot_prompt(example, "default", tasks.demonstration_blocks(task, K, 0, "default"))


def test_a_prompt_that_fits_is_encoded_whole_as_its_text(micro):
    _, tokenizer = micro
    task, example, prompt = _nli_prompt()
    text = task.prompt(example, "default", tasks.demonstrations(task, K, 0, "default"))
    assert prompt.text() == text  # the parts join to today's prompt, byte for byte
    whole = _ids(tokenizer, text)
    encoder = PromptEncoder(tokenizer, context=len(whole) + 1)
    fitted = encoder.fit(prompt, room=1)
    assert fitted.ids == whole and not fitted.shortened
    assert (encoder.shortened, encoder.demos_dropped) == (0, 0)


def test_demonstrations_are_dropped_earliest_first_then_the_input_keeps_its_end(micro):
    _, tokenizer = micro
    _, _, prompt = _nli_prompt()
    lengths = [len(_ids(tokenizer, prompt.text(d))) for d in range(K + 1)]  # d earliest demonstrations left out
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] > 8
    room = 3
    encoder = PromptEncoder(tokenizer, context=lengths[2] + room)  # the two latest demonstrations fit
    two_left = encoder.fit(prompt, room)
    assert two_left.ids == _ids(tokenizer, "".join(prompt.demos[2:]) + prompt.query)
    assert (two_left.demos_dropped, two_left.tokens_cut) == (2, 0)
    encoder.context = lengths[2] + room - 1  # one token short: a third demonstration goes
    assert encoder.fit(prompt, room).demos_dropped == 3
    encoder.context = lengths[K] - 5 + room  # not even the input fits: its last tokens stay
    cut = encoder.fit(prompt, room)
    assert cut.ids == _ids(tokenizer, prompt.query)[5:] and len(cut.ids) == encoder.context - room
    assert (cut.demos_dropped, cut.tokens_cut) == (K, 5)
    assert (encoder.shortened, encoder.demos_dropped) == (3, 2 + 3 + K)


def test_a_context_with_no_room_for_a_prompt_is_an_error_naming_it(micro):
    _, tokenizer = micro
    with pytest.raises(ValueError, match=r"context of 4 tokens \(model.config.max_position_embeddings\).*4 tokens"):
        PromptEncoder(tokenizer, context=4).fit("### Input: x", room=4)


def test_a_training_row_keeps_its_whole_completion_and_the_end_of_its_prompt(micro):
    _, tokenizer = micro
    _, _, prompt = _nli_prompt()
    row = encode_pair(tokenizer, prompt, "neutral", max_len=40)
    completion = _ids(tokenizer, completion_text("neutral")) + [tokenizer.eos_token_id]
    assert len(row["input_ids"]) == 40 and row["input_ids"][-len(completion):] == completion
    assert row["input_ids"][:-len(completion)] == _ids(tokenizer, prompt.query)[-(40 - len(completion)):]


def _room(task: tasks.TaskData, tokenizer, example: dict) -> int:
    """What each evaluation path leaves after a prompt (ftdyn.data.encoding's module docstring)."""
    if task.cfg.kind == "generation":
        return task.cfg.max_new_tokens
    if task.cfg.kind == "multiple_choice":
        return max(len(_ids(tokenizer, completion_text(c))) for c in task.choices(example))
    return 1  # first-token label scoring


def _expected_counts(task: tasks.TaskData, tokenizer, context: int) -> dict[str, tuple[int, int]]:
    """Per set, (prompts longer than context - room, demonstrations the rule drops from them),
    from the texts themselves."""
    blocks = tasks.demonstration_blocks(task, K, 0, "default")
    counts = {}
    for es in task.eval_sets:
        shortened = dropped = 0
        for e in es.examples:
            budget = context - _room(task, tokenizer, e)
            query = render(task.cfg.family, "default", e)
            fits = [len(_ids(tokenizer, "".join(blocks[d:]) + query)) <= budget for d in range(K + 1)]
            if not fits[0]:  # dropped: the fewest earliest demonstrations that make it fit, else all
                shortened, dropped = shortened + 1, dropped + (fits.index(True) if any(fits) else K)
        counts[es.name] = (shortened, dropped)
    return counts


class _Widths:
    """The widest input (prompt + what follows, under generation's growing mask) the model saw."""

    def __init__(self, model):
        self.widest = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        width = (mask if mask is not None else kwargs["input_ids"]).shape[1]
        self.widest = max(self.widest, width)


@pytest.mark.parametrize("task_name", ["syn_nli", "syn_summ", "syn_mc"])
def test_4_shot_prompts_longer_than_the_context_are_shortened_to_fit_and_counted(micro, task_name):
    """A 4-shot prompt of the micro ladder's tasks is 175-310 tokens; the context is set to the
    test set's median 4-shot prompt plus the room its scoring needs, so about half its prompts
    must be shortened, and every prompt, with what follows it, fits."""
    model, tokenizer = micro
    task = _task(task_name)
    blocks = tasks.demonstration_blocks(task, K, 0, "default")
    test = task.eval_sets[0].examples
    needed = sorted(len(_ids(tokenizer, task.prompt(e, "default", "".join(blocks)))) + _room(task, tokenizer, e)
                    for e in test)
    context = needed[len(needed) // 2]
    expected = _expected_counts(task, tokenizer, context)
    assert 0 < expected["test"][0] < len(test)
    run = C.to_typed(compose_config(MICRO + [f"task={task_name}", f"fewshot.k={K}", "eval.probe=false",
                                             "eval.pretrain_loss=false"]))
    saved = model.config.max_position_embeddings
    model.config.max_position_embeddings = context
    widths = _Widths(model)
    try:
        rows = StageEvaluator(run, task, tokenizer).rows(model, "before", K)
    finally:
        widths.handle.remove()
        model.config.max_position_embeddings = saved
    assert 0 < widths.widest <= context
    for es in task.eval_sets:
        own = [r for r in rows if r["eval_set"] == es.name]
        counts = {r["metric"]: r["value"] for r in own if r["metric"] in ("prompts_truncated", "demos_dropped")}
        assert all(r["split_kind"] == es.split_kind and r["prompt"] == "default" for r in own)
        want = expected[es.name]
        assert counts == ({"prompts_truncated": want[0], "demos_dropped": want[1]} if want[0] else {}), es.name


@pytest.mark.slow
def test_a_job_on_a_small_context_ladder_records_its_shortened_prompts(micro_ladder, tmp_path):
    """A real job (method=base) on a micro ladder whose model takes 128 positions: every 4-shot
    syn_summ prompt (260+ tokens, plus 24 generated) is shortened, and results.jsonl says how many,
    in rows that pass the shared results checker."""
    overrides = MICRO + ["model.arch.max_position=128", "task=syn_summ", "task.eval_size=12", "method=base",
                         f"fewshot.k={K}", "eval.probe=false"]
    run = C.to_typed(compose_config(overrides))
    train(compose_config(overrides), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    truncated = {(r["eval_set"], r["split_kind"]): r["value"] for r in rows if r["metric"] == "prompts_truncated"}
    model, tokenizer = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    assert model.config.max_position_embeddings == 128
    task = tasks.load(run.task, make_world(run.model.pretrain.world_seed, run.model.pretrain.n_people), seed=run.seed)
    expected = _expected_counts(task, tokenizer, 128)
    assert truncated == {(es.name, es.split_kind): expected[es.name][0] for es in task.eval_sets}
    assert all(v == 12 for v in truncated.values())
    assert list(check.problems([tmp_path])) == []  # the results contract
