"""The base a job compares its fine-tuned model with, held without a second copy where it can be
(`ftdyn.models.reference`): every holding writes the rows a copy taken before training writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.models import checkpoints, reference
from ftdyn.models.reference import AdaptersOff, Holding, Reference, host_copy
from ftdyn.runs import results
from ftdyn.train import train

SMALL = MICRO + ["task.train_size=64", "task.eval_size=24", "method.batch_size=8", "fewshot.k=1"]


def _rows(job_dir: Path) -> list[dict]:
    """The job's rows but its timings, which no two runs share."""
    rows = [json.loads(line) for line in (job_dir / "results.jsonl").read_text().splitlines()]
    return [r for r in rows if r["metric"] not in results.TIMINGS]


def _job(tmp_path: Path, name: str, overrides: list[str]) -> list[dict]:
    train(compose_config(SMALL + overrides), tmp_path / name)
    return _rows(tmp_path / name)


@pytest.mark.parametrize(("overrides", "kind"), [
    (["method=lora", "eval.interpolate=[0,1]"], Holding.adapters_off),
    (["method=lplora"], Holding.adapters_off),
    (["method=sft"], Holding.reload),
    (["method=lp"], Holding.same),
    (["method=sft", "eval.every_n_steps=4"], Holding.copy),
])
def test_every_holding_writes_the_rows_of_a_copy_taken_before_training(micro_ladder, tmp_path, monkeypatch,
                                                                        overrides, kind):
    run = C.to_typed(compose_config(SMALL + overrides))
    assert reference.holding(run, torch.device("cpu")) == kind
    held = _job(tmp_path, "held", overrides)
    monkeypatch.setattr(reference, "holding", lambda run, device: Holding.copy)  # the path before this module
    copied = _job(tmp_path, "copied", overrides)
    assert held == copied
    forgetting = [r for r in held if r["metric"] == "forget_kl" and r["stage"] == "after"]
    assert forgetting and (forgetting[0]["value"] > 0) == (kind != Holding.same)  # lp's backbone never moves


def test_only_full_fine_tuning_holds_a_copy_and_on_a_gpu_keeps_it_in_host_memory(micro_ladder):
    model, _ = checkpoints.load_checkpoint(C.to_typed(compose_config(MICRO)).model, 40)
    held = {}
    for method, extra in (("lora", []), ("lp", []), ("sft", []), ("sft", ["eval.every_n_steps=5"])):
        run = C.to_typed(compose_config(MICRO + [f"method={method}", *extra]))
        held[(method, bool(extra))] = Reference(run, model, torch.device("cpu")).copy
    assert [k for k, copy in held.items() if copy is not None] == [("sft", True)]
    run = C.to_typed(compose_config(MICRO + ["method=sft"]))
    assert reference.holding(run, torch.device("cuda")) == Holding.host_copy
    assert Reference(run, model, torch.device("cpu")).kind == Holding.reload


def test_adapters_off_reads_the_base_through_the_trained_adapters(micro_ladder):
    from ftdyn.methods.fit import add_lora

    run = C.to_typed(compose_config(MICRO + ["method=lora"]))
    model, _ = checkpoints.load_checkpoint(run.model, 40)
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = model(input_ids=ids).logits
    lora = add_lora(model, run.method, run.lora_targets)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)  # the adapters now change the output
    assert not torch.equal(lora(input_ids=ids).logits, expected)
    base = AdaptersOff(lora)
    assert torch.equal(base(input_ids=ids).logits, expected)
    assert base.config is lora.config and next(base.parameters()).device == torch.device("cpu")
    assert not torch.equal(lora(input_ids=ids).logits, expected)  # the adapters are back on after the call
    plain = base.plain()
    assert not any("lora" in k for k in plain.state_dict())
    assert torch.equal(plain(input_ids=ids).logits, expected)


def test_a_host_copy_has_the_same_weights_in_storage_of_its_own_without_gradients(micro_ladder):
    model, _ = checkpoints.load_checkpoint(C.to_typed(compose_config(MICRO)).model, 40)
    copy = host_copy(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(copy(input_ids=ids).logits, model(input_ids=ids).logits)
    assert not any(p.requires_grad for p in copy.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copy.parameters(), model.parameters()))
    assert copy.lm_head.weight is copy.model.embed_tokens.weight  # tied weights stay tied
