"""The empirical neural tangent kernel, k(x, x') = <df(x)/dtheta, df(x')/dtheta>, with torch.func.

The kernel says how a gradient step on some inputs moves the function on others: for plain SGD
with learning rate lr on a loss L(f(X)), theta' = theta - lr * J(X)^T dL/df, so to first order

    delta f(x) = J(x) (theta' - theta) = -lr * K(x, X) @ dL/df(X).

That is the CMU poster's "the NTK predicts forgetting" (Kapoor & Kotha): a point drifts in proportion
to its kernel with the points being fitted. `params` restricts the kernel to named parameters
(the backbone alone for the LP-FT split of Tomihari & Sato 2024).

Shapes: a model whose output for a batch of n is [n] (one scalar per input) gives a kernel
[n1, n2]; one whose output is [n, k] gives [n1, n2, k, k], entry [a, b, i, j] being
<df_i(x1_a)/dtheta, df_j(x2_b)/dtheta>. Put the model in eval mode first (dropout would make
the Jacobian random), and call it on batches whose rows do not interact (no batch norm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

ParamSelect = Iterable[str] | Callable[[str], bool] | None


def selected_params(model: nn.Module, params: ParamSelect = None) -> dict[str, Tensor]:
    """The parameters the kernel differentiates by, by name.

    Args:
        params: None for every parameter that requires grad (what training would move); a
            predicate on the name (e.g. ``lambda n: not n.startswith("score.")``); or names, each
            a full parameter name or a module prefix ending in "." (``"backbone."``).
    """
    named = dict(model.named_parameters())
    if params is None:
        chosen = {n: p for n, p in named.items() if p.requires_grad}
    elif callable(params):
        chosen = {n: p for n, p in named.items() if params(n)}
    else:
        wanted = list(params)
        unknown = [w for w in wanted if w not in named and not any(n.startswith(w) for n in named)]
        if unknown:
            raise ValueError(f"empirical_ntk params: no parameter named or prefixed {unknown}; "
                             f"the model has {sorted(named)[:8]}{' ...' if len(named) > 8 else ''}")
        chosen = {n: p for n, p in named.items() if n in wanted or any(n.startswith(w) for w in wanted)}
    if not chosen:
        raise ValueError("empirical_ntk params: the selection holds no parameter"
                         + (" (params=None takes those that require grad; pass a predicate such as "
                            "lambda name: True for a frozen model)" if params is None else ""))
    return {n: p.detach() for n, p in chosen.items()}


def jacobian(model: nn.Module, x: Tensor, params: ParamSelect = None, per_example: bool = False) -> Tensor:
    """J(x): the output's derivative by the selected parameters, flattened to [n, k, P].

    Args:
        per_example: False (the default) differentiates the batched forward once per output entry
            (jacrev vmaps the backward over the n*k outputs): any model works, transformers ones
            with data-dependent attention masks included, at a cost quadratic in n. True vmaps a
            per-input jacrev over the batch instead, linear in n, for models whose forward can
            be vmapped over single inputs (an MLP: ~6x faster at 136 inputs).
    """
    chosen = selected_params(model, params)

    def batched(theta: dict[str, Tensor], inputs: Tensor) -> Tensor:  # parameters left out keep their values
        out = functional_call(model, theta, (inputs,))
        return out.reshape(out.shape[0], -1)

    if per_example:
        jac = vmap(jacrev(lambda theta, one: batched(theta, one.unsqueeze(0))[0]), in_dims=(None, 0))(chosen, x)
    else:
        jac = jacrev(batched)(chosen, x)  # name -> [n, k, *param.shape]
    n, k = next(iter(jac.values())).shape[:2]
    return torch.cat([j.reshape(n, k, -1) for j in jac.values()], dim=2)


def scalar_output(model: nn.Module, x: Tensor) -> bool:
    """Whether the model gives one number per input ([n]) rather than k of them ([n, k])."""
    with torch.no_grad():
        return model(x[:1]).dim() == 1


def empirical_ntk(model: nn.Module, x1: Tensor, x2: Tensor, params: ParamSelect = None,
                  per_example: bool = False) -> Tensor:
    """K(x1, x2) = J(x1) J(x2)^T over the selected parameters: [n1, n2] or [n1, n2, k, k].

    See the module docstring for shapes; `params` as in `selected_params`, `per_example` as in
    `jacobian`.
    """
    j1, j2 = jacobian(model, x1, params, per_example), jacobian(model, x2, params, per_example)
    return gram(j1, j2, scalar_output(model, x1))


def gram(j1: Tensor, j2: Tensor, scalar: bool) -> Tensor:
    """The kernel from two Jacobians [n1, k, P] and [n2, k, P] (`jacobian`): reuse one side's
    Jacobian across many kernels, as a trace over training steps does for its fixed points."""
    kernel = torch.einsum("aip,bjp->abij", j1, j2)
    return kernel[:, :, 0, 0] if scalar else kernel


def kernel_product(model: nn.Module, x: Tensor, x_train: Tensor, cotangent: Tensor,
                   params: ParamSelect = None) -> Tensor:
    """K(x, x_train) @ cotangent without forming the kernel: one vector-Jacobian product on the
    training points, J(x_train)^T c (a direction in parameter space, the gradient when c is
    dL/df), then one Jacobian-vector product on x. Two passes whatever the sizes, where the
    kernel needs a backward pass per output: the way to trace every step of a wide model.

    Shapes as `empirical_ntk`'s: `cotangent` is [n_train] (or [n_train, k]); the result [n] (or [n, k]).
    """
    chosen = selected_params(model, params)

    def outputs(inputs: Tensor):
        return lambda theta: functional_call(model, theta, (inputs,))

    _, pullback = vjp(outputs(x_train), chosen)
    (direction,) = pullback(cotangent.to(dtype=next(iter(chosen.values())).dtype))
    return function_change(model, x, direction)


def function_change(model: nn.Module, x: Tensor, direction: dict[str, Tensor]) -> Tensor:
    """J(x) @ direction: the first-order change of the model's output on x when the named
    parameters move by `direction` (the others keep their values), by one forward-mode pass.

    A gradient step's direction -lr * grad L(B) gives the kernel step -lr * K(x, B) @ dL/df(B)
    whatever the loss and outputs on B (`ftdyn.analysis.ntk_trace`). Attention runs on torch's
    math backend here: the fused CPU kernel has no forward-mode derivative.
    """
    chosen = {n: p.detach() for n, p in model.named_parameters() if n in direction}
    with sdpa_kernel(SDPBackend.MATH):
        return jvp(lambda theta: functional_call(model, theta, (x,)), (chosen,),
                   ({n: direction[n] for n in chosen},))[1]


def predicted_change(kernel: Tensor, grad_out: Tensor, lr: float) -> Tensor:
    """The linearised change of f on trace points after one SGD step: -lr * K(x, X) @ dL/df(X).

    Args:
        kernel: K(x, X) from `empirical_ntk`, [m, n] or [m, n, k, k].
        grad_out: dL/df at the training points X, [n] or [n, k] (for a mean loss this carries the
            1/n).
        lr: the SGD learning rate (plain SGD: for Adam the step is not a kernel step).
    """
    if kernel.dim() == 2:
        return -lr * kernel @ grad_out
    return -lr * torch.einsum("abij,bj->ai", kernel, grad_out)
