"""``sign`` with a choice of surrogate gradients (the backward pass of binarisation).

Forward is always ``sign(x)`` with ``sign(0) := +1`` (so the value is never 0 and matches the bit
``x >= 0`` that ``qrec.retrieval.hamming.pack_signs`` stores). Backward returns
``grad * d(x)``, where ``d`` is one of:

``"ste"``       Straight-through estimator, identity clipped to ``|x| <= 1``:
                ``d(x) = 1{|x| <= 1}`` (Hubara et al. / BinaryConnect's "hard tanh" STE).
``"gaussian"``  BiGeaR's smoothed Dirac delta (derivative of ``erf(a x)``):
                ``d(x) = a / sqrt(pi) * exp(-(a x)^2)``; ``a = 1`` as in BiGeaR's code.
``"fourier"``   BGCH's Fourier-series view of sign. On ``(-H, H)`` the square wave of period ``2H`` is
                ``sign(x) = (4/pi) * sum_{k odd} sin(k pi x / H) / k``; truncating at ``k <= n`` and
                differentiating gives ``d(x) = (4/H) * sum_{k odd, k <= n} cos(k pi x / H)``.
                Defaults ``H = 1`` (embeddings of a trained LightGCN lie well inside ``(-1, 1)``;
                the series is periodic, so inputs beyond ``|x| > H`` get a wrapped, meaningless
                gradient: raise ``H`` if your inputs are larger) and ``n = 5`` (three terms:
                ``k = 1, 3, 5``). Note ``d(0) = 4 (n+1) / (2H) = 12`` with the defaults: the surrogate
                is much steeper at 0 than the STE's 1, which Adam's per-parameter normalisation absorbs
                but a plain SGD learning rate would not. BGCH's paper leaves ``H`` and ``n`` to tuning;
                these defaults are our choice.

``sign(x, estimator=..., a=..., H=..., n=...)`` is the functional entry point;
``surrogate_grad(x, ...)`` evaluates ``d(x)`` alone (used by the tests).
"""

from __future__ import annotations

import math

import torch

__all__ = ["sign", "hard_sign", "surrogate_grad", "ESTIMATORS"]

ESTIMATORS = ("ste", "gaussian", "fourier")


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = +1``, same dtype as ``x``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def surrogate_grad(x: torch.Tensor, estimator: str = "ste", a: float = 1.0, H: float = 1.0, n: int = 5) -> torch.Tensor:
    """The surrogate derivative ``d(x)`` of the chosen estimator (see the module docstring)."""
    if estimator == "ste":
        return (x.abs() <= 1).to(x.dtype)
    if estimator == "gaussian":
        return (a / math.sqrt(math.pi)) * torch.exp(-(a * x) ** 2)
    if estimator == "fourier":
        if n < 1:
            raise ValueError("fourier estimator needs n >= 1")
        out = torch.zeros_like(x)
        for k in range(1, int(n) + 1, 2):
            out = out + torch.cos(k * math.pi * x / H)
        return out * (4.0 / H)
    raise ValueError(f"unknown sign estimator {estimator!r}; choose one of {ESTIMATORS}")


class _Sign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, estimator, a, H, n):
        ctx.save_for_backward(x)
        ctx.cfg = (estimator, a, H, n)
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        estimator, a, H, n = ctx.cfg
        return grad * surrogate_grad(x, estimator, a, H, n), None, None, None, None


def sign(x: torch.Tensor, estimator: str = "ste", a: float = 1.0, H: float = 1.0, n: int = 5) -> torch.Tensor:
    """``sign(x)`` (``sign(0) = +1``) whose backward uses the named surrogate derivative."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown sign estimator {estimator!r}; choose one of {ESTIMATORS}")
    return _Sign.apply(x, estimator, float(a), float(H), int(n))
