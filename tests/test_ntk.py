"""The empirical NTK: exact on a linear model, and a first-order prediction of an SGD step."""

import pytest
import torch
from torch import nn

from ftdyn.analysis.ntk import empirical_ntk, jacobian, kernel_product, predicted_change


def integer_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    """Small integers in float64: every product and sum below is exact, so equality is exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (n, d), generator=g).double()


class Scalar(nn.Module):
    """A model with one output per input, [n]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).squeeze(-1)


def test_linear_ntk_is_gram_matrix_exactly():
    x1, x2 = integer_inputs(5, 4, 0), integer_inputs(3, 4, 1)
    with_bias = Scalar(nn.Linear(4, 1).double())
    assert torch.equal(empirical_ntk(with_bias, x1, x2), x1 @ x2.T + 1)
    no_bias = Scalar(nn.Linear(4, 1, bias=False).double())
    assert torch.equal(empirical_ntk(no_bias, x1, x2), x1 @ x2.T)


def test_linear_ntk_with_k_outputs_is_gram_times_identity():
    x1, x2 = integer_inputs(4, 3, 2), integer_inputs(2, 3, 3)
    kernel = empirical_ntk(nn.Linear(3, 2).double(), x1, x2)
    assert kernel.shape == (4, 2, 2, 2)
    expected = (x1 @ x2.T + 1)[:, :, None, None] * torch.eye(2, dtype=torch.float64)
    assert torch.equal(kernel, expected)


def test_params_restrict_the_kernel():
    """The kernel by the last layer alone is the feature Gram matrix + 1 (the LP-FT "pre-train-
    effective" part); by all parameters it is larger; an unknown name is refused by name."""
    torch.manual_seed(0)
    net = Scalar(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    head_only = empirical_ntk(net, x, x, params=["net.2."])
    feats = net.net[1](net.net[0](x)).detach()
    assert torch.allclose(head_only, feats @ feats.T + 1, atol=1e-12)
    backbone = empirical_ntk(net, x, x, params=lambda name: name.startswith("net.0."))
    assert torch.allclose(empirical_ntk(net, x, x), head_only + backbone, atol=1e-12)
    assert jacobian(net, x, ["net.2.weight"]).shape == (6, 1, 8)
    with pytest.raises(ValueError, match="net.9"):
        empirical_ntk(net, x, x, params=["net.9."])


def sgd_step_error(lr: float) -> float:
    """Relative error of the NTK's prediction of one SGD step's change on held-out probes."""
    torch.manual_seed(0)
    net = Scalar(nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                               nn.Linear(32, 1))).double()
    x_train, y_train = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    probe = torch.randn(10, 2, dtype=torch.float64)
    out = net(x_train).detach().requires_grad_(True)
    loss = ((out - y_train) ** 2).mean()
    (grad_out,) = torch.autograd.grad(loss, out)
    predicted = predicted_change(empirical_ntk(net, probe, x_train), grad_out, lr)
    before = net(probe).detach()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    ((net(x_train) - y_train) ** 2).mean().backward()
    opt.step()
    actual = net(probe).detach() - before
    return float((predicted - actual).norm() / actual.norm())


def test_ntk_predicts_a_small_step_to_first_order():
    errors = [sgd_step_error(lr) for lr in (1e-1, 1e-2, 1e-3)]
    assert errors[0] < 0.1
    # second-order remainder: the relative error falls about tenfold per tenfold smaller step
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5
    assert errors[2] < 1e-3


def test_per_example_and_batched_jacobians_agree():
    """jacrev of the batched forward (the default: any model) and vmap over single inputs (linear
    cost, for models that can be vmapped) are the same Jacobian."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(jacobian(net, x), jacobian(net, x, per_example=True), atol=1e-14)
    assert torch.allclose(empirical_ntk(net, x, x[:2]), empirical_ntk(net, x, x[:2], per_example=True), atol=1e-12)


def test_kernel_product_is_the_kernel_times_the_vector():
    """The matrix-free product (a vjp, then a jvp) equals forming K and multiplying, for scalar
    and k-dimensional outputs and a parameter subset."""
    torch.manual_seed(2)
    scalar = Scalar(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))).double()
    x, x_train = torch.randn(7, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    c = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(kernel_product(scalar, x, x_train, c), empirical_ntk(scalar, x, x_train) @ c, atol=1e-12)
    head = ["net.2."]
    assert torch.allclose(kernel_product(scalar, x, x_train, c, head),
                          empirical_ntk(scalar, x, x_train, head) @ c, atol=1e-12)
    multi = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    c3 = torch.randn(5, 3, dtype=torch.float64)
    expected = torch.einsum("abij,bj->ai", empirical_ntk(multi, x, x_train), c3)
    assert torch.allclose(kernel_product(multi, x, x_train, c3), expected, atol=1e-12)
