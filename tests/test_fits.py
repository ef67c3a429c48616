"""The report's statistics recover what was planted: a line, a shifted power law, a bootstrap mean."""

from __future__ import annotations

import numpy as np
import pytest

from ftdyn.report import fits


def test_linear_law_recovers_a_planted_line_exactly():
    loss_ft = np.array([2.5, 2.1, 1.7, 1.4, 1.2, 1.05])
    forget = -1.7334 * loss_ft + 2.0481  # Kalajdzievski's OpenOrca coefficients
    fit = fits.linear_law(loss_ft, forget)
    assert fit["c"] == pytest.approx(1.7334, abs=1e-12)
    assert fit["s"] == pytest.approx(2.0481, abs=1e-12)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["n"] == 6


def test_linear_law_needs_two_distinct_losses():
    with pytest.raises(ValueError, match="at least 2 distinct fine-tuning losses"):
        fits.linear_law([1.0, 1.0], [0.5, 0.6])


@pytest.mark.parametrize("planted", [
    {"s": 0.6, "a": 40.0, "b": 12.0, "alpha": -0.25, "beta": -0.6},   # a fine-tuning loss: falls with P and N
    {"s": 1.2, "a": 0.002, "b": 5.0, "alpha": 0.35, "beta": 0.8},     # forgetting: grows with both
    {"s": 2.0, "a": -9.0, "b": 20.0, "alpha": -0.15, "beta": -0.4},   # forgetting that saturates at s
])
def test_power_law_recovers_planted_parameters_within_one_percent(planted):
    P, N = np.meshgrid([2_048, 4_096, 8_192, 16_384, 32_768], np.arange(10, 260, 10))
    L = fits.power_law(P.ravel(), N.ravel(), **planted)
    fit = fits.fit_power_law(P.ravel(), N.ravel(), L)
    for name, value in planted.items():
        assert fit[name] == pytest.approx(value, rel=0.01), name
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9)


def test_power_law_with_one_rank_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r">= 2 distinct P"):
        fits.fit_power_law([8192] * 5, [1, 2, 3, 4, 5], [3.0, 2.5, 2.2, 2.0, 1.9])


def test_bootstrap_interval_contains_the_mean_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(7)
    small, large = rng.random(40) < 0.7, rng.random(4000) < 0.7
    lo, hi = fits.bootstrap_ci(small, seed=3)
    assert lo < small.mean() < hi
    lo_large, hi_large = fits.bootstrap_ci(large, seed=3)
    assert lo_large < large.mean() < hi_large
    assert (hi_large - lo_large) < (hi - lo) / 5  # width ~ 1/sqrt(n): 100x the examples, ~1/10 the width
    assert fits.bootstrap_ci(small, seed=3) == (lo, hi)
    assert fits.bootstrap_ci(large, seed=4) != (lo_large, hi_large)  # a 40-example interval lands on the
    # same few attainable means whatever the seed, so the seed is seen on the large vector


def test_bootstrap_of_a_constant_vector_is_the_constant():
    assert fits.bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    assert all(np.isnan(fits.bootstrap_ci([])))


# -- Kalajdzievski's additive joint law ------------------------------------------------------------

LLAMA2_7B_P_PER_RANK = 2_498_560  # 32 layers x (4 x (4096 + 4096) + 3 x (4096 + 11008)): every projection


def _paper_grid():
    """Ranks 8..256 of Llama 2 7B and steps 50..260 every 10: the paper's fitted range."""
    P, N = np.meshgrid(np.array([8, 16, 32, 64, 128, 256]) * LLAMA2_7B_P_PER_RANK, np.arange(50, 261, 10))
    return P.ravel(), N.ravel()


def _tiny_grid():
    """Ranks 1..64 of the tiny ladder (P ~10k..655k) and steps 50..250 every 10."""
    P, N = np.meshgrid([10_240, 20_480, 40_960, 81_920, 163_840, 327_680, 655_360], np.arange(50, 251, 10))
    return P.ravel(), N.ravel()


# The paper's Table 1, OpenOrca: L_ft, and L_f as that form with c = -c_{f,ft} c_ft, s = s_{f,ft} - c_{f,ft} s_ft
OPENORCA_FT = {"c": 0.0020, "a": 0.0007e7, "b": 72.9186, "alpha": 0.0424, "beta": 0.1219, "rho": 7.6885,
               "s": 0.6126}
OPENORCA_F = {"c": -1.7334 * 0.0020, "a": 0.0388e7, "b": 23.6418, "alpha": 0.0351, "beta": 0.1468,
              "rho": 7.6885, "s": 2.0481 - 1.7334 * 0.6126}


def test_the_papers_openorca_parameters_give_the_papers_loss_range():
    """The form is the one Table 1's parameters belong to: L_ft 0.65-0.77 over ranks 8-256, steps
    50-260, falling with both; forgetting rising with both."""
    P, N = _paper_grid()
    L_ft, L_f = fits.additive_law(P, N, **OPENORCA_FT), fits.additive_law(P, N, **OPENORCA_F)
    assert 0.64 < L_ft.min() < L_ft.max() < 0.78
    rank8 = P == P.min()
    assert np.all(np.diff(L_ft[rank8]) < 0) and np.all(np.diff(L_f[rank8]) > 0)


@pytest.mark.parametrize(("planted", "grid"), [
    (OPENORCA_FT, _paper_grid),
    (OPENORCA_F, _paper_grid),
    ({"c": 1.0, "a": 2000.0, "b": 5.0, "alpha": 0.3, "beta": 0.5, "rho": 1.5, "s": 0.4}, _tiny_grid),
    ({"c": -0.5, "a": 1000.0, "b": 20.0, "alpha": 0.3, "beta": 0.5, "rho": 1.0, "s": 2.0}, _tiny_grid),
])
def test_additive_law_recovers_planted_parameters(planted, grid):
    P, N = grid()
    L = fits.additive_law(P, N, **planted)
    fit = fits.fit_additive_law(P, N, L)
    assert fit["r2"] > 0.99 and fit["r2"] == pytest.approx(1.0, abs=1e-9)
    assert fit["c"] == np.sign(planted["c"])  # reported with |c| = 1
    same_scale = fits.rescale_additive(fit, planted["c"])  # a, b, c are identified only together
    for name, value in planted.items():
        assert same_scale[name] == pytest.approx(value, rel=1e-3), name
    assert fits.additive_law(P, N, **{k: fit[k] for k in fits.ADDITIVE_PARAMS}) == pytest.approx(L, rel=1e-9)


def test_additive_law_on_noisy_points_keeps_r2_above_099_and_parameters_close():
    planted = {"c": 1.0, "a": 2000.0, "b": 5.0, "alpha": 0.3, "beta": 0.5, "rho": 1.5, "s": 0.4}
    P, N = _tiny_grid()
    L = fits.additive_law(P, N, **planted)
    noisy = L * (1 + 0.003 * np.random.default_rng(0).standard_normal(L.size))  # 0.3% noise
    fit = fits.fit_additive_law(P, N, noisy)
    assert fit["r2"] > 0.99
    for name in ("alpha", "beta", "rho", "s"):
        assert fit[name] == pytest.approx(planted[name], rel=0.05), name


def test_rescaling_an_additive_law_leaves_its_values_unchanged():
    P, N = _paper_grid()
    moved = fits.rescale_additive(OPENORCA_FT, 1.0)
    assert moved["c"] == 1.0 and moved["a"] != OPENORCA_FT["a"]
    assert fits.additive_law(P, N, **moved) == pytest.approx(fits.additive_law(P, N, **OPENORCA_FT), rel=1e-12)
    with pytest.raises(ValueError, match="sign"):
        fits.rescale_additive(OPENORCA_FT, -1.0)


def test_additive_law_with_one_rank_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r">= 2 distinct P"):
        fits.fit_additive_law([8192] * 5, [10, 20, 30, 40, 50], [3.0, 2.5, 2.2, 2.0, 1.9])


@pytest.mark.parametrize(("run_steps", "skip_steps", "skipped"), [
    (260, None, 50),  # the paper's run
    (250, None, 48),  # the forgetting_laws study: points from step 50 on are fitted
    (1000, None, 192),
    (250, 0, 0),  # --skip-steps 0 keeps every step
    (250, 20, 20),
])
def test_fits_skip_the_papers_share_of_each_run_unless_told(run_steps, skip_steps, skipped):
    assert fits.skipped_steps(run_steps, skip_steps) == skipped


def test_a_negative_skip_is_refused():
    with pytest.raises(ValueError, match="skip_steps=-1"):
        fits.skipped_steps(250, -1)
