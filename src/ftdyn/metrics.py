"""Metric definitions, as the source papers give them (seed-methods.md §2.1, §2.4, §3.3).

Pure functions of tensors, so each can be pinned to a hand computation in a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_BINS = 15  # Tomihari & Sato's calibration bins
MAX_LOG_T = 7.0  # temperatures are fitted within [e^-7, e^7] ~ [0.001, 1100]


def reliability_bins(confidence, correct, n_bins: int = N_BINS) -> list[tuple[int, int, float, float]]:
    """Per non-empty equal-width confidence bin: (index, count, mean confidence, accuracy).

    A prediction falls in bin b when b/n_bins < confidence <= (b+1)/n_bins (a confidence of 0
    goes in bin 0). The one binning of ECE/MCE and of the report's reliability diagrams.
    """
    confidence = torch.as_tensor(confidence, dtype=torch.float64)
    correct = torch.as_tensor(correct, dtype=torch.float64)
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    out = []
    for b in bins.unique().tolist():
        inside = bins == b
        out.append((b, int(inside.sum()), confidence[inside].mean().item(), correct[inside].mean().item()))
    return out


def ece_mce(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = N_BINS) -> tuple[float, float]:
    """Expected and maximum calibration error over `reliability_bins`:
    ECE = sum_b |b|/n * |acc_b - conf_b|; MCE = max_b |acc_b - conf_b| over non-empty bins."""
    bins = reliability_bins(confidence, correct, n_bins)
    gaps = [abs(accuracy - mean_confidence) for _, _, mean_confidence, accuracy in bins]
    ece = sum(count / len(confidence) * gap for (_, count, _, _), gap in zip(bins, gaps))
    return ece, max(gaps, default=0.0)


def _scaled(logits: torch.Tensor, temperature) -> torch.Tensor:
    """logits / temperature, where -inf logits (absent choices) stay -inf with a zero gradient."""
    finite = torch.isfinite(logits)
    safe = torch.where(finite, logits, torch.zeros_like(logits))
    return torch.where(finite, safe / temperature, torch.full_like(logits, float("-inf")))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on (logits, labels).

    The papers fit T on the validation split with Adam; the NLL is smooth in log T, so L-BFGS on
    log T reaches the same minimum in a few steps. log T is kept within +-MAX_LOG_T: a model no
    better than chance has its optimum at T -> infinity (the uniform distribution), which would
    otherwise come back as an arbitrary huge or non-finite number.
    """
    u = torch.zeros((), dtype=torch.float64, requires_grad=True)
    logits, labels = logits.double(), labels.long()
    optimizer = torch.optim.LBFGS([u], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def temperature() -> torch.Tensor:
        return (MAX_LOG_T * torch.tanh(u / MAX_LOG_T)).exp()  # log T = u near 0, bounded far out

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(_scaled(logits, temperature()), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(temperature().detach())


def calibration(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """ECE and MCE of softmax(logits / temperature) against `labels`."""
    probs = torch.softmax(_scaled(logits.double(), temperature), -1)
    confidence, predicted = probs.max(-1)
    ece, mce = ece_mce(confidence, predicted == labels)
    return {"ece": ece, "mce": mce}


def forgetting(base_logits: torch.Tensor, tuned_logits: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Kalajdzievski's forgetting on the positions where `mask` is true, with soft targets.

    forget_ce = mean over positions of -sum_v p_base(v) log p_tuned(v);
    forget_kl = forget_ce - H(p_base), which is 0 for an unchanged model.
    Returns the sums over positions (ce, kl) so batches can be pooled; divide by mask.sum().
    """
    log_base = torch.log_softmax(base_logits.double(), -1)
    log_tuned = torch.log_softmax(tuned_logits.double(), -1)
    p_base = log_base.exp()
    ce = -(p_base * log_tuned).sum(-1)
    kl = (p_base * (log_base - log_tuned)).sum(-1)
    return float(ce[mask].sum()), float(kl[mask].sum())


def agreement(predictions: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of examples where two models predict the same answer (acc_vs_base)."""
    return float((predictions == reference).double().mean())


def choice_predictions(loglik: list[torch.Tensor], choices: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiple-choice predictions as lm-eval-harness makes them: the argmax of each choice's
    summed log-likelihood (acc), and of that sum divided by the choice's length in characters
    (acc_norm), which stops long choices losing merely for having more tokens to pay for."""
    raw = torch.stack([s.argmax() for s in loglik])
    lengths = [torch.tensor([len(c) for c in options], dtype=torch.float64) for options in choices]
    normalised = torch.stack([(s.double() / n).argmax() for s, n in zip(loglik, lengths)])
    return raw, normalised
