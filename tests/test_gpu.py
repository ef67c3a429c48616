"""On a CUDA device (marker `gpu`; skipped without one): a job trains and evaluates on the GPU.

These have never run in this project's CI, which has no GPU; they are for a machine that has one.
"""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO
from omegaconf import OmegaConf
from test_cluster import SMALL, _facts, _rows, _sweep

from ftdyn.config.compose import compose_config
from ftdyn.eval.stage import StageEvaluator
from ftdyn.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method, trainer", [("sft", "trainer=gpu"), ("lpft", "trainer=gpu"), ("lora", "trainer=gpu"),
                                             ("lpft", "trainer=fsdp trainer.devices=1")])
def test_a_gpu_job_evaluates_before_and_after_on_the_gpu(micro_ladder, tmp_path, monkeypatch, process_group_cleanup,
                                                        method, trainer):
    """Lightning's teardown moves the trained model to the CPU; the after-evaluation must move it back
    (and under fsdp, gather it whole first)."""
    devices, measure = [], StageEvaluator.rows

    def spy(self, model, stage, **kwargs):
        if not kwargs.get("in_loop"):
            devices.append((stage, next(model.parameters()).device.type,
                            None if kwargs.get("head") is None else kwargs["head"].weight.device.type))
        return measure(self, model, stage, **kwargs)

    monkeypatch.setattr(StageEvaluator, "rows", spy)
    facts = train(compose_config([*MICRO, *trainer.split(), f"method={method}", "method.max_steps=20",
                                  "eval.every_n_steps=10"]), tmp_path)
    head = "cuda" if method == "lpft" else None
    assert devices == [("before", "cuda", None), ("after", "cuda", head)]
    assert facts["run/run/train_steps"] == 20  # lpft's probe takes no optimiser steps
    assert 0 <= facts["after/test/acc"] <= 1 and facts["after/tinyworld_heldout/forget_kl"] > 0
    assert "step_10/tinyworld_heldout/forget_kl" in facts  # in-loop rows: the base beside the model


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fsdp_on_two_gpus_matches_ddp(micro_ladder, tmp_path):
    """The CPU test of test_cluster on two GPUs (NCCL): sharded and data-parallel training agree."""
    sweep = tmp_path / "sweep"
    out = _sweep(["hydra/launcher=local_jobs", *SMALL, "task.train_size=64", "method.max_steps=4", "method.lr=1e-2",
                  "trainer=ddp", "trainer.strategy=fsdp,ddp", "method=lpft", "trainer.precision=32-true",
                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {}
    for job in (sweep / "0", sweep / "1"):
        rows = _rows(job)
        assert _facts(rows)["world_size"] == 2
        strategy = OmegaConf.load(job / "config.yaml").trainer.strategy
        results[strategy] = {(r["stage"], r["eval_set"], r["metric"]): r["value"] for r in rows
                             if r["stage"] == "after"}
    assert results["fsdp"] == pytest.approx(results["ddp"], abs=1e-3)
