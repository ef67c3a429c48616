"""On a CUDA device (marker `gpu`; skipped without one): a job trains and evaluates on the GPU.

These have never run in this project's CI, which has no GPU; they are for a machine that has one.
"""

from __future__ import annotations

import pytest
import torch

from conftest import MICRO
from ftdyn import train as train_module
from ftdyn.train import compose_config, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method", ["sft", "lpft", "lora"])
def test_a_gpu_job_evaluates_before_and_after_on_the_gpu(micro_ladder, tmp_path, monkeypatch, method):
    """Lightning's teardown moves the trained model to the CPU; the after-evaluation must move it back."""
    devices, measure = [], train_module.evaluate_stage

    def spy(model, stage, **kwargs):
        devices.append((stage, next(model.parameters()).device.type,
                        None if kwargs.get("head") is None else kwargs["head"].weight.device.type))
        return measure(model, stage=stage, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_stage", spy)
    facts = train(compose_config([*MICRO, "trainer=gpu", f"method={method}", "method.max_steps=20",
                                  "eval.every_n_steps=10"]), tmp_path)
    head = "cuda" if method == "lpft" else None
    assert devices == [("before", "cuda", None), ("after", "cuda", head)]
    assert facts["run/run/train_steps"] == 20 * (2 if method == "lpft" else 1)
    assert 0 <= facts["after/test/acc"] <= 1 and facts["after/tinyworld_heldout/forget_kl"] > 0
    assert "step_10/tinyworld_heldout/forget_kl" in facts  # in-loop rows: the base beside the model
