"""The findings code on synthetic rows whose verdicts are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ftdyn.report import findings as F
from ftdyn.report import fits
from ftdyn.report import verdict as V

SEEDS = (0, 1, 2)
CKPTS = (10, 100, 1000)
KINDS = {"cls": "classification", "cls2": "classification", "gen": "generation"}


def row(seed, task, ckpt, stage, split_kind, metric, value, eval_set="x", method="sft", prompt="default",
        replay_rate=0.0):
    return {"run_key": f"{task}-{ckpt}-{seed}-{method}-{replay_rate}", "seed": seed, "task": task,
            "ckpt_step": ckpt, "method": method, "lora_rank": None, "replay_rate": replay_rate, "prompt": prompt,
            "eval_set": eval_set, "split_kind": split_kind, "stage": stage, "metric": metric, "value": value}


def noise(seed: int) -> float:
    return 0.01 * (seed - 1)  # -0.01, 0, 0.01: a small spread, so the interval is narrow but not empty


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def run(finding_key: str, rows: pd.DataFrame) -> dict:
    (finding,) = [f for f in F.FINDINGS if f.key == finding_key]
    return F.evaluate(finding, rows, KINDS)


def test_interval_is_the_student_t_interval_across_seeds():
    mean, lo, hi, n = V.interval(pd.Series([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (mean, n) == (2.0, 3)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert all(math.isnan(v) for v in V.interval(pd.Series([5.0]))[1:3])


@pytest.mark.parametrize("lo, hi, direction, margin, expected", [
    (0.1, 0.2, 1, 0.0, "reproduced"), (-0.2, -0.1, 1, 0.0, "not reproduced"), (-0.1, 0.1, 1, 0.0, "inconclusive"),
    (0.6, 0.9, 1, 0.5, "reproduced"), (0.2, 0.4, 1, 0.5, "not reproduced"),
    (-0.3, -0.1, -1, 0.0, "reproduced"), (0.1, 0.3, -1, 0.0, "not reproduced"), (-0.1, 0.1, -1, 0.0, "inconclusive"),
    (-0.05, 0.05, 0, 0.1, "reproduced"), (0.2, 0.3, 0, 0.1, "not reproduced"), (-0.3, -0.2, 0, 0.1, "not reproduced"),
    (0.05, 0.15, 0, 0.1, "inconclusive"), (float("nan"), float("nan"), 1, 0.0, "inconclusive"),
])
def test_verdict_rule(lo, hi, direction, margin, expected):
    assert V.verdict(lo, hi, direction, margin) == expected


def probe_rows(after: float):
    for seed in SEEDS:
        for ckpt in CKPTS:
            yield row(seed, "cls", ckpt, "before", "probe", "acc", 0.9, "world_facts")
            yield row(seed, "cls", ckpt, "after", "probe", "acc", after + noise(seed), "world_facts")


@pytest.mark.parametrize("after, expected", [(0.5, "reproduced"), (0.95, "not reproduced"),
                                             (0.9, "inconclusive")])
def test_knowledge_forgotten_verdicts(after, expected):
    rows = table(probe_rows(after))
    if expected == "inconclusive":  # a spread that straddles zero: seeds -0.1, 0, +0.1
        rows.loc[rows["stage"] == "after", "value"] = 0.9 + 10 * rows["seed"].map(noise)
    out = run("iii_knowledge", rows)
    assert out["verdict"] == expected
    assert out["seeds"] == 3
    assert out["value"] == pytest.approx(0.9 - after if expected != "inconclusive" else 0.0, abs=1e-9)


def test_one_seed_is_inconclusive_and_says_why():
    rows = table(r for r in probe_rows(0.5) if r["seed"] == 0)
    out = run("iii_knowledge", rows)
    assert out["verdict"] == "inconclusive" and "one seed" in out["note"]
    assert out["value"] == pytest.approx(0.41)


def test_a_statistic_the_sweep_cannot_compute_is_inconclusive_with_its_reason():
    out = run("e_replay", table(probe_rows(0.5)))
    assert out["verdict"] == "inconclusive" and out["seeds"] == 0
    assert "replay rate" in out["note"]


def ladder_rows(flat_after_slope: float):
    """`cls` is flat before fine-tuning (0.33 at every checkpoint) and its after-score rises with
    log10(step) by `flat_after_slope` per decade; `cls2` is learned in pre-training (0.4 -> 0.8)
    and fine-tuning adds nothing."""
    for seed in SEEDS:
        for i, ckpt in enumerate(CKPTS):
            yield row(seed, "cls", ckpt, "before", "in_domain", "acc", 0.33)
            yield row(seed, "cls", ckpt, "after", "in_domain", "acc", 0.5 + flat_after_slope * i + noise(seed))
            yield row(seed, "cls2", ckpt, "before", "in_domain", "acc", 0.4 + 0.2 * i)
            yield row(seed, "cls2", ckpt, "after", "in_domain", "acc", 0.4 + 0.2 * i + noise(seed))


@pytest.mark.parametrize("slope, expected", [(0.1, "reproduced"), (-0.1, "not reproduced")])
def test_latent_gain_slope(slope, expected):
    out = run("a_latent_gain", table(ladder_rows(slope)))
    assert out["verdict"] == expected
    assert out["value"] == pytest.approx(slope)  # CKPTS are one decade apart


def test_flat_tasks_gain_more_than_learned_ones():
    out = run("a_group_gap", table(ladder_rows(0.1)))
    # cls gains 0.5 + 0.1 i - 0.33 (mean 0.27); cls2 gains 0 (mean over seeds of noise: 0)
    assert out["value"] == pytest.approx(0.27) and out["verdict"] == "reproduced"
    only_learned = table(r for r in ladder_rows(0.1) if r["task"] == "cls2")
    assert "every task is learned" in run("a_group_gap", only_learned)["note"]


def test_before_and_after_compare_equal_shots_only():
    rows = table(probe_rows(0.5))
    rows["shots"] = 4
    zero_shot = rows[rows["stage"] == "after"].assign(shots=0, value=0.0)  # a 0-shot protocol: not compared
    out = run("iii_knowledge", pd.concat([rows, zero_shot]))
    assert out["value"] == pytest.approx(0.4)


def cross_rows(cls_to_gen: float, gen_to_cls: float):
    for seed in SEEDS:
        for ckpt in CKPTS:
            yield row(seed, "cls", ckpt, "before", "cross_task", "rougeL", 0.2, "gen/test")
            yield row(seed, "cls", ckpt, "after", "cross_task", "rougeL", 0.2 * (1 + cls_to_gen + noise(seed)),
                      "gen/test")
            yield row(seed, "gen", ckpt, "before", "cross_task", "acc", 0.5, "cls/test")
            yield row(seed, "gen", ckpt, "after", "cross_task", "acc", 0.5 * (1 + gen_to_cls + noise(seed)),
                      "cls/test")
            yield row(seed, "gen", ckpt, "before", "cross_task", "acc", 0.0, "cls2/test")  # zero base: left out
            yield row(seed, "gen", ckpt, "after", "cross_task", "acc", 0.4, "cls2/test")
            yield row(seed, "cls", ckpt, "after", "cross_task", "rougeL", 0.0, "gen/test", prompt="io")


def test_mrc_directions():
    rows = table(cross_rows(-0.6, 0.003))
    assert run("b_cls_to_gen", rows)["value"] == pytest.approx(-0.6)
    assert run("b_cls_to_gen", rows)["verdict"] == "reproduced"
    assert run("b_gen_to_cls", rows)["verdict"] == "reproduced"  # within +-0.1
    hurt = table(cross_rows(-0.6, -0.3))
    assert run("b_gen_to_cls", hurt)["verdict"] == "not reproduced"
    assert run("b_gen_to_cls", hurt)["value"] == pytest.approx(-0.3)


def replay_rows(with_replay: float):
    for seed in SEEDS:
        for rate, forget in ((0.0, 0.7), (0.05, with_replay), (0.2, 0.01)):
            yield row(seed, "cls", 100, "after", "pretrain", "forget_kl", forget + noise(seed) * forget,
                      "heldout", replay_rate=rate)


@pytest.mark.parametrize("with_replay, expected", [(0.07, "reproduced"), (0.6, "not reproduced")])
def test_replay_reduction(with_replay, expected):
    out = run("e_replay", table(replay_rows(with_replay)))
    assert out["verdict"] == expected
    assert out["value"] == pytest.approx(1 - with_replay / 0.7, abs=1e-3)


def test_prompt_sensitivity_shrinks():
    rows = []
    for seed in SEEDS:
        for i, ckpt in enumerate(CKPTS):
            for prompt, offset in (("default", 0.0), ("io", 0.3 - 0.1 * i), ("instruct", 0.0)):
                rows.append(row(seed, "cls", ckpt, "after", "in_domain", "acc", 0.8 - offset + noise(seed) / 10,
                                prompt=prompt))
    out = run("iv_prompt_sensitivity", table(rows))
    assert out["value"] == pytest.approx(-0.1, abs=1e-3) and out["verdict"] == "reproduced"


def test_linear_law_r2():
    rows = []
    rng = np.random.default_rng(0)
    for seed in SEEDS:
        for step in range(10, 110, 10):
            loss = 3.0 - step / 50
            rows.append(row(seed, "cls", 100, f"step_{step}", "in_domain", "train_loss", loss))
            rows.append(row(seed, "cls", 100, f"step_{step}", "pretrain", "forget_ce",
                            -1.7 * loss + 2.0 + rng.normal(0, 0.01)))
    out = run("c_linear_law", table(rows))
    assert out["value"] > 0.99 and out["verdict"] == "reproduced"


def test_findings_table_has_one_line_per_finding_with_its_rule():
    out = F.findings(table(probe_rows(0.5)), KINDS)
    assert list(out["finding"]) == [f.key for f in F.FINDINGS]
    assert set(out["verdict"]) <= set(V.VERDICTS)
    assert out["rule"].str.contains("reproduced when").all()


def test_undefined_mrc_entries_are_left_out_and_counted():
    out = run("b_gen_to_cls", table(cross_rows(-0.6, 0.003)))
    assert "9 of 18 entries undefined" in out["note"]  # cls2/test's zero base at 3 checkpoints x 3 seeds


def test_joint_law_r2_on_planted_additive_forgetting():
    rows = []
    rng = np.random.default_rng(1)
    for seed in SEEDS:
        for rank, params in ((1, 1e4), (4, 4e4), (16, 1.6e5), (64, 6.4e5)):
            key = f"lora-{rank}-{seed}"
            rows.append({**row(seed, "cls", 100, "run", "run", "trainable_params", params), "run_key": key})
            for step in range(10, 260, 10):
                forget = float(fits.additive_law(params, step, -1.0, 2e3, 30.0, 0.4, 0.8, 0.5, 3.0))
                rows.append({**row(seed, "cls", 100, f"step_{step}", "pretrain", "forget_ce",
                                   forget + rng.normal(0, 1e-3)), "run_key": key, "lora_rank": rank})
    out = run("c_joint_law", table(rows))
    assert out["value"] > 0.99 and out["verdict"] == "reproduced"


def test_a_finding_on_prompted_sets_is_read_once_per_protocol():
    """4-shot rows (the source's protocol) where fine-tuning hurts, 0-shot rows where it helps:
    one line each, never pooled."""
    rows = table(probe_rows(0.5)).assign(shots=0)
    for shots, after in ((4, 0.3), (0, 0.9)):
        rows = pd.concat([rows, table(ladder_rows(0.1)).assign(shots=shots).assign(
            value=lambda d: d["value"].where((d["stage"] == "before") | (d["task"] != "cls"), after))])
    out = F.findings(rows, KINDS).set_index(["finding", "shots"])
    assert out.loc[("a_group_gap", 4), "value"] == pytest.approx(0.3 - 0.33)
    assert out.loc[("a_group_gap", 0), "value"] == pytest.approx(0.9 - 0.33)
    assert out.loc[("a_group_gap", 0), "verdict"] == "reproduced"
    assert out.loc[("a_group_gap", 4), "verdict"] == "not reproduced"
    knowledge = out.xs("iii_knowledge", level="finding")  # the probe has one protocol: one line
    assert len(knowledge) == 1 and knowledge["value"].item() == pytest.approx(0.4)


def lp_rows(ft_diff: float, lpft_diff: float, ft_norm: float, lpft_norm: float):
    for seed in SEEDS:
        for method, diff, norm in (("ft", ft_diff, ft_norm), ("lpft", lpft_diff, lpft_norm)):
            yield row(seed, "cls", 100, "after", "features", "feature_diff", diff + noise(seed), "features",
                      method=method)
            yield row(seed, "cls", 100, "run", "run", "classifier_norm_probe", 99.0, None, method=method)
            yield row(seed, "cls", 100, "run", "run", "classifier_norm_ft", norm + noise(seed), None, method=method)


def test_lpft_changes_features_less_and_grows_the_head_more():
    out = F.findings(table(lp_rows(20.0, 10.0, 0.5, 7.0)), KINDS).set_index("finding")
    assert out.loc["d_feature_change", "value"] == pytest.approx(10.0)
    assert out.loc["d_head_norm", "value"] == pytest.approx(6.5)  # the probe stage's norm is not the end
    assert (out.loc[["d_feature_change", "d_head_norm"], "verdict"] == "reproduced").all()
    reverse = F.findings(table(lp_rows(10.0, 20.0, 7.0, 0.5)), KINDS).set_index("finding")
    assert (reverse.loc[["d_feature_change", "d_head_norm"], "verdict"] == "not reproduced").all()


def test_toy_replay_reduction_keeps_each_width_its_own_cell():
    rows = []
    for seed in SEEDS:
        for width, drift0, kept in ((16, -0.2, (10, 20)), (256, -0.1, (2, 4))):
            for rate, drift in ((0.0, drift0), (0.05, drift0 / kept[0]), (0.1, drift0 / kept[1])):
                key = f"toy-{seed}-{width}-{rate}"
                rows.append({**row(seed, "two_gaussians", 0, "after", "pretrain", "drift", drift * (1 + noise(seed)),
                                   "x2", replay_rate=rate), "run_key": key})
                rows.append({**row(seed, "two_gaussians", 0, "run", None, "width", width, "run"), "run_key": key})
    out = run("e_replay_toy", table(rows))
    # per width (0.9 + 0.95) / 2 and (0.5 + 0.75) / 2, then their mean; pooling the widths' drifts would give 0.825
    assert out["value"] == pytest.approx((0.925 + 0.625) / 2)
    assert out["verdict"] == "reproduced"


def test_the_mrc_asymmetry_is_the_difference_of_the_two_directions():
    out = run("b_asymmetry", table(cross_rows(-0.6, 0.003)))
    assert out["value"] == pytest.approx(-0.603) and out["verdict"] == "reproduced"
    assert run("b_asymmetry", table(cross_rows(0.2, -0.3)))["verdict"] == "not reproduced"
