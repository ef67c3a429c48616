"""The statistics behind the report: bootstrap intervals, the linear forgetting law, two joint laws.

Bootstrap (Amuro & Char; docs/definitions.md): `scipy.stats.bootstrap`, percentile method, 95%,
3,000 resamples of the per-example scores, seeded. They report the interval's midpoint as the
performance; the report keeps the plain mean beside the interval (the midpoint is (lo + hi) / 2).

Which points are fitted (Kalajdzievski §3.2): the paper trains 260 steps and leaves the first 50
out of its fits, while the loss still falls steeply from its start. ftdyn leaves out the same
share of each run, the first round(50 / 260 * run steps) steps (`skipped_steps`; 48 of a
250-step run), or a fixed number (`python -m ftdyn.report --skip-steps N`, 0 keeps every step).
The run's length is its last in-loop step. This is report-side: no run key depends on it.

Linear law (Kalajdzievski Eq. 4, §2.3): `forget = -c * L_ft + s`, least squares, with R², over
every rank's in-loop points pooled, as the paper pools its ranks.

Additive joint law, the paper's (Eq. 5-6, `additive_law`): in trainable parameters P and steps N,

    L(P, N) = c * ((a / P)**alpha + (b / N)**beta)**rho + s

fitted to the fine-tuning loss and to forget_ce. The form is the one the paper's Table 1
parameters (a, b, alpha, beta, rho, c, s per loss) fit: with the OpenOrca L_ft values it gives
0.65-0.77 for ranks 8-256 (Llama 2 7B, P = 2.5M per rank) over steps 50-260. The §4.1 text
itself was not available to check (docs/definitions.md). Table 1 gives no c_f, s_f: the
forgetting law is read as the same form with a negative c (c_f = -c_{f,ft} * c_ft from the
linear law), rising towards the ceiling s as N and P grow; so c is fitted with its sign.
a, b and c are identified only together: scaling (a/P)**alpha and (b/N)**beta by k is undone by
c / k**rho. ftdyn reports the representative with |c| = 1; `rescale_additive` moves a fit to
any other c (e.g. the paper's c_ft = 0.002) for comparison. Least squares on L itself, from a
grid of starts (`fit_additive_law`), with alpha, beta >= 0 (each term falls with P or N) and
rho > 0. R² on L.

Product form, ftdyn's own (kept beside the paper's for comparison, labelled as ftdyn's in tables
and figures; written before the paper's form was known):

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
ADDITIVE_PARAMS = ("c", "a", "b", "alpha", "beta", "rho", "s")
#: the joint laws the report fits: name -> (label in tables and figures, parameters)
JOINT_LAWS = {"additive": ("Kalajdzievski Eq. 5-6: c((a/P)^alpha + (b/N)^beta)^rho + s", ADDITIVE_PARAMS),
              "product": ("ftdyn's own: s + a P^alpha (N + b)^beta", POWER_LAW_PARAMS)}
PAPER_SKIP_STEPS, PAPER_RUN_STEPS = 50, 260  #: Kalajdzievski leaves the first 50 of 260 steps out of the fits
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


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """Mean, Student-t interval mean ± t((1 + confidence) / 2, n − 1) · sd / √n across `values`
    (e.g. one per seed; NaN skipped), and n. With fewer than two values the interval is (nan, nan)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan"), int(x.size)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half, int(x.size)


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


def skipped_steps(run_steps: int, skip_steps: int | None = None) -> int:
    """How many first steps of a run of `run_steps` the law fits leave out: `skip_steps` if given,
    else the paper's share, round(50 / 260 * run_steps) (module docstring)."""
    if skip_steps is not None:
        if skip_steps < 0:
            raise ValueError(f"skip_steps={skip_steps}: must be >= 0 (0 keeps every step)")
        return skip_steps
    return round(PAPER_SKIP_STEPS * run_steps / PAPER_RUN_STEPS)


def additive_law(P, N, c, a, b, alpha, beta, rho, s):
    """Kalajdzievski's joint law L(P, N) = c * ((a/P)**alpha + (b/N)**beta)**rho + s."""
    P, N = np.asarray(P, float), np.asarray(N, float)
    return c * ((a / P) ** alpha + (b / N) ** beta) ** rho + s


def rescale_additive(fit: dict, c: float) -> dict:
    """The same law written with scale `c` (same sign as fit's): a and b absorb the change."""
    if c * fit["c"] <= 0:
        raise ValueError(f"c={c} has not the sign of the fit's c={fit['c']}")
    k = (c / fit["c"]) ** (-1 / fit["rho"])  # each term is multiplied by k, so c * k**rho stays
    return {**fit, "c": c, "a": fit["a"] * k ** (1 / fit["alpha"]), "b": fit["b"] * k ** (1 / fit["beta"])}


def _additive_unit(theta, logP, logN, sign: float):
    """sign * (A P^-alpha + B N^-beta)^rho + s with theta = (s, log A, log B, alpha, beta, rho)."""
    s, log_A, log_B, alpha, beta, rho = theta
    inner = np.logaddexp(log_A - alpha * logP, log_B - beta * logN)
    return s + sign * np.exp(np.clip(rho * inner, -700, 700))


def _additive_jacobian(theta, logP, logN, sign: float):
    """d/dtheta of `_additive_unit`: with u = log(A P^-alpha + B N^-beta), E = sign e^(rho u) and
    w1, w2 the two terms' shares of the sum, dE = E (rho w1 dlogA + rho w2 dlogB - rho w1 logP
    dalpha - rho w2 logN dbeta + u drho)."""
    s, log_A, log_B, alpha, beta, rho = theta
    x1, x2 = log_A - alpha * logP, log_B - beta * logN
    u = np.logaddexp(x1, x2)
    w1, w2 = np.exp(x1 - u), np.exp(x2 - u)
    E = sign * np.exp(np.clip(rho * u, -700, 700))
    return np.column_stack([np.ones_like(u), E * rho * w1, E * rho * w2, -E * rho * w1 * logP,
                            -E * rho * w2 * logN, E * u])


def _additive_starts(logP, logN, L, sign: float):
    """Starting points: each term carries half of (sign (L - s0))**(1/rho0) on average."""
    lo, hi = float(L.min()), float(L.max())
    spread = max(hi - lo, 1e-3 * max(abs(hi), 1.0))
    s_starts = (lo - 2 * spread, lo - 0.2 * spread) if sign > 0 else (hi + 0.2 * spread, hi + 2 * spread)
    for s0, rho0, (alpha0, beta0) in itertools.product(s_starts, (1.0, 3.0, 8.0), ((0.05, 0.1), (0.5, 0.7))):
        y = (sign * (L - s0)) ** (1 / rho0)
        half = np.log(0.5 * float(y.mean()))
        yield np.array([s0, half + alpha0 * float(logP.mean()), half + beta0 * float(logN.mean()), alpha0, beta0, rho0])


def _fit_additive_branch(logP, logN, L, sign: float) -> tuple[np.ndarray | None, float]:
    """Best theta and its sum of squares for one sign of c."""
    lo, hi = float(L.min()), float(L.max())
    s_bounds = (-np.inf, lo) if sign > 0 else (hi, np.inf)
    lower = [s_bounds[0], -200.0, -200.0, 0.0, 0.0, 1e-3]
    upper = [s_bounds[1], 200.0, 200.0, 5.0, 5.0, 50.0]
    best, best_sse = None, np.inf
    for start in _additive_starts(logP, logN, L, sign):
        start = np.clip(start, np.nextafter(lower, upper), np.nextafter(upper, lower))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optimize.least_squares(lambda t: _additive_unit(t, logP, logN, sign) - L, start,
                                            jac=lambda t: _additive_jacobian(t, logP, logN, sign),
                                            bounds=(lower, upper), x_scale="jac", ftol=1e-14, xtol=1e-14,
                                            gtol=1e-14, max_nfev=MAX_EVALS)
        sse = float((result.fun ** 2).sum())
        if np.isfinite(sse) and sse < best_sse:
            best, best_sse = result.x, sse
        if best_sse < 1e-24 * len(L):  # exact (noise-free) data: no better start to find
            break
    return best, best_sse


def fit_additive_law(P, N, L) -> dict[str, float]:
    """Fit `additive_law` to losses L at trainable parameters P and steps N (least squares on L).

    Both signs of c are tried (a loss falling to a floor s, or rising to a ceiling s) and the
    better kept. Needs >= 2 distinct P, >= 3 distinct N, P > 0 and N > 0. Returns c (+1 or -1, the
    representative |c| = 1), a, b, alpha, beta, rho, s, r2 and n.
    """
    P, N, L = (np.asarray(v, float) for v in (P, N, L))
    if len(np.unique(P)) < 2 or len(np.unique(N)) < 3:
        raise ValueError(f"a law in P and N needs >= 2 distinct P and >= 3 distinct N, got "
                         f"P={sorted(set(P.tolist()))}, {len(np.unique(N))} step values")
    if (P <= 0).any() or (N <= 0).any():
        raise ValueError("the additive law needs P > 0 and N > 0")
    logP, logN = np.log(P), np.log(N)
    # c > 0 falls with N (alpha, beta >= 0), c < 0 rises: only the branch of the data's direction
    sign = -1.0 if stats.spearmanr(N, L).statistic > 0 else 1.0
    theta, _ = _fit_additive_branch(logP, logN, L, sign)
    if theta is None:
        raise ValueError("the additive-law fit did not converge from any starting point")
    s, log_A, log_B, alpha, beta, rho = (float(v) for v in theta)
    # (a/P)**alpha = A P**-alpha, so a = A**(1/alpha); an exponent at 0 leaves its term constant
    with np.errstate(over="ignore"):
        a = float(np.exp(log_A / alpha)) if alpha > 0 else float("nan")
        b = float(np.exp(log_B / beta)) if beta > 0 else float("nan")
    predicted = _additive_unit(theta, logP, logN, sign)
    return {"c": sign, "a": a, "b": b, "alpha": alpha, "beta": beta, "rho": rho, "s": s,
            "r2": r_squared(L, predicted), "n": int(L.size)}


def joint_law_curve(fit: dict, P, N):
    """The fitted joint law of a report row (`law` names it, as in JOINT_LAWS) at P, N."""
    if fit.get("law", "product") == "additive":
        return additive_law(P, N, **{k: fit[k] for k in ADDITIVE_PARAMS})
    return power_law(P, N, **{k: fit[k] for k in POWER_LAW_PARAMS})
