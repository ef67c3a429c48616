"""Each metric pinned to a value computed by hand on a small constructed case."""

from __future__ import annotations

import math

import pytest
import torch

from ftdyn.evaluate import rouge_l
from ftdyn.metrics import agreement, calibration, ece_mce, fit_temperature, forgetting


def test_ece_and_mce_by_hand():
    # bins of width 1/15: 0.95 and 0.99 share the last bin, 0.55 and 0.6 the 9th, 0.3 the 5th.
    confidence = torch.tensor([0.95, 0.99, 0.55, 0.6, 0.3])
    correct = torch.tensor([1, 0, 1, 1, 0])
    # last bin: acc 0.5, conf 0.97 -> gap 0.47; 9th: acc 1, conf 0.575 -> 0.425; 5th: acc 0, conf 0.3 -> 0.3
    ece, mce = ece_mce(confidence, correct)
    assert ece == pytest.approx(2 / 5 * 0.47 + 2 / 5 * 0.425 + 1 / 5 * 0.3)
    assert mce == pytest.approx(0.47)


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin():
    ece, _ = ece_mce(torch.tensor([1 / 15, 1 / 15 + 1e-6]), torch.tensor([1, 1]))
    assert ece == pytest.approx(1 - (1 / 15 + 1 / 15 + 1e-6) / 2)


def test_perfectly_calibrated_predictions_have_zero_error():
    confidence = torch.full((10,), 0.7, dtype=torch.float64)
    correct = torch.tensor([1] * 7 + [0] * 3)
    assert ece_mce(confidence, correct) == pytest.approx((0.0, 0.0))


def test_temperature_scaling_recovers_a_planted_temperature():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 3) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 3.0, labels)  # overconfident by a factor of 3
    assert t == pytest.approx(3.0, rel=0.1)
    assert calibration(true_logits * 3.0, labels, t)["ece"] < calibration(true_logits * 3.0, labels)["ece"]


def test_forgetting_is_zero_for_an_unchanged_model_and_the_cross_entropy_otherwise():
    base = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]])
    mask = torch.tensor([[True, True]])
    ce, kl = forgetting(base, base, mask)
    assert kl == 0.0
    p = torch.softmax(base, -1)
    assert ce == pytest.approx(float(-(p * p.log()).sum()))  # = the base entropy
    tuned = torch.tensor([[[0.0, 2.0, -1.0], [0.5, 0.5, 0.5]]])
    ce, kl = forgetting(base, tuned, mask)
    p0, q0 = torch.softmax(base[0, 0], -1), torch.softmax(tuned[0, 0], -1)
    assert kl == pytest.approx(float((p0 * (p0.log() - q0.log())).sum()))
    assert kl > 0 and ce == pytest.approx(kl + float(-(p * p.log()).sum()))


def test_agreement():
    assert agreement(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75


def test_rouge_l_by_hand():
    # LCS of "the cat sat" and "the cat sat down": 3 tokens; P = 3/3, R = 3/4, F = 2PR/(P+R) = 6/7
    assert rouge_l(["the cat sat"], ["the cat sat down"]) == [pytest.approx(6 / 7)]
    assert rouge_l(["dog"], ["the cat"]) == [0.0]
    assert math.isclose(rouge_l(["a b"], ["a b"])[0], 1.0)


def test_temperature_of_an_uninformative_model_stays_finite_and_bounded():
    logits = torch.randn(200, 3)
    labels = torch.randint(0, 3, (200,))  # independent of the logits
    t = fit_temperature(logits, labels)
    assert math.isfinite(t) and t <= math.exp(7.0) + 1e-6


def test_absent_choices_padded_with_minus_infinity_change_nothing():
    torch.manual_seed(1)
    logits = torch.randn(600, 6) * 3
    labels = torch.distributions.Categorical(logits=logits / 3).sample()
    padded = torch.cat([logits, torch.full((600, 4), float("-inf"))], dim=1)
    t = fit_temperature(padded, labels)
    assert math.isfinite(t) and t == pytest.approx(fit_temperature(logits, labels), rel=1e-6)
    assert calibration(padded, labels, t) == pytest.approx(calibration(logits, labels, t))
