"""Hutchinson's trace estimator against exact traces."""

import pytest
import torch

from qrec.quant.hessian import hessian_trace, hutchinson_trace, rademacher_like


def _quadratic(A):
    return lambda x: 0.5 * x @ A @ x


def test_rademacher():
    v = rademacher_like(torch.empty(1000))
    assert set(v.unique().tolist()) == {-1.0, 1.0}


def test_quadratic_form_trace():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, generator=g, dtype=torch.float64)
    A = M @ M.T / 20 + torch.diag(torch.linspace(0.5, 3.0, 20, dtype=torch.float64))
    exact = float(torch.trace(A))
    x = torch.randn(20, generator=g, dtype=torch.float64)
    est, grads = hessian_trace(_quadratic(A), x, n_samples=4000, generator=g)
    # std of one sample = sqrt(2 sum_{i != j} A_ij^2); 4000 samples: well within 4 standard errors
    off = A - torch.diag(torch.diag(A))
    se = float(torch.sqrt(2 * (off ** 2).sum())) / 4000 ** 0.5
    assert abs(est - exact) < 4 * se + 1e-9, (est, exact, se)
    torch.testing.assert_close(grads[0], A @ x)


def test_diagonal_hessian_is_exact_with_one_sample():
    d = torch.tensor([1.0, 2.0, -0.5, 4.0], dtype=torch.float64)
    est, _ = hessian_trace(lambda x: 0.5 * (d * x * x).sum() + x.sum() ** 1, torch.ones(4, dtype=torch.float64), n_samples=1)
    assert est == pytest.approx(float(d.sum()))


def test_per_input_block_traces_and_cross_terms():
    # f(a, b) = 0.5 a^T P a + a^T C b + 0.5 b^T Q b: Hessian blocks P, Q; cross block C does not count
    g = torch.Generator().manual_seed(1)
    P = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
    Q = torch.diag(torch.tensor([2.0, 5.0, 7.0], dtype=torch.float64))
    C = torch.randn(2, 3, generator=g, dtype=torch.float64)
    a = torch.randn(2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    f = 0.5 * a @ P @ a + a @ C @ b + 0.5 * b @ Q @ b
    grads = torch.autograd.grad(f, [a, b], create_graph=True)
    (ta, tb), samples = hutchinson_trace(grads, [a, b], n_samples=3000, generator=g, per_input=True)
    se = float(2 * (C ** 2).sum()) ** 0.5 / 3000 ** 0.5
    assert abs(ta - 4.0) < 4 * se and abs(tb - 14.0) < 4 * se
    assert sum(samples) / len(samples) == pytest.approx(ta + tb)


def test_linear_loss_has_zero_trace():
    est, _ = hessian_trace(lambda x: (3 * x).sum(), torch.ones(5), n_samples=3)
    assert est == 0.0


def test_bpr_like_loss_matches_exact_hessian_trace():
    """The loss the low-bit GCN feeds in: BPR over (user, pos, neg) rows; exact trace by autograd."""
    g = torch.Generator().manual_seed(2)
    u = torch.randn(6, 4, generator=g, dtype=torch.float64)
    i = torch.randn(12, 4, generator=g, dtype=torch.float64)

    def loss(u, i):
        return torch.nn.functional.softplus((u * i[6:]).sum(-1) - (u * i[:6]).sum(-1)).mean()

    H = torch.autograd.functional.hessian(lambda z: loss(z[:24].reshape(6, 4), z[24:].reshape(12, 4)),
                                          torch.cat([u.flatten(), i.flatten()]))
    exact = float(torch.trace(H))
    est, _ = hessian_trace(loss, [u, i], n_samples=3000, generator=g)
    assert est == pytest.approx(exact, rel=0.1)
