"""Sharpness by Hessian-vector power iteration, checked against eigenvalues computed directly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from warmup_lab.optim import GIAdam
from warmup_lab.sharpness import adam_preconditioner, instability_ratio, top_hessian_eigenvalue

def spd(eigenvalues, seed=0):
    """Q diag(eigenvalues) Q^T with a random orthogonal Q."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def quadratic(a):
    """0.5 x^T A x with x split over two parameters of different shapes (4 and 2x3)."""
    g = torch.Generator().manual_seed(1)
    x1 = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
    x2 = nn.Parameter(torch.randn(2, 3, generator=g, dtype=torch.float64))

    def loss_fn():
        x = torch.cat([x1, x2.reshape(-1)])
        return 0.5 * x @ a @ x

    return [x1, x2], loss_fn


def test_top_eigenvalue_of_a_quadratic():
    eig = [10.0, 6.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05]
    params, loss_fn = quadratic(spd(eig))
    value = top_hessian_eigenvalue(loss_fn, params, iters=100, tol=1e-10)
    assert value == pytest.approx(10.0, rel=1e-3)


def test_default_iterations_are_enough_with_a_gap():
    params, loss_fn = quadratic(spd([50.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 0.5, 0.2, 0.1]))
    assert top_hessian_eigenvalue(loss_fn, params) == pytest.approx(50.0, rel=1e-3)


def test_negative_curvature_does_not_hide_the_top_eigenvalue():
    """Power iteration alone would return -20 (largest magnitude); the top one is 4."""
    params, loss_fn = quadratic(spd([4.0, 2.0, 1.0, 0.5, 0.1, -0.5, -1.0, -3.0, -8.0, -20.0], seed=3))
    value = top_hessian_eigenvalue(loss_fn, params, iters=300, tol=1e-12)
    assert value == pytest.approx(4.0, rel=1e-3)


def test_preconditioned_sharpness_matches_linalg():
    a = spd([10.0, 6.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05], seed=2)
    params, loss_fn = quadratic(a)
    g = torch.Generator().manual_seed(5)
    p_diag = torch.rand(10, generator=g, dtype=torch.float64) * 10 + 0.1
    preconditioner = [p_diag[:4].clone(), p_diag[4:].reshape(2, 3).clone()]
    s = torch.diag(p_diag.rsqrt())
    expected = torch.linalg.eigvalsh(s @ a @ s).max().item()
    value = top_hessian_eigenvalue(loss_fn, params, iters=300, tol=1e-12, preconditioner=preconditioner)
    assert value == pytest.approx(expected, rel=1e-3)


def test_matches_the_full_hessian_of_a_small_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_of_flat(flat):
        chunks, i = [], 0
        for shape in shapes:
            n = math.prod(shape)
            chunks.append(flat[i:i + n].reshape(shape))
            i += n
        w1, b1, w2, b2 = chunks
        logits = torch.tanh(x @ w1.T + b1) @ w2.T + b2
        return nn.functional.cross_entropy(logits, y)

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of_flat, flat0))
    top = eig.max().item()
    loss_fn = lambda: nn.functional.cross_entropy(model(x), y)  # noqa: E731
    value = top_hessian_eigenvalue(loss_fn, params, iters=500, tol=1e-12)
    assert value == pytest.approx(top, rel=1e-3)


def test_monitor_leaves_training_state_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    loss_fn = lambda: ((model(x) - y) ** 2).mean()  # noqa: E731
    loss_fn().backward()
    model[0].weight.grad = None  # one parameter without .grad must stay without
    params = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()

    value = top_hessian_eigenvalue(loss_fn, model.parameters(), iters=5, buffers=model.buffers())

    assert math.isfinite(value) and value > 0
    for p, p0, g0 in zip(model.parameters(), params, grads):
        assert torch.equal(p, p0)
        assert (p.grad is None and g0 is None) or torch.equal(p.grad, g0)
    for b, b0 in zip(model.buffers(), buffers):
        assert torch.equal(b, b0)
    assert torch.equal(torch.get_rng_state(), rng)


def test_adam_preconditioner_reads_the_state_as_the_optimizer_uses_it():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    loss_fn = lambda: model(x).pow(2).mean()  # noqa: E731
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-6)
    assert adam_preconditioner(sgd) is None
    assert adam_preconditioner(adam) is None  # before the first step
    for _ in range(3):
        adam.zero_grad()
        loss_fn().backward()
        adam.step()
    for p, pre in zip(model.parameters(), adam_preconditioner(adam)):
        v = adam.state[p]["exp_avg_sq"]
        torch.testing.assert_close(pre, (v / (1 - 0.99**3)).sqrt() + 1e-6)

    for bias_correction in (True, False):
        gi = GIAdam(model.parameters(), lr=1e-3, bias_correction=bias_correction)
        gi.zero_grad()
        loss_fn().backward()
        gi.step()
        for p, pre in zip(model.parameters(), adam_preconditioner(gi)):
            v_hat = p.grad**2 / ((1 - 0.999) if bias_correction else 1.0)
            torch.testing.assert_close(pre, v_hat.sqrt() + 1e-8)


def test_adam_preconditioner_aligns_with_given_params():
    """Split param groups reorder the optimizer's params; `params=` restores the caller's order."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1]},
                             {"params": [p for p in params if p.ndim == 1], "weight_decay": 0.0}])
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    for p, pre in zip(params, adam_preconditioner(opt, params)):
        assert pre.shape == p.shape
        torch.testing.assert_close(pre, (opt.state[p]["exp_avg_sq"] / (1 - 0.999)).sqrt() + 1e-8)


def test_radam_preconditioner_is_identity_while_sgd_like():
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.RAdam([p])
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()  # rho_1 = 1 <= 5: RAdam takes an SGD-with-momentum step
    assert torch.equal(adam_preconditioner(opt)[0], torch.ones(3))


def test_instability_ratio():
    assert instability_ratio(0.1, 30.0) == pytest.approx(1.5)
    assert instability_ratio(0.1, 30.0, threshold=2 * 1.9) == pytest.approx(3.0 / 3.8)
