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
