"""The two-Gaussians toy's sets (`x1`: in_domain, `x2`: pretrain): a number per input.

Per set and stage: `pred` (the mean prediction), `mse` (against the fine-tuned target: -0.2 on
X1, 1 on X2) and `drift` (the mean change of the prediction from the base checkpoint's; 0 for
the base itself). X2's drift is the forgetting the CMU poster studies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ftdyn.eval.rows import result_row
from ftdyn.tasks import TaskData
from ftdyn.tasks.gaussians import FINETUNE_TARGETS


def points(task: TaskData) -> dict[str, torch.Tensor]:
    """Each evaluation set's points, as a tensor."""
    return {es.name: torch.tensor([e["x"] for e in es.examples]) for es in task.eval_sets}


@torch.no_grad()
def regression_rows(model, stage: str, task: TaskData, base_predictions: dict[str, torch.Tensor]) -> list[dict]:
    """`pred`, `mse` and `drift` of every set; `base_predictions`: the base checkpoint's, per set."""
    kinds = {es.name: es.split_kind for es in task.eval_sets}
    rows = []
    for name, x in points(task).items():
        pred = model(x)
        measures = {"pred": pred.mean(), "mse": F.mse_loss(pred, torch.full_like(pred, FINETUNE_TARGETS[name])),
                    "drift": (pred - base_predictions[name]).mean()}
        rows += [result_row(name, kinds[name], stage, None, metric, float(value)) for metric, value in measures.items()]
    return rows


@torch.no_grad()
def predictions(model, task: TaskData) -> dict[str, torch.Tensor]:
    """The model's prediction at every point of every set."""
    return {name: model(x) for name, x in points(task).items()}
