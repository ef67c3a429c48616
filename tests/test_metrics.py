"""Each metric pinned to a value computed by hand on a small constructed case."""

from __future__ import annotations

import math

import pytest
import torch
from rouge_score import rouge_scorer
from torchmetrics.functional.classification import multiclass_calibration_error

from ftdyn.eval.metrics import (
    agreement,
    bin_edges,
    calibration,
    ece_mce,
    fit_temperature,
    forgetting,
    reliability_bins,
)
from ftdyn.eval.scoring import rouge_l


def probabilities_with(confidence, correct, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose max-softmax confidence is exactly `confidence` (float32), on class 0; the label
    is 0 where `correct`, else 1."""
    top = torch.tensor(confidence, dtype=torch.float32)
    rest = ((1 - top) / (classes - 1)).unsqueeze(-1).expand(-1, classes - 1)
    assert (top >= rest[:, 0]).all()
    return torch.cat([top.unsqueeze(-1), rest], -1), 1 - torch.tensor(correct).long()


def test_ece_and_mce_by_hand():
    # bins of width 1/15: 0.95 and 0.99 share the last bin, 0.55 and 0.58 the 9th, 0.3 the 5th.
    probabilities, labels = probabilities_with([0.95, 0.99, 0.55, 0.58, 0.3], [1, 0, 1, 1, 0])
    # last bin: acc 0.5, conf 0.97 -> gap 0.47; 9th: acc 1, conf 0.565 -> 0.435; 5th: acc 0, conf 0.3 -> 0.3
    ece, mce = ece_mce(probabilities, labels)
    assert ece == pytest.approx(2 / 5 * 0.47 + 2 / 5 * 0.435 + 1 / 5 * 0.3, abs=1e-6)
    assert mce == pytest.approx(0.47, abs=1e-6)


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin_as_the_definition_says():
    """Tomihari & Sato's definition bins lower < c <= upper. The edge is torchmetrics' float32 edge 9/15."""
    edge = float(bin_edges()[9])
    above = float(torch.nextafter(torch.tensor(edge), torch.tensor(1.0)))
    probabilities, labels = probabilities_with([edge, above], [1, 0])
    ece, mce = ece_mce(probabilities, labels)
    # the edge alone in bin 8 (gap 1 - edge), the one above alone in bin 9 (gap above)
    assert ece == pytest.approx((1 - edge) / 2 + above / 2, abs=1e-6)
    assert mce == pytest.approx(above, abs=1e-6)


def test_a_confidence_of_one_shares_the_last_bin():
    # 1.0 (wrong) and 0.95 (right) are both in (14/15, 1]: one bin, acc 0.5, conf 0.975
    probabilities, labels = probabilities_with([1.0, 0.95], [0, 1])
    assert ece_mce(probabilities, labels) == pytest.approx((0.475, 0.475), abs=1e-6)


def test_torchmetrics_alone_bins_the_other_way_at_edges():
    """Why ece_mce moves confidences one float32 step down: torchmetrics bins lower <= c < upper and
    counts c == 1 in a bin of its own (torchmetrics#3510). If this fails, torchmetrics changed its
    binning: check ece_mce's tests, and drop the step if they pass without it."""
    probabilities, labels = probabilities_with([1.0, 0.95], [0, 1])
    raw = [float(multiclass_calibration_error(probabilities, labels, num_classes=4, norm=n)) for n in ("l1", "max")]
    assert raw == pytest.approx([1 / 2 * 1.0 + 1 / 2 * 0.05, 1.0], abs=1e-6)


def test_reliability_bins_give_the_same_ece_and_mce():
    """The report draws `reliability_bins`; the ECE/MCE rows come from torchmetrics: one binning."""
    torch.manual_seed(0)
    probabilities = torch.softmax(torch.randn(500, 3) * 4, -1)
    probabilities[:20] = torch.tensor([1.0, 0.0, 0.0])  # saturated
    probabilities[20:40] = torch.tensor([float(bin_edges()[10]), 0.2, 1 - float(bin_edges()[10]) - 0.2])  # on an edge
    labels = torch.randint(0, 3, (500,))
    confidence, predicted = probabilities.max(-1)
    bins = reliability_bins(confidence, predicted == labels)
    assert sum(count for _, count, _, _ in bins) == 500
    gaps = [abs(accuracy - mean_confidence) for _, _, mean_confidence, accuracy in bins]
    ece = sum(count / 500 * gap for (_, count, _, _), gap in zip(bins, gaps))
    assert ece_mce(probabilities, labels) == pytest.approx((ece, max(gaps)), abs=1e-6)
    assert [b for b, *_ in bins if b >= 14] == [14]  # no bin past the last one


def test_perfectly_calibrated_predictions_have_zero_error():
    probabilities, labels = probabilities_with([0.7] * 10, [1] * 7 + [0] * 3)
    assert ece_mce(probabilities, labels) == pytest.approx((0.0, 0.0), abs=1e-6)


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


ROUGE_CASES = [
    # (prediction as generated, reference, Rouge-L F by hand without stemming)
    ("the cat sat", "the cat sat down", 6 / 7),  # LCS 3: P 3/3, R 3/4
    # unstemmed, LCS the, was: P 2/4, R 2/4, F 0.5; stemming would match cats/cat and running/run too: F 1
    ("The cats was running.", "the cat was run", 0.5),
    # the whole continuation, second line included: LCS 3, P 3/6, R 3/3, F 2/3 (cut at the newline it would be 1)
    ("the cat sat\nthe dog ran", "the cat sat", 2 / 3),
]


def test_rouge_l_is_rouge_score_without_stemming_on_the_text_as_generated():
    unstemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    got = rouge_l([p for p, _, _ in ROUGE_CASES], [r for _, r, _ in ROUGE_CASES])
    for value, (prediction, reference, by_hand) in zip(got, ROUGE_CASES):
        assert value == pytest.approx(by_hand)
        assert value == unstemmed.score(reference, prediction)["rougeL"].fmeasure
    assert stemmed.score(ROUGE_CASES[1][1], ROUGE_CASES[1][0])["rougeL"].fmeasure == pytest.approx(1.0)


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
