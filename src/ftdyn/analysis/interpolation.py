"""Weight-space interpolation, WiSE-FT (Wortsman et al. 2022): theta_a = (1 - a) theta_0 + a theta_ft.

After a run, each a of `eval.interpolate` gets the whole `after` evaluation (in-domain, out of
domain, knowledge probe, forgetting) of the interpolated model: rows with stage `after` and a column
`alpha`. Every state-dict entry is interpolated, as mlfoundations/wise-ft does; a = 0 gives
theta_0 and a = 1 theta_ft bit for bit ((1 - 1) * x + 1 * y == y in floating point).

- theta_0 is the checkpoint the job loaded, theta_ft the fine-tuned model; for LoRA methods the
  fine-tuned model with its adapters merged into the weights (`merge_and_unload`).
- The head of a head method has no theta_0 (it is created for the task, zero-initialised). Its
  zero start would only scale the logits by a (the same predictions, temperature 1 / a) and at
  a = 0 score every class alike, so the head keeps its fine-tuned weights at every a and a moves
  the backbone alone: a = 0 is the pre-trained backbone read by the fine-tuned head. For `lp`,
  whose backbone never moves, every a is the fine-tuned model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def merged(model) -> torch.nn.Module:
    """The fine-tuned weights as a plain model: a LoRA (peft) model's adapters merged into a copy;
    any other model as it is."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def interpolated_state(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                       alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * start + alpha * end for every floating-point entry; other entries (integer
    buffers) from `end`. Both state dicts must have the same keys."""
    missing = sorted(set(start) ^ set(end))
    if missing:
        raise ValueError(f"interpolation: the two models' weights differ in names {missing[:5]}")
    return {k: (1 - alpha) * start[k] + alpha * end[k].to(start[k].device) if start[k].is_floating_point()
            else end[k] for k in start}


@torch.no_grad()
def interpolation_rows(alphas: list[float], base, fine_tuned,
                       evaluate: Callable[[torch.nn.Module], list[dict]]) -> list[dict]:
    """`evaluate(theta_a)`'s rows for each alpha, each with its `alpha`.

    Per-example lists (`scores`, `confidences`) are dropped: examples.jsonl keys lines by stage,
    set and metric, which the alphas share with the plain `after` rows.
    """
    if not alphas:
        return []
    end_model = merged(fine_tuned)
    start_model = base.plain() if hasattr(base, "plain") else base  # a LoRA model's base: its adapters removed
    start, end = start_model.state_dict(), end_model.state_dict()
    scratch = copy.deepcopy(start_model)
    _same_grad_flags(scratch, end_model)
    rows = []
    for alpha in alphas:
        scratch.load_state_dict(interpolated_state(start, end, alpha))
        rows += [{**{k: v for k, v in row.items() if k not in ("scores", "confidences")}, "alpha": float(alpha)}
                 for row in evaluate(scratch)]
        log.info("WiSE-FT alpha=%g evaluated", alpha)
    return rows


def _same_grad_flags(model, like) -> None:
    """Give `model`'s parameters the requires_grad flags of `like`'s, by name. Evaluation runs
    under no_grad, yet torch picks a different float32 kernel for a linear map on a strided input
    (the LM head on the last position) by whether its weight requires grad: logits differ by
    ~1e-7. With the flags of the model evaluated `after`, a = 1 reproduces its rows bit for bit."""
    flags = {name: p.requires_grad for name, p in like.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))
