"""Methods: what trains, what stays bit-identical, how stages hand over, how replay mixes."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.distributed.tensor import DTensor

from conftest import MICRO
from ftdyn import config as C
from ftdyn import ladder, tasks
from ftdyn.methods import add_lora, fit, plan
from ftdyn.train import compose_config
from ftdyn.world.entities import make_world

FAST = MICRO + ["task.train_size=96", "method.batch_size=8"]


def _setup(overrides: list[str]):
    run = C.to_typed(compose_config(FAST + overrides))
    model, tokenizer = ladder.load_checkpoint(run.model, run.ckpt_step)
    return run, model, tokenizer, tasks.load(run.task, make_world(0))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_method_plans():
    names = {m: [s.name for s in plan(C.MethodConfig(name=m))] for m in C.Method}
    assert names == {"base": [], "sft": ["ft"], "lora": ["lora"], "lp": ["probe"], "lpft": ["probe", "ft"],
                     "lplora": ["probe", "lora"]}


def test_lora_trainable_parameters_are_linear_in_rank(micro_model_cfg):
    counts = {}
    for rank in (4, 16):
        model, _ = ladder.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[-1])
        lora = add_lora(model, C.MethodConfig(name="lora", rank=rank))
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


def test_lp_trains_only_the_head(tmp_path):
    run, model, tokenizer, task = _setup(["method=lp"])
    before = _snapshot(model)
    fitted = fit(model, tokenizer, task, run, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in fitted.model.state_dict().items())
    assert fitted.head.norm() > 0  # it starts at zero
    assert fitted.facts["trainable_params"] == (model.config.hidden_size + 1) * 3
    assert fitted.facts["classifier_norm_probe"] == pytest.approx(fitted.head.norm())


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
    """trainer.strategy=fsdp (FSDP2) on one CPU rank: lpft's two stages each shard the model and make it
    whole again, and what comes out is what plain training gives, in plain tensors, ties kept."""
    fitted, seen = {}, _ShardedWhileTraining()
    for strategy in ("auto", "fsdp"):
        run, model, tokenizer, task = _setup(["method=lpft", f"trainer.strategy={strategy}"])
        fitted[strategy] = fit(model, tokenizer, task, run, tmp_path / strategy, callbacks=[seen])
    assert seen.stages == [False, False, True, True]  # auto: probe, ft; fsdp: probe, ft
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
