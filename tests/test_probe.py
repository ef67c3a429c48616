"""The probe stage: a converged L2 logistic regression, checked against scikit-learn's own fit
(a test dependency: `pip install -e .[dev]`), and what a probe stage records in a real fit."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.linear_model as sklearn
import torch

from ftdyn.methods.linear_probe import fit_logistic, objective

DEFAULTS = {"tol": 1e-4, "max_iter": 5000}  # the schema's method.probe_tol, method.probe_max_iter


def _blobs(spread: float, noise: float, n: int = 300, d: int = 16, k: int = 3, seed: int = 0):
    """k Gaussian blobs: far apart (spread >> noise) they are linearly separable, close they overlap."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(0, spread, (k, d))[y] + rng.normal(0, noise, (n, d))
    return x, y


def _sklearn_objective(x, y, c: float) -> float:
    """scikit-learn's minimum (tight tolerance), on ftdyn's scale: the objective / (C * n)."""
    clf = sklearn.LogisticRegression(C=c, tol=1e-10, max_iter=100_000).fit(x, y)
    return float(objective(torch.tensor(x), torch.tensor(y), torch.tensor(clf.coef_), torch.tensor(clf.intercept_), c))


@pytest.mark.parametrize("c", [0.1, 1.0, 100.0])
def test_on_separable_features_the_probe_reaches_scikit_learns_loss(c):
    x, y = _blobs(spread=3.0, noise=0.5)
    assert sklearn.LogisticRegression(C=1e6, max_iter=10_000).fit(x, y).score(x, y) == 1.0  # separable
    fit = fit_logistic(torch.tensor(x), torch.tensor(y), 3, c, **DEFAULTS)
    assert fit.converged and fit.iterations < DEFAULTS["max_iter"] and fit.train_acc == 1.0
    assert abs(fit.loss - _sklearn_objective(x, y, c)) < 1e-3
    # on scikit-learn's own scale, C * sum of cross-entropies + 0.5 ||W||^2, once the tolerance is tight
    tight = fit_logistic(torch.tensor(x), torch.tensor(y), 3, c, tol=1e-9, max_iter=5000)
    assert abs(tight.loss - _sklearn_objective(x, y, c)) * c * len(y) < 1e-3


def test_on_overlapping_features_the_probe_reaches_scikit_learns_loss_and_accuracy():
    x, y = _blobs(spread=0.3, noise=1.0)
    clf = sklearn.LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(x, y)
    fit = fit_logistic(torch.tensor(x), torch.tensor(y), 3, 1.0, **DEFAULTS)
    assert 0.5 < fit.train_acc < 1.0  # not separable, but learnable
    assert fit.converged and abs(fit.loss - _sklearn_objective(x, y, 1.0)) < 1e-4
    assert fit.train_acc == pytest.approx(clf.score(x, y))


def test_two_labels_are_the_softmax_form_whose_logit_difference_is_binary_sklearn_at_twice_c():
    x, y = _blobs(spread=0.5, noise=1.0, k=2)
    fit = fit_logistic(torch.tensor(x), torch.tensor(y), 2, 0.5, tol=1e-9, max_iter=5000)
    binary = sklearn.LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose((fit.weight[1] - fit.weight[0]).numpy(), binary.coef_[0], atol=1e-5)
    assert float(fit.bias[1] - fit.bias[0]) == pytest.approx(binary.intercept_[0], abs=1e-5)


def test_a_probe_stopped_by_max_iter_says_it_did_not_converge():
    x, y = _blobs(spread=3.0, noise=0.5)
    fit = fit_logistic(torch.tensor(x), torch.tensor(y), 3, 1.0, tol=1e-4, max_iter=2)
    assert fit.iterations == 2 and not fit.converged
    assert fit.facts()["probe_converged"] == 0.0 and fit.facts()["probe_iterations"] == 2
