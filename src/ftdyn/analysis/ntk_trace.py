"""The NTK's prediction of forgetting, step by step, beside what happened (the poster's claim).

Before every optimiser step the callback computes, on fixed probe points, the linearised change
that step should make: delta f(x) = -lr * K(x, B) @ dL/df(B) over the step's batch B
(`ftdyn.analysis.ntk.kernel_product`: a vjp and a jvp, never the kernel itself, so a step costs
a few passes at any width), with the kernel at the current weights and with the kernel frozen at
the checkpoint's (the lazy, NTK-regime prediction). After the step it records the actual change. It
also splits the prediction into the task rows' push and the replay rows' pull, which is the
poster's account of why replay keeps X2: the replay term cancels the fine-tuning term there.

The kernel step is exact to first order for plain SGD (`optim=sgd`); under Adam(W) the update is
not a kernel step and the numbers say only how far the kernel still orders the changes.
Rows (stage=after, per probe set), see `measures`.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import Tensor, nn

from ftdyn.analysis.ntk import kernel_product

log = logging.getLogger(__name__)

def every_parameter(name: str) -> bool:
    """The kernel's parameters for the frozen checkpoint, whose parameters require no grad."""
    return True


NTK_PROBES = 64  #: probe points per evaluation set


class NtkTrace(L.Callback):
    """Predicted and actual change of every probe point at every optimiser step.

    The Lightning module must have `model` (scalar outputs) and `output_grad(batch)`, dL/df at
    the batch's rows; batches carry `x` and `is_replay`.
    """

    def __init__(self, probes: dict[str, Tensor], base: nn.Module):
        self.names = list(probes)
        self.sizes = [len(x) for x in probes.values()]
        self.x = torch.cat(list(probes.values()))
        self.base = base  #: the checkpoint: its kernel is the frozen (lazy) one
        self.parts: dict[str, list[Tensor]] = {"pred": [], "pred_k0": [], "pred_replay": [], "actual": []}
        self._before: Tensor | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses
        grad, replay, x_batch = module.output_grad(batch), batch["is_replay"], batch["x"]
        step = -lr * kernel_product(module.model, self.x, x_batch, grad)  # -lr K(probes, batch) dL/df
        pull = -lr * kernel_product(module.model, self.x, x_batch[replay], grad[replay]) if replay.any() \
            else torch.zeros_like(step)
        self.parts["pred"].append(step.detach())
        self.parts["pred_replay"].append(pull.detach())
        self.parts["pred_k0"].append(-lr * kernel_product(self.base, self.x, x_batch, grad, every_parameter).detach())
        with torch.no_grad():
            self._before = module.model(self.x)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        with torch.no_grad():
            self.parts["actual"].append(module.model(self.x) - self._before)

    def measures(self) -> list[tuple[str, str, float]]:
        """(probe set, metric, value) over the whole run:

        - `ntk_corr`: Pearson correlation, over every (step, probe point), of the predicted and
          the actual one-step change (kernel at the current weights);
        - `ntk_pred_change`, `ntk_pred_change_k0`: the predicted mean change of the set summed over
          the steps, kernel at the current weights / frozen at the checkpoint; the actual one is
          the set's `drift` row;
        - `ntk_pred_change_replay`: the replay rows' part of `ntk_pred_change` (0 without replay).
        """
        if not self.parts["actual"]:
            return []
        stacked = {k: torch.stack(v).split(self.sizes, dim=1) for k, v in self.parts.items()}  # [steps, points]
        out = []
        for i, name in enumerate(self.names):
            part = {k: v[i] for k, v in stacked.items()}
            corr = pearson(part["pred"].flatten(), part["actual"].flatten())
            if corr is not None:
                out.append((name, "ntk_corr", corr))
            out += [(name, metric, float(part[k].sum(0).mean())) for k, metric in
                    (("pred", "ntk_pred_change"), ("pred_k0", "ntk_pred_change_k0"),
                     ("pred_replay", "ntk_pred_change_replay"))]
        return out


def pearson(a: Tensor, b: Tensor) -> float | None:
    """Pearson correlation, or None when either side does not vary (a row must hold a finite number)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    norm = a.norm() * b.norm()
    return float(a @ b / norm) if norm > 0 else None
