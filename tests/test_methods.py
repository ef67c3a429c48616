"""Methods: what trains, what stays bit-identical, how stages hand over, how replay mixes, and
what scores a head method's task."""

from __future__ import annotations

import lightning as L
import pytest
import sklearn.linear_model
import torch
from conftest import MICRO
from omegaconf import OmegaConf
from torch.distributed.tensor import DTensor

from ftdyn import config as C
from ftdyn import tasks
from ftdyn.config import keys
from ftdyn.config.choices import HEAD_METHODS
from ftdyn.config.compose import compose_config
from ftdyn.eval.stage import StageEvaluator
from ftdyn.methods.fit import add_lora, fit, train_rows
from ftdyn.methods.linear_probe import extract_features, objective
from ftdyn.methods.plan import plan
from ftdyn.models import checkpoints
from ftdyn.models.heads import ClassifierHead
from ftdyn.train import train
from ftdyn.world.entities import make_world

FAST = MICRO + ["task.train_size=96", "method.batch_size=8"]


def _setup(overrides: list[str]):
    run = C.to_typed(compose_config(FAST + overrides))
    model, tokenizer = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    return run, model, tokenizer, tasks.load(run.task, make_world(0))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_method_plans():
    names = {m: [s.name for s in plan(C.MethodConfig(name=m))] for m in C.Method}
    assert names == {"base": [], "sft": ["ft"], "lora": ["lora"], "lp": ["probe"], "ft": ["ft"],
                     "lpft": ["probe", "ft"], "lorahead": ["lora"], "lplora": ["probe", "lora"]}
    assert [str(m) for m in HEAD_METHODS] == ["lp", "ft", "lpft", "lorahead", "lplora"]


def test_lora_trainable_parameters_are_linear_in_rank(micro_model_cfg):
    counts = {}
    for rank in (4, 16):
        model, _ = checkpoints.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[-1])
        lora = add_lora(model, C.MethodConfig(name="lora", rank=rank), list(C.LADDER_LINEAR))
        counts[rank] = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    arch = micro_model_cfg.arch
    h, i, kv = arch.hidden_size, arch.intermediate_size, arch.hidden_size  # kv heads = heads here
    per_layer = (h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h)  # q k v o gate up down
    assert counts[4] == 4 * arch.num_layers * per_layer
    assert counts[16] == 4 * counts[4]


def test_lora_leaves_the_base_weights_bit_identical(tmp_path):
    run, model, tokenizer, task = _setup(["method=lora", "method.lr=1e-2"])
    before = _snapshot(model)
    fitted = fit(model, tokenizer, task, run, tmp_path)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in fitted.model.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lora_b = [v for k, v in fitted.model.state_dict().items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # the adapters did train
    assert run.method.rank == 8 and fitted.facts["trainable_params"] == 8 * 1088


def test_lp_trains_only_the_head_a_converged_logistic_regression(tmp_path):
    run, model, tokenizer, task = _setup(["method=lp"])
    before = _snapshot(model)
    fitted = fit(model, tokenizer, task, run, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in fitted.model.state_dict().items())
    assert fitted.head.norm() > 0  # it starts at zero
    facts = fitted.facts
    assert facts["trainable_params"] == (model.config.hidden_size + 1) * 3
    assert facts["classifier_norm_probe"] == pytest.approx(fitted.head.norm())
    assert facts["probe_converged"] == 1.0 and 0 < facts["probe_iterations"] < run.method.probe_max_iter
    assert facts["train_steps"] == 0 and facts["train_tokens"] > 0  # L-BFGS, no optimiser steps
    # the head is scikit-learn's minimum on the model's own features (same C), and its accuracy
    rows = train_rows(task, tokenizer, run, model.config.max_position_embeddings, use_head=True)
    x, y = extract_features(model, rows, tokenizer.pad_token_id, 64), torch.tensor([r["class_label"] for r in rows])
    clf = sklearn.linear_model.LogisticRegression(C=run.method.probe_c, tol=1e-10, max_iter=100_000).fit(x, y)
    best = objective(x, y, torch.tensor(clf.coef_), torch.tensor(clf.intercept_), run.method.probe_c)
    ours = objective(x, y, fitted.head.weight.double().detach(), fitted.head.bias.double().detach(), run.method.probe_c)
    assert facts["probe_loss"] == pytest.approx(float(ours)) and abs(float(ours - best)) < 1e-3
    assert facts["probe_train_acc"] == pytest.approx(clf.score(x, y), abs=1 / len(y))


def test_a_finished_probe_is_restored_not_fitted_again(tmp_path, caplog):
    run, model, tokenizer, task = _setup(["method=lp"])
    first = fit(model, tokenizer, task, run, tmp_path)
    assert (tmp_path / "checkpoints" / "probe" / "end.ckpt").exists()
    run, model, tokenizer, task = _setup(["method=lp"])
    with caplog.at_level("INFO", logger="ftdyn.methods.linear_probe"):
        again = fit(model, tokenizer, task, run, tmp_path)
    assert "phase probe already finished" in caplog.text
    assert torch.equal(again.head.weight, first.head.weight) and again.facts == first.facts


def test_ft_trains_every_weight_and_a_fresh_head(tmp_path):
    """Kumar et al.'s FT baseline: every weight of the model and a freshly initialised head train."""
    run, model, tokenizer, task = _setup(["method=ft"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fitted = fit(model, tokenizer, task, run, tmp_path)
    after = dict(fitted.model.named_parameters())
    assert after.keys() == before.keys()
    assert [name for name in before if torch.equal(before[name], after[name])] == []  # every weight moved
    (start_w, start_b), (end_w, end_b) = fitted.head_at["ft"]
    fresh = ClassifierHead(model.config.hidden_size, 3, std=model.config.initializer_range, seed=run.seed)
    assert torch.equal(start_w, fresh.weight) and start_w.abs().sum() > 0 and start_b.abs().sum() == 0
    assert not torch.equal(end_w, start_w) and not torch.equal(end_b, start_b)
    n_model = sum(p.numel() for p in model.parameters())
    assert fitted.facts["trainable_params"] == n_model + (model.config.hidden_size + 1) * 3
    assert fitted.facts["train_steps"] == 96 // 8 and "probe_iterations" not in fitted.facts
    assert fitted.facts["classifier_norm_ft"] == pytest.approx(fitted.head.norm())


def test_lorahead_trains_the_adapters_and_a_fresh_head_only(tmp_path):
    run, model, tokenizer, task = _setup(["method=lorahead"])
    before = _snapshot(model)
    fitted = fit(model, tokenizer, task, run, tmp_path)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in fitted.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    (start_w, _), (end_w, _) = fitted.head_at["lora"]
    assert start_w.abs().sum() > 0 and not torch.equal(end_w, start_w)
    assert fitted.facts["trainable_params"] == 8 * 1088 + (model.config.hidden_size + 1) * 3


def test_ft_scores_its_task_through_its_head(micro_ladder, tmp_path, monkeypatch):
    """The after-evaluation of an ft job gets ft's head, and a task scored with a head reads the
    head alone: a head that always says label j scores exactly the share of label j, whatever
    the language model's label logits would say."""
    calls, evaluate = {}, StageEvaluator.rows

    def spy(self, model, stage, **kwargs):
        calls[stage] = (self, model, kwargs)
        return evaluate(self, model, stage, **kwargs)

    monkeypatch.setattr(StageEvaluator, "rows", spy)
    metrics = train(compose_config(MICRO + ["method=ft", "method.max_steps=2", "task.eval_size=30",
                                            "eval.probe=false", "eval.pretrain_loss=false"]), tmp_path)
    evaluator, model, kwargs = calls["after"]
    assert calls["before"][2].get("head") is None and isinstance(kwargs["head"], ClassifierHead)
    assert evaluate(evaluator, model, "after", **kwargs) == evaluate(evaluator, model, "after", **kwargs)  # deterministic
    assert [r["value"] for r in evaluate(evaluator, model, "after", **kwargs) if r["metric"] == "acc"] == [
        metrics[f"after/{es.name}/acc"] for es in evaluator.task.eval_sets]
    task, labels = evaluator.task, list(evaluator.task.cfg.label_words)
    for j, label in enumerate(labels):
        always_j = ClassifierHead(model.config.hidden_size, len(labels))
        with torch.no_grad():
            always_j.bias[j] = 10.0
        rows = evaluate(evaluator, model, "after", **{**kwargs, "head": always_j})
        acc = {r["eval_set"]: r["value"] for r in rows if r["metric"] == "acc"}
        assert acc == {es.name: pytest.approx(sum(task.target(e) == label for e in es.examples) / len(es.examples))
                       for es in task.eval_sets}


def test_lpft_second_stage_starts_from_the_probed_head(tmp_path):
    run, model, tokenizer, task = _setup(["method=lpft"])
    before = _snapshot(model)
    fitted = fit(model, tokenizer, task, run, tmp_path)
    (probe_start, probe_end), (ft_start, ft_end) = fitted.head_at["probe"], fitted.head_at["ft"]
    assert probe_start[0].abs().sum() == 0 and probe_end[0].abs().sum() > 0
    assert torch.equal(ft_start[0], probe_end[0]) and torch.equal(ft_start[1], probe_end[1])
    assert not torch.equal(ft_end[0], ft_start[0])  # the head kept training with the backbone
    assert not all(torch.equal(before[k], v) for k, v in fitted.model.state_dict().items())
    assert {"classifier_norm_probe", "classifier_norm_ft"} <= fitted.facts.keys()


def test_replay_realises_its_rate_within_one_example_per_batch(tmp_path):
    run, model, tokenizer, task = _setup(["method=sft", "replay.rate=0.1", "method.max_steps=3"])
    fitted = fit(model, tokenizer, task, run, tmp_path)
    assert abs(fitted.facts["replay_fraction"] - 0.1) <= 1 / run.method.batch_size
    run0, model0, tokenizer0, task0 = _setup(["method=sft", "method.max_steps=3"])
    assert fit(model0, tokenizer0, task0, run0, tmp_path / "none").facts["replay_fraction"] == 0.0


class _ShardedWhileTraining(L.Callback):
    """Records, per stage, whether every parameter was a DTensor shard during training."""

    def __init__(self):
        self.stages: list[bool] = []

    def on_train_start(self, trainer, module):
        self.stages.append(all(isinstance(p, DTensor) for p in module.parameters()))


def test_sharded_training_gives_back_whole_weights_equal_to_plain_training(tmp_path, process_group_cleanup):
    """trainer.strategy=fsdp (FSDP2) on one CPU rank: lpft's ft stage shards the model and makes it
    whole again, and what comes out is what plain training gives, in plain tensors, ties kept."""
    fitted, seen = {}, _ShardedWhileTraining()
    for strategy in ("auto", "fsdp"):
        run, model, tokenizer, task = _setup(["method=lpft", f"trainer.strategy={strategy}"])
        fitted[strategy] = fit(model, tokenizer, task, run, tmp_path / strategy, callbacks=[seen])
    assert seen.stages == [False, True]  # ft under auto, then under fsdp (the probe has no Trainer)
    sharded, plain = fitted["fsdp"], fitted["auto"]
    weights = [*sharded.model.parameters(), *sharded.head.parameters()]
    assert all(type(p) is torch.nn.Parameter and p.device.type == "cpu" for p in weights)  # no DTensor left
    assert sharded.model.lm_head.weight is sharded.model.model.embed_tokens.weight  # still tied
    expected = plain.model.state_dict()
    assert sharded.model.state_dict().keys() == expected.keys()
    for name, value in sharded.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)
    torch.testing.assert_close(sharded.head.weight, plain.head.weight)
    assert not torch.equal(plain.model.model.embed_tokens.weight, _setup([])[1].model.embed_tokens.weight)  # it trained
    assert {k: v for k, v in sharded.facts.items()} == pytest.approx(plain.facts)


def test_probe_settings_key_only_the_methods_with_a_probe():
    def key(*overrides: str) -> str:
        return keys.run_key(C.to_typed(compose_config(["model=micro", *overrides])))

    for method in ("lp", "lpft", "lplora"):
        assert key(f"method={method}", "method.probe_c=0.5") != key(f"method={method}")
    for method in ("ft", "lorahead", "sft"):
        assert key(f"method={method}", "method.probe_c=0.5", "method.probe_tol=1e-6") == key(f"method={method}")


def test_the_lpft_study_compares_head_methods_with_head_methods_in_tomihari_and_satos_lora():
    study = OmegaConf.load(C.sweeps_dir() / "experiment" / "lpft.yaml")
    methods = study.hydra.sweeper.params.method.split(",")
    assert sorted(methods) == ["ft", "lorahead", "lpft", "lplora"] and set(methods) <= set(HEAD_METHODS)
    job = C.to_typed(compose_config(["+experiment=lpft", "method=lplora"]))
    assert (job.lora_targets, job.method.rank, job.method.alpha) == (["q_proj", "v_proj"], 8, 8.0)
