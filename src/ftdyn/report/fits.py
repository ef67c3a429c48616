"""The statistics behind the report: bootstrap intervals, the linear forgetting law, a shifted power law.

Bootstrap (Amuro & Char, seed-methods.md §1.5): `scipy.stats.bootstrap`, percentile method, 95%,
3,000 resamples of the per-example scores, seeded. They report the interval's midpoint as the
performance; the report keeps the plain mean beside the interval (the midpoint is (lo + hi) / 2).

Linear law (Kalajdzievski Eq. 4, §2.3): `forget = -c * L_ft + s`, least squares, with R².

Shifted power law. Kalajdzievski's joint laws L_ft(P, N) and L_f(P, N) (Eq. 5-6) are "shifted
power laws" in trainable parameters P and steps N, but their exact form was not available, so
ftdyn fits its own:

    L(P, N) = s + a * P**alpha * (N + b)**beta

- s is the shift in L: the level the loss approaches as the power term vanishes,
- b >= 0 shifts the step count, so the loss at N = 0 is finite,
- alpha, beta are signed exponents, a a signed scale:
  - a > 0, 0 <= s < min L: the loss falls towards a floor s (a fine-tuning loss: alpha, beta < 0),
    or grows without bound (alpha, beta > 0);
  - a < 0, s > max L: the loss rises towards a ceiling s (forgetting that saturates as the
    fine-tuned model drifts: alpha, beta < 0).

Both branches are fitted with `scipy.optimize.curve_fit` on log L, so every point weighs by its
relative error whatever the loss's scale, within bounds (|exponents| <= 5, |log a| <= 50), and the
better fit is kept. Starting points come from a small grid over (s, b); for each, log |a|, alpha,
beta start at the linear least-squares solution of log|L - s| = log|a| + alpha log P + beta
log(N + b). R² is reported on L itself.
"""

from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
from scipy import optimize, stats

log = logging.getLogger(__name__)

RESAMPLES = 3000
CONFIDENCE = 0.95
POWER_LAW_PARAMS = ("s", "a", "b", "alpha", "beta")
MAX_EVALS = 500  #: per starting point; a start that needs more is a poor one, another start wins


def bootstrap_ci(scores, seed: int = 0, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `scores`; a constant vector's interval is
    the constant itself (every resample has the same mean), an empty one's is (nan, nan)."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    result = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def r_squared(y, predicted) -> float:
    """1 - SS_res / SS_tot (1 for a perfect fit; nan when y is constant)."""
    y, predicted = np.asarray(y, float), np.asarray(predicted, float)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - predicted) ** 2).sum()) / total if total > 0 else float("nan")


def linear_law(loss_ft, forget) -> dict[str, float]:
    """Kalajdzievski's `forget = -c * L_ft + s`: c, s and R² of the least-squares line."""
    x, y = np.asarray(loss_ft, float), np.asarray(forget, float)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"a line needs at least 2 distinct fine-tuning losses, got {x.tolist()}")
    fit = stats.linregress(x, y)
    return {"c": -float(fit.slope), "s": float(fit.intercept), "r2": float(fit.rvalue) ** 2, "n": int(x.size)}


def power_law(P, N, s, a, b, alpha, beta):
    """L(P, N) = s + a * P**alpha * (N + b)**beta (the module docstring says why this form)."""
    return s + a * np.asarray(P, float) ** alpha * (np.asarray(N, float) + b) ** beta


def _log_model(sign: float):
    """log L(P, N) for a scale of sign `sign` (the power term added to or taken from s)."""
    def model(PN, s, log_a, b, alpha, beta):
        P, N = PN
        value = s + sign * np.exp(log_a + alpha * np.log(P) + beta * np.log(N + b))
        return np.log(np.maximum(value, 1e-300))
    def jacobian(PN, s, log_a, b, alpha, beta):
        P, N = PN
        power = sign * np.exp(log_a + alpha * np.log(P) + beta * np.log(N + b))
        value = np.maximum(s + power, 1e-300)
        return np.column_stack([np.ones_like(power), power, power * beta / (N + b), power * np.log(P),
                                power * np.log(N + b)]) / value[:, None]

    model.jacobian = jacobian
    return model


def _start(P, N, L, s0: float, b0: float, sign: float) -> list[float]:
    """(s, log |a|, b, alpha, beta) with the power part solved by linear least squares in logs."""
    design = np.column_stack([np.ones_like(P), np.log(P), np.log(N + b0)])
    coef, *_ = np.linalg.lstsq(design, np.log(sign * (L - s0)), rcond=None)
    return [s0, coef[0], b0, coef[1], coef[2]]


def _fit_branch(P, N, L, sign: float) -> tuple[np.ndarray | None, float]:
    """Best (s, log |a|, b, alpha, beta) and its squared log error for one sign of the scale."""
    lo, hi = float(L.min()), float(L.max())
    b_low = 1e-6 if N.min() == 0 else 0.0
    s_bounds = (0.0, lo * (1 - 1e-6)) if sign > 0 else (hi * (1 + 1e-6), 100 * hi + 1)
    s_starts = (0.0, 0.5 * lo, 0.9 * lo) if sign > 0 else (1.05 * hi, 1.5 * hi, 3 * hi)
    bounds = ([s_bounds[0], -50.0, b_low, -5.0, -5.0], [s_bounds[1], 50.0, 10 * float(N.max()) + 10, 5.0, 5.0])
    model, best, best_sse = _log_model(sign), None, np.inf
    for s0, b0 in itertools.product(s_starts, (b_low, 1.0, 0.1 * float(N.max()))):
        p0 = np.clip(_start(P, N, L, s0, max(b0, b_low), sign), bounds[0], bounds[1])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = optimize.curve_fit(model, (P, N), np.log(L), p0=p0, bounds=bounds, jac=model.jacobian,
                                               ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=MAX_EVALS)
        except (RuntimeError, ValueError) as err:
            log.debug("power-law start %s failed: %s", p0, err)
            continue
        sse = float(((model((P, N), *params) - np.log(L)) ** 2).sum())
        if sse < best_sse:
            best, best_sse = params, sse
        if best_sse < 1e-20 * len(L):  # exact (noise-free) data: no better start to find
            break
    return best, best_sse


def fit_power_law(P, N, L) -> dict[str, float]:
    """Fit `power_law` to losses L measured at trainable parameters P and steps N.

    Needs at least two distinct P and three distinct N (else a, alpha or the shifts are not
    identified) and positive P and L. Returns s, a, b, alpha, beta, r2 and n.
    """
    P, N, L = (np.asarray(v, float) for v in (P, N, L))
    if len(np.unique(P)) < 2 or len(np.unique(N)) < 3:
        raise ValueError(f"a power law in P and N needs >= 2 distinct P and >= 3 distinct N, got "
                         f"P={sorted(set(P.tolist()))}, {len(np.unique(N))} step values")
    if (P <= 0).any() or (L <= 0).any() or (N < 0).any():
        raise ValueError("a power law needs P > 0, L > 0 and N >= 0")
    falling, falling_sse = _fit_branch(P, N, L, 1.0)
    rises = stats.spearmanr(N, L).statistic > 0  # a ceiling (a < 0) only fits a loss that rises with N
    exact = falling_sse < 1e-20 * len(L)
    rising, rising_sse = _fit_branch(P, N, L, -1.0) if rises and not exact else (None, np.inf)
    if rising is None and falling is None:
        raise ValueError("the power-law fit did not converge from any starting point")
    sign, best = (-1.0, rising) if rising_sse < falling_sse else (1.0, falling)
    s, log_a, b, alpha, beta = (float(v) for v in best)
    fitted = {"s": s, "a": sign * float(np.exp(log_a)), "b": b, "alpha": alpha, "beta": beta}
    return {**fitted, "r2": r_squared(L, power_law(P, N, **fitted)), "n": int(L.size)}
