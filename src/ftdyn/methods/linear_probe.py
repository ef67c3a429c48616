"""The linear probe: the probe phase of lp, lpft and lplora, a converged L2 logistic regression on frozen features.

The sources fit their linear probe with scikit-learn to convergence (Tomihari & Sato:
`LogisticRegressionCV`, L2, multinomial, tol 1e-4, max_iter 5000). ftdyn fits the objective of
scikit-learn's `LogisticRegression(C=method.probe_c)` with the multinomial (softmax) loss,

    minimise over W, b:  C * sum_i CE(W x_i + b, y_i) + 0.5 * ||W||_F^2      (b not penalised)

on the features the head reads (the final hidden state at each training prompt's last token),
extracted once from the frozen model. The solver is full-batch L-BFGS with a strong-Wolfe line
search (`torch.optim.LBFGS`) in float64, started from zero, on the objective divided by C * n:
the same minimiser, on the scale scikit-learn's lbfgs solver uses, so `method.probe_tol` bounds
the largest gradient entry as scikit-learn's `tol` does. With two labels the loss is the
two-row softmax; its logit difference is scikit-learn's binary `LogisticRegression` at C' = 2C.
C is fixed by config: the sources' cross-validation over C is not done.

A finished probe is saved as `checkpoints/probe/end.ckpt` (its head and facts), so a re-run job
restores it rather than fitting again (`ftdyn.methods.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ftdyn import config as C
from ftdyn.data.batches import collate
from ftdyn.launch import cluster
from ftdyn.methods.checkpoints import PhaseCheckpoints
from ftdyn.models.heads import ClassifierHead, last_token_features

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProbeFit:
    """A fitted logistic regression and how the fit went."""

    weight: torch.Tensor  #: (labels, features)
    bias: torch.Tensor  #: (labels,)
    iterations: int  #: L-BFGS iterations taken
    loss: float  #: the final objective / (C * n): mean cross-entropy + ||W||^2 / (2 C n)
    train_acc: float  #: accuracy on the features it was fitted to
    converged: bool  #: stopped by a tolerance, not by max_iter

    def facts(self) -> dict[str, float]:
        """The probe's run facts (`stage=run` rows)."""
        return {"probe_iterations": self.iterations, "probe_loss": self.loss, "probe_train_acc": self.train_acc,
                "probe_converged": float(self.converged)}


def objective(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              c: float) -> torch.Tensor:
    """scikit-learn's L2 logistic-regression objective divided by C * n (the scale L-BFGS minimises)."""
    n = len(labels)
    return F.cross_entropy(features @ weight.T + bias, labels) + weight.pow(2).sum() / (2 * c * n)


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, n_labels: int, c: float, tol: float,
                 max_iter: int) -> ProbeFit:
    """Minimise `objective` by full-batch L-BFGS (strong Wolfe) in float64, from W = 0, b = 0."""
    x, y = features.double(), labels.long()
    weight = torch.zeros(n_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                               tolerance_grad=tol, tolerance_change=64 * torch.finfo(torch.float64).eps,
                               history_size=10, line_search_fn="strong_wolfe")  # scipy's m=10, ftol=64 eps

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = objective(x, y, weight, bias, c)
        loss.backward()
        return loss

    solver.step(closure)
    loss = float(closure().detach())  # at the final point: its value and gradient
    largest_grad = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    state = solver.state[weight]
    # converged: the gradient reached tol, or L-BFGS stopped before its caps because the
    # objective no longer decreases in float64 (scipy's ftol = 64 eps, as scikit-learn's lbfgs)
    converged = largest_grad <= tol or (state["n_iter"] < max_iter and state["func_evals"] < 2 * max_iter)
    with torch.no_grad():
        train_acc = float(((x @ weight.T + bias).argmax(-1) == y).double().mean())
    return ProbeFit(weight.detach(), bias.detach(), int(state["n_iter"]), loss, train_acc, bool(converged))


@torch.no_grad()
def extract_features(model, rows: list[dict], pad_id: int, batch_size: int) -> torch.Tensor:
    """The last-token feature of every row from the model in eval mode, in row order, float64 on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size], pad_id)
        features.append(last_token_features(model, {k: batch[k].to(device) for k in ("input_ids", "attention_mask")})
                        .double().cpu())
    model.train(was_training)
    return torch.cat(features)


def fit_linear_probe(model, head: ClassifierHead, rows: list[dict], pad_id: int, run: C.TrainConfig,
              job_dir: Path) -> dict[str, float]:
    """Fit `head` on the frozen model's features of the task rows (or restore a finished fit); return its facts."""
    checkpoints = PhaseCheckpoints(job_dir, "probe", run.trainer.checkpoint_every_n_steps)
    if checkpoints.finished():
        saved = torch.load(checkpoints.end, map_location="cpu", weights_only=True)
        head.load_state_dict({k.removeprefix("head."): v for k, v in saved["state_dict"].items()})
        log.info("phase probe already finished: restored from %s", checkpoints.end)
        return saved["facts"]
    features = extract_features(model, rows, pad_id, run.eval.batch_size)
    labels = torch.tensor([r["class_label"] for r in rows])
    method = run.method
    fit = fit_logistic(features, labels, head.out_features, method.probe_c, method.probe_tol, method.probe_max_iter)
    log.info("probe: L2 logistic regression (C=%g) on %d x %d features, %d L-BFGS iterations, loss %.4g, "
             "train acc %.3f", method.probe_c, *features.shape, fit.iterations, fit.loss, fit.train_acc)
    if not fit.converged:
        log.warning("probe: not converged to method.probe_tol=%g in method.probe_max_iter=%d iterations",
                    method.probe_tol, method.probe_max_iter)
    with torch.no_grad():
        head.weight.copy_(fit.weight)
        head.bias.copy_(fit.bias)
    facts = {**fit.facts(), "train_tokens": sum(len(r["input_ids"]) for r in rows)}
    if checkpoints.every > 0 and cluster.is_rank_zero():
        _save(checkpoints, head, facts)
    return facts


def _save(checkpoints: PhaseCheckpoints, head: ClassifierHead, facts: dict[str, float]) -> None:
    """Write the finished probe atomically, as a finished training phase writes its end.ckpt."""
    checkpoints.dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints.dir / ".end.ckpt.tmp"
    state = {f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}  # as in a phase's end.ckpt
    torch.save({"state_dict": state, "facts": facts}, tmp)
    os.replace(tmp, checkpoints.end)
