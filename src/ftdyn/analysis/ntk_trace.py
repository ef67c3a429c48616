"""The NTK's prediction of forgetting, step by step, beside what happened (the poster's claim).

Before a traced optimiser step the callback computes, on fixed trace points, the linearised
change that step should make: delta f(x) = -lr * K(x, B) @ dL/df(B) over the step's batch B.
It never forms the kernel: K(x, B) @ dL/df(B) = J(x) @ grad_theta L(B), so one backward pass
(the loss's gradient, through the module's own loss, `loss_parts`) and one forward-mode pass on
the points (`ftdyn.analysis.ntk.function_change`) give it, at any width. After the step it
records the actual change. The prediction is split into the task rows' push and the replay rows'
pull, the poster's account of why replay keeps X2: the replay term cancels the fine-tuning term.

What f is: the toy MLP's output; a head method's head logits on the last-token feature (C
outputs, `HeadLogits`); an LM method's label-word logits as the scorer reads them
(`LabelLogits`). On a ladder model a replay row's loss is the LM loss on its text, so its pull is
J_f(x) J_LM(B)^T dL/dlogits(B): the kernel between the points' f and the replay rows' LM logits.
The toy also predicts with the kernel frozen at the checkpoint (the lazy, NTK-regime prediction).

The kernel step is exact to first order for plain SGD (`optim=sgd`); under Adam(W) the update is
not a kernel step, and only the correlations say much: how far the kernel still orders the
changes. Rows (stage=after, per set of points), see `NtkTrace.measures`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from ftdyn.analysis.ntk import function_change, kernel_product
from ftdyn.models.heads import last_token_features

log = logging.getLogger(__name__)


def every_parameter(name: str) -> bool:
    """The kernel's parameters for the frozen checkpoint, whose parameters require no grad."""
    return True


TRACE_POINTS = 64  #: the toy's trace points per evaluation set


class HeadLogits(nn.Module):
    """x -> V phi(x) + b, the head method's f; x is [n, 2, L] (token ids, attention mask), right-padded."""

    def __init__(self, model, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(last_token_features(self.model, {"input_ids": x[:, 0], "attention_mask": x[:, 1]}))


class LabelLogits(nn.Module):
    """x -> per label word, the logsumexp of the last prompt position's logits over its first
    sub-tokens (`ftdyn.eval.scoring.choice_logits`): the LM methods' f. x as `HeadLogits`'."""

    def __init__(self, model, label_ids: Sequence[Sequence[int]]):
        super().__init__()
        self.model, self.label_ids = model, [list(ids) for ids in label_ids]

    def forward(self, x: Tensor) -> Tensor:
        # the LM head on the last real token's final hidden state: no [n, L, vocab] logits
        features = last_token_features(self.model, {"input_ids": x[:, 0], "attention_mask": x[:, 1]})
        at_last = self.model.get_output_embeddings()(features)
        return torch.stack([at_last[:, ids].logsumexp(-1) for ids in self.label_ids], dim=-1)


def module_model(module: L.LightningModule) -> nn.Module:
    """The toy's f: the module's model itself."""
    return module.model


class NtkTrace(L.Callback):
    """Predicted and actual change of every trace point over the first `steps` optimiser steps.

    The Lightning module must have `loss_parts(batch)`: the training loss as named parts that sum
    to it (`task`, and `replay` where the batch has replay rows). `function(module)` is the f
    traced (an nn.Module over the module's own parameters). With `base` (the toy, whose module
    also has `output_grad`) the kernel frozen at the checkpoint predicts too.
    """

    def __init__(self, points: dict[str, Tensor], function: Callable[[L.LightningModule], nn.Module] = module_model,
                 base: nn.Module | None = None, steps: int = 0):
        self.names = list(points)
        self.sizes = [len(x) for x in points.values()]
        self.x = torch.cat(list(points.values()))
        self.function, self.base, self.steps = function, base, steps
        self.parts: dict[str, list[Tensor]] = {"pred": [], "pred_replay": [], "actual": []}
        if base is not None:
            self.parts["pred_k0"] = []
        self._before: Tensor | None = None
        self.seconds = 0.0  #: the trace's own time in this process, for the log

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.steps and trainer.global_step >= self.steps:
            return
        started = time.perf_counter()
        lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses
        f, was_training = self.function(module), module.training
        self.x = self.x.to(module.device)
        module.eval()  # no dropout: the function, not a random draw of it
        push = {name: -lr * function_change(f, self.x, gradient(f, loss))
                for name, loss in module.loss_parts(batch).items()}  # each part's own push on the points
        self.parts["pred"].append(sum(push.values()).detach())
        self.parts["pred_replay"].append(push.get("replay", torch.zeros_like(self.parts["pred"][-1])).detach())
        if self.base is not None:
            grad, x_batch = module.output_grad(batch), batch["x"]
            frozen = kernel_product(self.base, self.x, x_batch, grad, every_parameter)
            self.parts["pred_k0"].append(-lr * frozen.detach())
        with torch.no_grad():
            self._before = f(self.x)
        module.train(was_training)
        self.seconds += time.perf_counter() - started

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._before is None:
            return
        started, f, was_training = time.perf_counter(), self.function(module), module.training
        module.eval()
        with torch.no_grad():
            self.parts["actual"].append(f(self.x) - self._before)
        module.train(was_training)
        self._before = None
        self.seconds += time.perf_counter() - started
        if self.steps and len(self.parts["actual"]) == self.steps:
            log.info("NTK trace: %d steps in %.1f s", self.steps, self.seconds)

    def state_dict(self) -> dict:
        """The traced steps ride in every checkpoint: a resumed job keeps the steps it traced."""
        return {"parts": {k: [t.cpu() for t in v] for k, v in self.parts.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.parts = {k: list(v) for k, v in state["parts"].items()}

    def measures(self) -> list[tuple[str, str, float]]:
        """(set of points, metric, value) over the traced steps; "change" is summed over the steps and
        averaged over the set's points (and f's outputs):

        - `ntk_corr`: Pearson correlation, over every (step, point, output), of the predicted and
          the actual one-step change (kernel at the current weights): the headline under AdamW;
        - `ntk_corr_total`: the same over every (point, output) of the changes summed over the steps;
        - `ntk_rel_err`: ||predicted - actual|| / ||actual|| over every (step, point, output):
          first-order accuracy (small under SGD at a small rate);
        - `ntk_pred_change`, `ntk_actual_change`: the predicted and the actual change;
        - `ntk_pred_change_replay`: the replay rows' part of `ntk_pred_change` (0 without replay);
          `ntk_replay_ratio`: ||replay part|| / ||task part|| over every (step, point, output);
        - `ntk_pred_change_k0` (the toy): predicted with the kernel frozen at the checkpoint.
        """
        n = len(self.parts["actual"])
        if not n:
            return []
        stacked = {k: torch.stack(v[:n]).double().split(self.sizes, dim=1) for k, v in self.parts.items()}
        out = []
        for i, name in enumerate(self.names):
            part = {k: v[i] for k, v in stacked.items()}  # [steps, points(, outputs)]
            pred, actual, pull = part["pred"], part["actual"], part["pred_replay"]
            values = {"ntk_corr": pearson(pred.flatten(), actual.flatten()),
                      "ntk_corr_total": pearson(pred.sum(0).flatten(), actual.sum(0).flatten()),
                      "ntk_rel_err": ratio(pred - actual, actual),
                      "ntk_pred_change": float(pred.sum(0).mean()), "ntk_actual_change": float(actual.sum(0).mean()),
                      "ntk_pred_change_replay": float(pull.sum(0).mean()), "ntk_replay_ratio": ratio(pull, pred - pull)}
            if "pred_k0" in part:
                values["ntk_pred_change_k0"] = float(part["pred_k0"].sum(0).mean())
            out += [(name, metric, value) for metric, value in values.items() if value is not None]
        return out


def gradient(f: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    """d loss / d theta over f's parameters that train, by name (zero where the loss does not reach:
    a replay row's LM loss never touches the head)."""
    named = {n: p for n, p in f.named_parameters() if p.requires_grad}
    # retain_graph: the toy's parts share one forward
    grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True, retain_graph=True)
    return {n: g if g is not None else torch.zeros_like(p) for (n, p), g in zip(named.items(), grads)}


def pearson(a: Tensor, b: Tensor) -> float | None:
    """Pearson correlation, or None when either side does not vary (a row must hold a finite number)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    norm = a.norm() * b.norm()
    return float(a @ b / norm) if norm > 0 else None


def ratio(a: Tensor, b: Tensor) -> float | None:
    """||a|| / ||b||, or None where b is 0."""
    denominator = float(b.norm())
    return float(a.norm()) / denominator if denominator > 0 else None
