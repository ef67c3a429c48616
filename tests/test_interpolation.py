"""WiSE-FT (eval.interpolate): theta_a = (1 - a) theta_0 + a theta_ft, evaluated like `after`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO

from ftdyn import config as C
from ftdyn.analysis.interpolation import interpolated_state
from ftdyn.config.compose import compose_config
from ftdyn.runs import check
from ftdyn.train import train

# fewshot.k=0: the base model's `before` rows are then scored exactly as an `after` stage is
FAST = MICRO + ["task.train_size=64", "method.batch_size=8", "fewshot.k=0", "eval.interpolate=[0,0.5,1]"]


def _rows(job) -> list[dict]:
    return [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]


def _values(rows: list[dict], stage: str, alpha: float | None) -> dict[tuple, float]:
    return {(r["eval_set"], r["metric"], r["prompt"]): r["value"] for r in rows
            if r["stage"] == stage and r.get("alpha") == alpha}


def test_interpolated_state_ends_are_exact():
    start = {"w": torch.randn(5, 3), "n": torch.tensor([1, 2])}
    end = {"w": torch.randn(5, 3), "n": torch.tensor([3, 4])}
    assert torch.equal(interpolated_state(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolated_state(start, end, 1.0)["w"], end["w"])
    assert torch.allclose(interpolated_state(start, end, 0.25)["w"], 0.75 * start["w"] + 0.25 * end["w"])
    assert torch.equal(interpolated_state(start, end, 0.5)["n"], end["n"])  # integer buffers are not blended
    with pytest.raises(ValueError, match="differ in names"):
        interpolated_state(start, {"w": end["w"]}, 0.5)


@pytest.mark.parametrize("method", ["sft", "lora"])
def test_alpha_0_is_the_base_model_and_alpha_1_the_fine_tuned_one(method, micro_ladder, tmp_path):
    train(compose_config(FAST + [f"method={method}", "method.lr=5e-3"]), tmp_path)
    rows = _rows(tmp_path)
    before, after = _values(rows, "before", None), _values(rows, "after", None)
    at0, at_half, at1 = (_values(rows, "after", a) for a in (0.0, 0.5, 1.0))
    assert before.keys() == after.keys() == at0.keys() == at1.keys()
    if method == "sft":  # every metric exactly: accuracy, calibration, agreement, forgetting (0 at a = 0)
        assert at0 == before
        assert at1 == after  # the same weights
    else:
        # merged adapters: W + BA summed once, where the peft model adds x(BA) to xW; and the merged
        # weights are frozen, the loaded checkpoint's were not (`interpolation._same_grad_flags`)
        assert at1 == pytest.approx(after, rel=1e-5, abs=1e-5)
        assert at0 == pytest.approx(before, rel=1e-5, abs=1e-5)  # the temperature fit amplifies them
    assert at_half != at0 and at_half != at1
    assert at0[("tinyworld_heldout", "forget_kl", None)] == 0 < at1[("tinyworld_heldout", "forget_kl", None)]
    assert not [line for line in (tmp_path / "examples.jsonl").read_text().splitlines() if "alpha" in line]
    assert list(check.problems([tmp_path])) == []  # the results contract, alpha column and all


@pytest.mark.parametrize("method", ["lp", "lpft"])
def test_a_head_method_keeps_its_fine_tuned_head_at_every_alpha(method, micro_ladder, tmp_path):
    """a = 1 is the fine-tuned model, head included; lp's backbone never moves, so every a is."""
    train(compose_config(FAST + [f"method={method}"]), tmp_path)
    rows = _rows(tmp_path)
    after, at0, at1 = _values(rows, "after", None), _values(rows, "after", 0.0), _values(rows, "after", 1.0)
    assert at1 == after
    if method == "lp":
        assert at0 == after
    else:  # the pre-trained backbone under the fine-tuned head: forgetting as before fine-tuning
        assert at0 != after
        assert at0[("tinyworld_heldout", "forget_kl", None)] == 0
        assert at0[("tinyworld_heldout", "pretrain_loss", None)] == _values(rows, "before", None)[
            ("tinyworld_heldout", "pretrain_loss", None)]


def test_interpolation_weights_outside_0_1_are_refused():
    with pytest.raises(C.ConfigError, match=r"eval.interpolate: \[1.5\]"):
        C.to_typed(compose_config(MICRO + ["eval.interpolate=[0,1.5]"]))


def test_interpolation_is_off_by_default():
    assert C.to_typed(compose_config(MICRO)).eval.interpolate == []
