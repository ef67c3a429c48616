"""Metric definitions, as the source papers give them (docs/definitions.md: Kalajdzievski 2024's forgetting
and agreement with the base, Tomihari & Sato 2024's calibration).

Pure functions of tensors, so each can be pinned to a hand computation in a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

N_BINS = 15  # Tomihari & Sato's calibration bins
MAX_LOG_T = 7.0  # temperatures are fitted within [e^-7, e^7] ~ [0.001, 1100]


def bin_edges(n_bins: int = N_BINS) -> torch.Tensor:
    """The equal-width bin edges 0, 1/n, ..., 1, in float32 as torchmetrics draws them."""
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)


def _edge_to_lower_bin(probabilities) -> torch.Tensor:
    """Probabilities in float32, one representable step towards 0.

    The definition (Tomihari & Sato 2024, App. A.3.3) bins lower < c <= upper. torchmetrics bins lower <= c < upper
    and counts c == 1 in a hidden 16th bin of its own (torchmetrics#3510): in float32 a softmax
    saturates to exactly 1 at a logit gap of ~17, so a confident model sends real predictions there.
    One step down puts a confidence on an edge (1 included) into the bin below, as the definition
    does, and moves every mean confidence by under 6e-8. Order, and so every argmax, is kept.
    """
    probabilities = torch.as_tensor(probabilities).float()
    return torch.nextafter(probabilities, torch.zeros_like(probabilities))


def reliability_bins(confidence, correct, n_bins: int = N_BINS) -> list[tuple[int, int, float, float]]:
    """Per non-empty equal-width confidence bin: (index, count, mean confidence, accuracy).

    A prediction falls in bin b when edge b < confidence <= edge b+1 (`bin_edges`; a confidence of
    0 goes in bin 0): the binning `ece_mce` gets from torchmetrics, so the report's reliability
    diagrams show the bins the ECE/MCE rows were computed from.
    """
    confidence = torch.as_tensor(confidence, dtype=torch.float64)
    correct = torch.as_tensor(correct, dtype=torch.float64)
    bins = (torch.bucketize(_edge_to_lower_bin(confidence), bin_edges(n_bins), right=True) - 1).clamp(0, n_bins - 1)
    out = []
    for b in bins.unique().tolist():
        inside = bins == b
        out.append((b, int(inside.sum()), confidence[inside].mean().item(), correct[inside].mean().item()))
    return out


def ece_mce(probabilities: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> tuple[float, float]:
    """Expected and maximum calibration error of max-softmax confidence, by torchmetrics, over
    `n_bins` equal-width bins (lower < c <= upper, see `_edge_to_lower_bin`):
    ECE = sum_b |b|/n * |acc_b - conf_b|; MCE = max_b |acc_b - conf_b| over non-empty bins.

    `probabilities` is (examples, classes), each row a distribution (absent choices 0).
    """
    probabilities, labels = _edge_to_lower_bin(probabilities), torch.as_tensor(labels).long()
    errors = [multiclass_calibration_error(probabilities, labels, num_classes=probabilities.shape[-1],
                                           n_bins=n_bins, norm=norm) for norm in ("l1", "max")]
    return float(errors[0]), float(errors[1])


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
    ece, mce = ece_mce(torch.softmax(_scaled(logits.double(), temperature), -1), labels)
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
