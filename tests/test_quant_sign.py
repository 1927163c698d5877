"""sign's forward and its three surrogate gradients against their formulas."""

import math

import pytest
import torch

from qrec.quant.sign import hard_sign, sign, surrogate_grad

X = torch.tensor([-2.5, -1.0, -0.7, -0.1, 0.0, 0.05, 0.3, 0.999, 1.0, 1.5, 3.0], dtype=torch.float64)


def _grad(estimator, upstream, **kw):
    x = X.clone().requires_grad_(True)
    y = sign(x, estimator, **kw)
    y.backward(upstream)
    return y.detach(), x.grad


@pytest.mark.parametrize("estimator", ["ste", "gaussian", "fourier"])
def test_forward_is_sign_with_zero_positive(estimator):
    y, _ = _grad(estimator, torch.ones_like(X))
    assert torch.equal(y, torch.where(X >= 0, 1.0, -1.0).double())
    assert hard_sign(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_ste_gradient_is_clipped_identity():
    up = torch.linspace(-1, 2, X.numel(), dtype=torch.float64)
    _, g = _grad("ste", up)
    want = up * (X.abs() <= 1).double()
    assert torch.equal(g, want)


@pytest.mark.parametrize("a", [1.0, 2.5])
def test_gaussian_gradient_formula(a):
    up = torch.linspace(-1, 2, X.numel(), dtype=torch.float64)
    _, g = _grad("gaussian", up, a=a)
    want = up * torch.tensor([a / math.sqrt(math.pi) * math.exp(-(a * x) ** 2) for x in X.tolist()], dtype=torch.float64)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("H,n", [(1.0, 5), (2.0, 1), (0.5, 9)])
def test_fourier_gradient_formula_and_series(H, n):
    up = torch.ones_like(X)
    _, g = _grad("fourier", up, H=H, n=n)
    want = torch.tensor([(4 / H) * sum(math.cos(k * math.pi * x / H) for k in range(1, n + 1, 2)) for x in X.tolist()],
                        dtype=torch.float64)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)

    # it is the derivative of the truncated series (4/pi) sum sin(k pi x / H) / k (finite differences) ...
    def series(x):
        return (4 / math.pi) * sum(torch.sin(k * math.pi * x / H) / k for k in range(1, n + 1, 2))

    h = 1e-6
    fd = (series(X + h) - series(X - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-5)


def test_fourier_series_approaches_sign_inside_period():
    x = torch.tensor([-0.6, -0.4, 0.4, 0.6], dtype=torch.float64)
    s = (4 / math.pi) * sum(torch.sin(k * math.pi * x) / k for k in range(1, 200, 2))
    torch.testing.assert_close(s, torch.sign(x), atol=2e-2, rtol=0)


def test_unknown_estimator():
    with pytest.raises(ValueError):
        sign(X, "nope")
    with pytest.raises(ValueError):
        surrogate_grad(X, "nope")
