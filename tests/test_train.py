"""One real job end to end on the micro ladder: rows, files, and SFT that teaches."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import MICRO, PYTHON

from ftdyn import config as C
from ftdyn.config import keys
from ftdyn.config.compose import compose_config
from ftdyn.models import checkpoints
from ftdyn.train import train

CONTRACT = ["run_key", "model", "ckpt_step", "task", "method", "lora_rank", "replay_rate", "prompt", "seed",
            "eval_set", "split_kind", "stage", "metric", "value"]
# Enough SFT for the micro model to learn syn_para: 3 epochs x 600 / 8 = 225 steps. Scored zero-shot
# after, as it was trained: 4-shot (the default fewshot.k_after) the micro model reads 0.5, at chance
# (0.617 zero-shot, measured): it does not carry what it learned into prompts led by demonstrations.
LEARNS = ["task=syn_para", "task.train_size=600", "method.batch_size=8", "method.epochs=3", "method.lr=3e-3",
          "fewshot.k_after=0"]


@pytest.fixture(scope="module")
def job(micro_ladder, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("job")
    metrics = train(compose_config(MICRO + LEARNS), job_dir)
    rows = [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]
    return job_dir, metrics, rows


def test_job_writes_config_rows_and_done_marker(job):
    job_dir, _, rows = job
    assert (job_dir / "config.yaml").is_file() and (job_dir / "done").is_file()
    saved = yaml.safe_load((job_dir / "config.yaml").read_text())
    assert saved["task"]["name"] == "syn_para" and saved["model"]["name"] == "micro"
    assert json.loads((job_dir / "done").read_text())["run_key"] == rows[0]["run_key"]
    assert all(list(r)[:len(CONTRACT)] == CONTRACT or set(CONTRACT) <= set(r) for r in rows)


def test_rows_cover_every_stage_split_kind_and_run_fact(job):
    _, _, rows = job
    seen = {(r["stage"], r["split_kind"], r["eval_set"], r["metric"]) for r in rows}
    for stage in ("before", "after"):
        assert (stage, "in_domain", "test", "acc") in seen
        assert (stage, "out_of_domain", "ood_templates", "acc") in seen
        assert (stage, "out_of_domain", "ood_entities", "acc") in seen
        assert (stage, "probe", "world_facts", "acc") in seen
        assert (stage, "pretrain", "tinyworld_heldout", "pretrain_loss") in seen
    facts = {r["metric"]: r["value"] for r in rows if r["stage"] == "run"}
    assert set(facts) == {"trainable_params", "train_steps", "train_tokens", "wall_s", "replay_fraction", "world_size",
                          "eval_before_s", "eval_after_s"}
    assert 0 < facts["eval_before_s"] + facts["eval_after_s"] < facts["wall_s"]  # evaluation is part of the job
    assert facts["replay_fraction"] == 0.0
    assert facts["world_size"] == 1  # one process trained
    assert facts["train_steps"] == 3 * 600 // 8
    assert facts["trainable_params"] > 0 and facts["train_tokens"] > 0
    assert {r["run_key"] for r in rows} == {rows[0]["run_key"]}
    assert all(r["ckpt_step"] == 40 and r["method"] == "sft" and r["lora_rank"] is None for r in rows)


def test_sft_lifts_in_domain_accuracy(job):
    _, metrics, _ = job
    assert metrics["after/test/acc"] > metrics["before/test/acc"] + 0.1


def test_rows_hold_the_results_contract_checked_from_the_command_line(job):
    out = subprocess.run([PYTHON, "-m", "ftdyn.runs.check", str(job[0])], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.endswith(" 0 problems\n"), out.stdout[-2000:]


def test_run_key_ignores_logging_and_tells_experiments_apart():
    key = keys.run_key(C.to_typed(compose_config(MICRO)))
    assert key == keys.run_key(C.to_typed(compose_config(MICRO + ["logger=csv"])))
    assert key == keys.run_key(C.to_typed(compose_config(MICRO + ["ckpt.step=40"])))  # = final
    assert key != keys.run_key(C.to_typed(compose_config(MICRO + ["ckpt.step=20"])))
    assert key != keys.run_key(C.to_typed(compose_config(MICRO + ["seed=1"])))


def test_base_method_evaluates_without_training(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["method=base", "task=syn_probe"]), tmp_path)
    assert not any(k.startswith("after/") for k in metrics)
    assert metrics["run/run/train_steps"] == 0
    assert metrics["before/test/acc_vs_base"] == 1.0
    assert metrics["before/test/acc"] == metrics["before/world_facts/acc"]  # the probe is the world's facts


def test_every_eval_format_gets_its_own_rows(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["method=base", "prompt=all_formats", "task.eval_size=20"]), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by_format = {(r["prompt"], r["eval_set"]) for r in rows if r["metric"] == "acc" and r["split_kind"] != "probe"}
    assert by_format == {(f, s) for f in ("default", "io", "instruct") for s in ("test", "ood_templates", "ood_entities")}


def test_head_methods_record_rank_and_classifier_norms(micro_ladder, tmp_path):
    train(compose_config(MICRO + ["method=lplora", "method.rank=4", "method.max_steps=2"]), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["lora_rank"] for r in rows} == {4}
    facts = {r["metric"] for r in rows if r["stage"] == "run"}
    assert {"classifier_norm_probe", "classifier_norm_lora", "replay_fraction", "probe_iterations", "probe_loss",
            "probe_train_acc", "probe_converged"} <= facts
    # a 2-step stage still logs its loss (trainer.log_every_n_steps is 10); the probe is no training loop
    curve = (tmp_path / "lora" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in curve[0] and len(curve) >= 2


def test_classification_rows_carry_calibration_agreement_and_forgetting(job):
    _, metrics, _ = job
    for stage in ("before", "after"):
        for metric in ("acc", "ece", "mce", "ece_ts", "mce_ts", "temperature", "acc_vs_base"):
            assert f"{stage}/test/{metric}" in metrics
        for metric in ("pretrain_loss", "forget_ce", "forget_kl"):
            assert f"{stage}/tinyworld_heldout/{metric}" in metrics
    assert metrics["before/test/acc_vs_base"] == 1.0
    assert metrics["before/tinyworld_heldout/forget_kl"] == 0.0  # the base has forgotten nothing
    assert metrics["after/tinyworld_heldout/forget_kl"] > 0.0
    assert metrics["after/tinyworld_heldout/forget_ce"] == pytest.approx(
        metrics["after/tinyworld_heldout/forget_kl"] + metrics["before/tinyworld_heldout/forget_ce"], rel=1e-6)
    assert metrics["after/test/acc_vs_base"] < 1.0


def test_scores_do_not_depend_on_the_evaluation_batch_size(micro_model_cfg):
    import torch

    from ftdyn.eval.scoring import choice_logits
    from ftdyn.tasks import load
    from ftdyn.world.entities import make_world

    model, tokenizer = ladder_checkpoint(micro_model_cfg)
    task = load(C.to_typed(compose_config(MICRO)).task, make_world(0))
    examples = task.eval_sets[0].examples[:24]
    prompts = [task.prompt(e, "default", demos=("x " * (i % 5))) for i, e in enumerate(examples)]  # mixed lengths
    choices = [task.choices(e) for e in examples]
    one = torch.stack(choice_logits(model, tokenizer, prompts, choices, batch_size=1))
    eight = torch.stack(choice_logits(model, tokenizer, prompts, choices, batch_size=8))
    assert torch.allclose(one, eight, atol=1e-4)


def ladder_checkpoint(model_cfg):

    return checkpoints.load_checkpoint(model_cfg, model_cfg.checkpoints[-1])


def test_in_loop_rows_appear_at_the_requested_interval(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["method=lpft", "task.train_size=64", "method.batch_size=8",
                                            "eval.every_n_steps=4"]), tmp_path)
    steps = sorted({int(k.split("/")[0][5:]) for k in metrics if k.startswith("step_")})
    assert steps == [4, 8]  # the probe is fitted outside the Trainer (no steps); then 8 ft steps
    for step in steps:
        for metric in ("train/train_loss", "tinyworld_heldout/forget_ce", "tinyworld_heldout/forget_kl",
                       "tinyworld_heldout/pretrain_loss", "world_facts/acc", "world_facts/acc_vs_base"):
            assert f"step_{step}/{metric}" in metrics
    assert metrics["step_8/tinyworld_heldout/forget_kl"] > 0.0
    # the world-facts probe along training (Kalajdzievski Fig. 4): acc, and agreement with the base's answers
    assert 0.0 <= metrics["step_4/world_facts/acc_vs_base"] <= 1.0
    assert metrics["after/world_facts/acc"] == pytest.approx(metrics["step_8/world_facts/acc"])  # same weights


def test_generation_task_writes_rouge_rows_that_sft_raises(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["task=syn_summ", "task.train_size=300", "task.eval_size=16",
                                            "task.max_new_tokens=16", "method.lr=3e-3", "method.epochs=2"]), tmp_path)
    for stage in ("before", "after"):
        for split in ("test", "ood_templates", "ood_entities"):
            assert 0.0 <= metrics[f"{stage}/{split}/rougeL"] <= 1.0
    assert metrics["after/test/rougeL"] > metrics["before/test/rougeL"]


def test_greedy_generation_does_not_depend_on_the_batch_size(micro_model_cfg):
    from ftdyn.eval.scoring import generate

    model, tokenizer = ladder_checkpoint(micro_model_cfg)
    prompts = ["Alice lives in", "The pet of Bruno is a", "### Input: Clara is a baker.\n ### Summary: "]
    one = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=1)
    three = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    assert one == three and all(isinstance(t, str) for t in one) and any(one)
