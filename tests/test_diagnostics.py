"""LP-FT diagnostics (eval.diagnostics): feature change, Fisher ratio, the NTK split and its FT ratio,
the classifier norm along training; what they measure on constructed inputs and on real micro runs."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO

from ftdyn import config as C
from ftdyn.analysis import features as feat
from ftdyn.config.choices import HEAD_METHODS
from ftdyn.config.compose import compose_config
from ftdyn.train import train

FAST = MICRO + ["task.train_size=96", "method.batch_size=8", "eval.probe=false", "eval.pretrain_loss=false",
                "eval.diagnostics=[head_norm,features,ntk]", "eval.every_n_steps=6", "eval.ntk_size=8"]


def test_feature_change_is_zero_for_equal_features_and_grows_with_the_change():
    before = torch.randn(10, 4, dtype=torch.float64)
    assert feat.feature_change(before, before.clone()) == {"feature_cos": pytest.approx(1.0), "feature_diff": 0.0}
    moved = feat.feature_change(before, before + torch.tensor([3.0, 0, 0, 0], dtype=torch.float64))
    assert moved["feature_diff"] == pytest.approx(3.0)
    assert moved["feature_cos"] < 1


def test_fisher_ratio_is_between_over_within_scatter():
    # two classes on a line: centres -1 and 1 (overall mean 0), points at centre +- 0.5
    x = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert feat.fisher_ratio(x, labels) == pytest.approx((2 * 1 + 2 * 1) / (4 * 0.25))


def test_ft_share_lies_in_0_1_even_where_the_per_point_ratio_does_not():
    """F = u u^T and a small P = eps v v^T with u.v < 0: P's push on f(x) partly cancels F's, so
    Tomihari & Sato's per-point norm ratio exceeds 1, while the share of the loss decrease cannot."""
    u, v = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 1.0], dtype=torch.float64)
    ft, pre, delta = torch.outer(u, u), 0.1 * torch.outer(v, v), torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert feat.ft_ratio(pre, ft, delta, classes=2) > 1
    assert 0 <= feat.ft_share(pre, ft, delta) <= 1
    for seed in range(20):  # random Gram matrices and residuals
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
        share = feat.ft_share(a @ a.T, b @ b.T, torch.randn(6, generator=g, dtype=torch.float64))
        assert 0 <= share <= 1


def test_kernel_summary_reports_norm_rank_and_spectrum():
    kernel = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    summary = feat.kernel_summary("k", kernel)
    assert summary == {"k_fro": pytest.approx(17 ** 0.5), "k_rank": 2, "k_sv_0": 4.0, "k_sv_1": 1.0, "k_sv_2": 0.0}


@pytest.fixture(scope="module")
def head_runs(micro_ladder, tmp_path_factory) -> dict[str, dict[str, float]]:
    """One micro run of every head method of the method table, with every diagnostic on."""
    out = tmp_path_factory.mktemp("diagnostics")
    return {str(m): train(compose_config(FAST + [f"method={m}"]), out / str(m)) for m in HEAD_METHODS}


def test_feature_change_is_zero_for_lp_and_positive_for_the_other_head_methods(head_runs):
    for method, metrics in head_runs.items():
        if method == "lp":  # the backbone is frozen: its features do not move at all
            assert metrics["after/features/feature_diff"] == 0.0
            assert metrics["after/features/feature_cos"] == pytest.approx(1.0, abs=1e-12)
        else:
            assert metrics["after/features/feature_diff"] > 0, method
            assert metrics["after/features/feature_cos"] < 1, method
        assert metrics["after/features/fisher_ratio"] > 0 and metrics["before/features/fisher_ratio"] > 0


def test_ft_ratio_lies_in_0_1_and_is_0_where_the_backbone_never_trains(head_runs):
    for method, metrics in head_runs.items():
        for name in ("ft_ratio", "ft_share"):
            assert 0 <= metrics[f"before/ntk/{name}"] <= 1, (method, name)
        assert metrics["before/ntk/ntk_pre_rank"] > 0
        trains_backbone = any(trains != "head" for _, trains in C.METHOD_TABLE[C.Method(method)].phases)
        if trains_backbone:
            assert 0 < metrics["before/ntk/ft_ratio"] and metrics["before/ntk/ntk_ft_fro"] > 0, method
        else:
            assert metrics["before/ntk/ft_ratio"] == 0 and metrics["before/ntk/ntk_ft_fro"] == 0, method


def test_classifier_norm_is_recorded_along_training_and_ends_at_the_run_fact(head_runs):
    for method, metrics in head_runs.items():
        stages = C.METHOD_TABLE[C.Method(method)].phases
        if all(trains == "head" for _, trains in stages):
            continue  # a probe alone may be fitted outside the training loop, with no in-loop steps
        steps = sorted((int(k.split("/")[0].removeprefix("step_")), v) for k, v in metrics.items()
                       if k.endswith("/head/classifier_norm"))
        assert len(steps) >= 2, method
        last_stage = stages[-1][0]
        assert steps[-1][1] == pytest.approx(metrics[f"run/run/classifier_norm_{last_stage}"])


def test_diagnostics_cost_nothing_when_off(micro_ladder, tmp_path):
    metrics = train(compose_config(MICRO + ["task.train_size=48", "method=lpft", "eval.every_n_steps=3",
                                            "eval.probe=false", "eval.pretrain_loss=false"]), tmp_path)
    assert not [k for k in metrics if "/features/" in k or "/ntk/" in k or "/head/" in k or "@alpha" in k]


def test_head_norm_needs_in_loop_steps():
    with pytest.raises(C.ConfigError, match="eval.every_n_steps"):
        C.to_typed(compose_config(MICRO + ["method=lp", "eval.diagnostics=[head_norm]"]))
