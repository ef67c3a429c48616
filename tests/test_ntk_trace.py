"""The NTK trace (eval.diagnostics=[ntk_change]) on ladder classification: a head method's logits
and sft's label-word logits, predicted step by step beside what happened, with and without replay."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import MICRO

from ftdyn import config as C
from ftdyn import tasks
from ftdyn.analysis import diagnostics
from ftdyn.config.compose import compose_config
from ftdyn.eval.scoring import choice_logits
from ftdyn.models import checkpoints
from ftdyn.train import train
from ftdyn.world.entities import make_world

STEPS = 4
FAST = MICRO + ["task.train_size=64", "method.batch_size=8", "eval.probe=false", "eval.pretrain_loss=false",
                f"method.max_steps={STEPS}", "eval.ntk_size=8", f"eval.ntk_steps={STEPS}"]
TRACED = ["eval.diagnostics=[ntk_change]"]
#: plain SGD at a small rate, no warmup: every step is a kernel step to first order
SGD = ["optim=sgd", "optim.warmup_ratio=0", "method.lr=0.001"]  # sft: rel_err 0.19, 0.024, 0.0024 at 1e-2, 1e-3, 1e-4
REPLAY = ["replay.rate=0.25", "replay.seq_len=32"]


def traced(job_dir: Path) -> dict[str, float]:
    """The job's ntk_change rows, metric -> value, after checking their place in the row contract."""
    rows = [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]
    ntk = [r for r in rows if r["eval_set"] == "ntk_change"]
    assert all(r["stage"] == "after" and r["split_kind"] is None for r in ntk)
    return {r["metric"]: r["value"] for r in ntk}


def test_a_head_method_traces_its_logits_with_and_without_replay(micro_ladder, tmp_path):
    plain, replayed = ([*FAST, "method=ft", *TRACED, *extra] for extra in ([], REPLAY))
    metrics = {name: train(compose_config(overrides), tmp_path / name)
               for name, overrides in (("plain", plain), ("replay", replayed))}
    untraced = train(compose_config([*FAST, "method=ft"]), tmp_path / "untraced")
    rows = {name: traced(tmp_path / name) for name in ("plain", "replay")}
    expected = {"ntk_corr", "ntk_corr_total", "ntk_rel_err", "ntk_pred_change", "ntk_actual_change",
                "ntk_pred_change_replay", "ntk_replay_ratio"}
    assert set(rows["plain"]) == set(rows["replay"]) == expected  # no k0 off the toy
    assert rows["plain"]["ntk_pred_change_replay"] == 0 and rows["plain"]["ntk_replay_ratio"] == 0
    assert rows["replay"]["ntk_replay_ratio"] > 0  # the replay rows' LM loss pulls on the head's logits
    assert all(-1 <= r["ntk_corr"] <= 1 for r in rows.values())
    assert traced(tmp_path / "untraced") == {}  # off by default: no rows
    after = {k: v for k, v in metrics["plain"].items() if k.startswith("after/") and "/ntk_change/" not in k}
    assert after == {k: v for k, v in untraced.items() if k.startswith("after/")}  # tracing leaves training as it was


@pytest.mark.parametrize("method", ["ft", "sft"])
def test_under_sgd_at_a_small_rate_the_prediction_is_the_change_to_first_order(micro_ladder, tmp_path, method):
    """ft: the head's logits, with replay rows (their LM loss's pull included); sft: the label-word logits."""
    extra = REPLAY if method == "ft" else []
    train(compose_config([*FAST, *TRACED, *SGD, f"method={method}", *extra]), tmp_path)
    rows = traced(tmp_path)
    assert rows["ntk_rel_err"] < 0.1
    assert rows["ntk_corr"] > 0.99
    if method == "ft":
        assert rows["ntk_replay_ratio"] > 0


def test_the_config_allows_ntk_change_on_ladder_classification_and_refuses_what_it_cannot_trace():
    for method in ("ft", "lpft", "lorahead", "sft", "lora"):
        C.to_typed(compose_config([*MICRO, f"method={method}", *TRACED, "replay.rate=0.1"]))
    refused = [(["task=syn_summ"], "traces a classifier's logits, but task=syn_summ is generation"),
               (["trainer.strategy=ddp", "trainer.devices=2"], "one rank cannot predict the update"),
               (["+trainer.extra.accumulate_grad_batches=2"], "a batch is not an optimiser step")]
    for overrides, message in refused:
        with pytest.raises(C.ConfigError, match=message):
            C.to_typed(compose_config([*MICRO, *TRACED, *overrides]))


def test_sft_traces_the_label_logits_the_scorer_reads(micro_ladder):
    run = C.to_typed(compose_config([*MICRO, "method=sft", *TRACED]))
    model, tokenizer = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    task = tasks.load(run.task, make_world(run.model.pretrain.world_seed, run.model.pretrain.n_people), seed=run.seed)
    trace = diagnostics.ntk_trace(run, task, tokenizer, model.config.max_position_embeddings)
    examples, scored = diagnostics.fixed_examples(task, run.eval.ntk_size)
    prompts = [scored.prompt(e, run.prompt.train) for e in examples]
    read = choice_logits(model.eval(), tokenizer, prompts, [scored.cfg.label_words] * len(prompts))
    with torch.no_grad():
        traced_f = trace.function(SimpleNamespace(model=model))(trace.x)
    assert torch.allclose(traced_f, torch.stack(read), atol=1e-4)
