"""What fine-tuning does to the features and the kernel of a head method (Tomihari & Sato 2024;
docs/definitions.md).

The model is f(x) = V phi(x) + b: phi the backbone's last-token feature (`last_token_features`),
V, b the linear head. Three instruments:

- feature change against the start checkpoint on a fixed set: the mean cosine similarity
  of phi_ft(x) with phi_0(x) and the mean norm of phi_ft(x) - phi_0(x);
- Fisher's discriminant ratio of the features: between-class over within-class scatter, as
  traces, tr(S_B) / tr(S_W), a number that grows as the classes separate;
- the NTK split (Prop. 4.1): Theta = P + F, the pre-train-effective part
  P(x, x') = (<phi(x), phi(x')> + 1) I_C (the kernel of the head's own parameters) and the
  FT-effective part F(x, x') = V J(x) J(x')^T V^T (J the backbone Jacobian of phi over the
  parameters that train), with the FT ratio: how much of one step's predicted function change
  goes through F.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ftdyn.analysis.ntk import empirical_ntk
from ftdyn.eval.scoring import per_prompt
from ftdyn.models.heads import last_token_features

log = logging.getLogger(__name__)


@torch.no_grad()
def last_features(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> Tensor:
    """phi(x) for each prompt, [n, hidden], float64: the feature the head reads, read as evaluation
    reads it (left-padded batches, the prompt fitted to the context)."""
    model.eval()
    rows = per_prompt(model, tokenizer, prompts, batch_size,
                      lambda b, _: last_token_features(model, b).double().cpu(), room=0)
    return torch.stack(list(rows))


def feature_change(before: Tensor, after: Tensor) -> dict[str, float]:
    """Mean cosine similarity of each fixed example's feature after with its feature before
    (`feature_cos`, 1: unchanged in direction) and mean norm of their difference (`feature_diff`,
    0: unchanged)."""
    cos = torch.nn.functional.cosine_similarity(after, before, dim=-1)
    return {"feature_cos": float(cos.mean()), "feature_diff": float((after - before).norm(dim=-1).mean())}


def fisher_ratio(features: Tensor, labels: Tensor) -> float:
    """Fisher's discriminant ratio tr(S_B) / tr(S_W) over the classes present:
    S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T, S_W = sum_i (phi_i - mu_{y_i})(phi_i - mu_{y_i})^T."""
    mean = features.mean(0)
    between = within = 0.0
    for c in labels.unique():
        members = features[labels == c]
        centre = members.mean(0)
        between += len(members) * float((centre - mean).square().sum())
        within += float((members - centre).square().sum())
    return between / within if within > 0 else float("inf")


class _HeadOnBackbone(nn.Module):
    """x -> V phi_theta(x) with V fixed: its NTK over the backbone's parameters is F. The input is
    one tensor [n, 2, L] (token ids, attention mask), the form `empirical_ntk` differentiates."""

    def __init__(self, model, weight: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return last_token_features(self.model, {"input_ids": x[:, 0], "attention_mask": x[:, 1]}) @ self.weight.T


def _packed(batch: dict[str, Tensor]) -> Tensor:
    return torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1)


def ntk_split(model, head: nn.Linear, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """P, F ([n*C, n*C], float64, index a*C + class) and the residuals delta_a = e_{y_a} -
    softmax(f(x_a)) ([n*C]) on a right-padded batch of training rows (`class_label`).

    F is over the backbone parameters that require grad now (every weight for FT, the adapters
    for LoRA); with none (a probe phase) F is 0: only the head moves the function.
    """
    was_training = model.training
    model.eval()
    weight = head.weight.detach()
    n, classes = batch["input_ids"].shape[0], weight.shape[0]
    with torch.no_grad():
        phi = last_token_features(model, batch).double()
        logits = phi @ weight.double().T + head.bias.detach().double()
    delta = (torch.nn.functional.one_hot(batch["class_label"], classes).double() - logits.softmax(-1)).reshape(-1)
    pre = torch.kron(phi @ phi.T + 1, torch.eye(classes, dtype=torch.float64, device=phi.device))
    if any(p.requires_grad for p in model.parameters()):
        wrapped, x = _HeadOnBackbone(model, weight), _packed(batch)
        kernel = empirical_ntk(wrapped, x, x, params=lambda name: name.startswith("model.")
                               and wrapped.get_parameter(name).requires_grad)  # [n, n, C, C]
        ft = kernel.double().permute(0, 2, 1, 3).reshape(n * classes, n * classes)
    else:
        ft = torch.zeros_like(pre)
    model.train(was_training)
    return pre.cpu(), ft.cpu(), delta.cpu()


def ft_ratio(pre: Tensor, ft: Tensor, delta: Tensor, classes: int) -> float:
    """Tomihari & Sato §5.3: mean over the sample's x of ||sum_i F(x, x_i) delta_i|| /
    ||sum_i (P + F)(x, x_i) delta_i||, the share of x's predicted change (Eq. 1) that F carries.

    Not bounded by 1 in general (P's and F's pushes on f(x) may partly cancel); `ft_share` is."""
    by_ft = (ft @ delta).reshape(-1, classes).norm(dim=-1)
    total = ((pre + ft) @ delta).reshape(-1, classes).norm(dim=-1)
    kept = total > 0
    return float((by_ft[kept] / total[kept]).mean()) if kept.any() else 0.0


def ft_share(pre: Tensor, ft: Tensor, delta: Tensor) -> float:
    """delta^T F delta / delta^T (P + F) delta: the share of a gradient step's first-order loss
    decrease that goes through F. P and F are Gram matrices, so each term is >= 0 and the share
    lies in [0, 1]."""
    by_ft, total = float(delta @ ft @ delta), float(delta @ (pre + ft) @ delta)
    return min(max(by_ft / total, 0.0), 1.0) if total > 0 else 0.0


def kernel_summary(name: str, kernel: Tensor) -> dict[str, float]:
    """`<name>_fro` (Frobenius norm), `<name>_rank` (numerical rank) and the singular values in
    decreasing order, `<name>_sv_<i>` (Tomihari & Sato's Table 9 normalises them by the first)."""
    values = torch.linalg.svdvals(kernel)
    out = {f"{name}_fro": float(kernel.norm()), f"{name}_rank": int(torch.linalg.matrix_rank(kernel))}
    return out | {f"{name}_sv_{i}": float(v) for i, v in enumerate(values)}


def ntk_measures(pre: Tensor, ft: Tensor, delta: Tensor, classes: int) -> dict[str, float]:
    """Every NTK row of a split: both kernels' norm, rank and spectrum, the FT ratio and share."""
    return {**kernel_summary("ntk_pre", pre), **kernel_summary("ntk_ft", ft),
            "ft_ratio": ft_ratio(pre, ft, delta, classes), "ft_share": ft_share(pre, ft, delta)}
