"""Symmetric b-bit uniform quantizer with a plain STE and EWGS's generalized STE.

The grid (mid-rise, ``2^b`` levels, no zero level, so ``b = 1`` is exactly ``sign``)::

    u   = x / step                                  (step > 0, per node, treated as a constant)
    u_q = clamp(floor(u) + 1/2, -(2^(b-1)) + 1/2, 2^(b-1) - 1/2)
    x_q = step * u_q                                values  step * {..., -3/2, -1/2, 1/2, 3/2, ...}
    c   = u_q + (2^b - 1)/2  in {0, ..., 2^b - 1}   the stored integer code

For ``b = 1`` the levels are ``+-step/2``; with ``step = 2 mean|x|`` that is BiGeaR's
``mean|x| * sign(x)``.

Scale (``node_step``): statistics-based, per node (per row): ``step = k_b * mean(|x|)`` where ``k_b`` is
the step of the MSE-optimal uniform quantizer for Gaussian data (Max 1960; Jayant & Noll, Table 4.3)
divided by ``E|x| = sqrt(2/pi) sigma``: k_1 = 2.0 (exact), k_2 = 1.248, k_3 = 0.734, k_4 = 0.420, ...
Why not a learned (LSQ) scale: a per-node learned step is one more parameter per node with a sparse,
noisy gradient and its own learning-rate tuning; the statistic costs nothing, cannot diverge, tracks
the embeddings as they train, and reduces to BiGeaR's ``alpha = mean|e|`` at one bit. ``"maxabs"``
(``step = 2 max|x| / 2^b``, no clipping) is offered as the other classic choice; at one bit ``"norm"``
(``step = 2 |x| / sqrt(d)``: levels ``+-|x| / sqrt(d)``, the code keeps the row's norm) is what SimHash's angle
estimate needs (``qrec.models.lowbit_gcn``, ``similarity="angular"``). The step is detached
(no gradient flows through it); the clipping of ``u`` is where the gradient is masked.

Gradients (w.r.t. ``u``; autograd's chain rule through ``u = x/step`` and ``x_q = step u_q`` turns them
into gradients w.r.t. ``x``, and the scaling term is unit-free, so the two domains agree):

``"ste"``   ``g_u = g_{u_q} * 1{|u| <= 2^(b-1)}`` (identity inside the clipping range).
``"ewgs"``  ``g_u = g_{u_q} * (1 + delta * sign(g_{u_q}) * (u - u_q)) * 1{|u| <= 2^(b-1)}``
            (Lee et al., "Network Quantization with Element-wise Gradient Scaling", CVPR 2021, eq. 4).
            ``|u - u_q| <= 1/2``, so ``delta <= 2`` keeps the factor in ``[0, 2]`` (it never flips the
            gradient); ``ewgs_delta`` clamps to ``[0, delta_max]``. ``delta`` comes from the loss
            Hessian, see ``qrec.quant.hessian`` and ``qrec.models.lowbit_gcn``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "GAUSSIAN_STEP_OVER_MEANABS",
    "node_step",
    "quantize_codes",
    "dequantize_codes",
    "fake_quantize",
    "round_ste",
    "ewgs_delta",
    "int8_codes",
]

# MSE-optimal uniform step for a unit Gaussian (Max 1960 / Jayant & Noll), divided by E|x| = sqrt(2/pi).
_GAUSS_OPT_STEP = {1: 2.0 * math.sqrt(2.0 / math.pi), 2: 0.9957, 3: 0.5860, 4: 0.3352, 5: 0.1881, 6: 0.1041, 7: 0.0569, 8: 0.0308}
GAUSSIAN_STEP_OVER_MEANABS = {b: s / math.sqrt(2.0 / math.pi) for b, s in _GAUSS_OPT_STEP.items()}


def _check_bits(bits: int) -> int:
    bits = int(bits)
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return bits


def node_step(x: torch.Tensor, bits: int, method: str = "meanabs", eps: float = 1e-12) -> torch.Tensor:
    """Per-row quantization step, shape ``x.shape[:-1] + (1,)``, detached."""
    bits = _check_bits(bits)
    with torch.no_grad():
        if method == "meanabs":
            step = GAUSSIAN_STEP_OVER_MEANABS[bits] * x.abs().mean(dim=-1, keepdim=True)
        elif method == "maxabs":
            step = x.abs().amax(dim=-1, keepdim=True) * (2.0 / 2 ** bits)
        elif method == "norm" and bits == 1:  # levels +-|x|/sqrt(d): the codes keep the row's norm
            step = 2.0 * x.norm(dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
        else:
            raise ValueError(f"unknown scale method {method!r} at {bits} bits; use 'meanabs', 'maxabs' or (1 bit) 'norm'")
        return step.clamp_min(eps)


def _round_grid(u: torch.Tensor, bits: int) -> torch.Tensor:
    half = 2 ** (bits - 1)
    return torch.clamp(torch.floor(u) + 0.5, -half + 0.5, half - 0.5)


class _RoundGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, bits, estimator, delta):
        uq = _round_grid(u, bits)
        ctx.save_for_backward(u, uq)
        ctx.cfg = (bits, estimator, float(delta))
        return uq

    @staticmethod
    def backward(ctx, g):
        u, uq = ctx.saved_tensors
        bits, estimator, delta = ctx.cfg
        inside = (u.abs() <= 2 ** (bits - 1)).to(g.dtype)
        if estimator == "ste" or delta == 0.0:
            return g * inside, None, None, None
        return g * inside * (1.0 + delta * torch.sign(g) * (u - uq)), None, None, None


def round_ste(u: torch.Tensor, bits: int, estimator: str = "ste", delta: float = 0.0) -> torch.Tensor:
    """``u_q`` on the b-bit grid (in step units) with the chosen backward (``"ste"`` or ``"ewgs"``)."""
    bits = _check_bits(bits)
    if estimator not in ("ste", "ewgs"):
        raise ValueError(f"unknown estimator {estimator!r}; use 'ste' or 'ewgs'")
    return _RoundGrid.apply(u, bits, estimator, float(delta))


def fake_quantize(x: torch.Tensor, bits: int, step: torch.Tensor | None = None, estimator: str = "ste",
                  delta: float = 0.0, scale_method: str = "meanabs") -> torch.Tensor:
    """``x_q = step * u_q(x / step)``: the dequantized value, differentiable via the chosen estimator."""
    if step is None:
        step = node_step(x, bits, scale_method)
    step = step.detach()
    return step * round_ste(x / step, bits, estimator, delta)


def quantize_codes(x: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """Integer codes ``c`` in ``[0, 2^b - 1]`` (uint8) of ``x`` on the grid of ``step``."""
    bits = _check_bits(bits)
    with torch.no_grad():
        uq = _round_grid(x / step, bits)
        return (uq + (2 ** bits - 1) / 2).round().to(torch.uint8)


def dequantize_codes(c: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """``step * (c - (2^b - 1)/2)``: the float values of the codes."""
    bits = _check_bits(bits)
    return step * (c.to(step.dtype) - (2 ** bits - 1) / 2)


def int8_codes(c: torch.Tensor, bits: int, step: torch.Tensor):
    """Signed int8 codes with per-row ``scale`` and ``zero`` such that ``value = scale * (q - zero)``.

    ``b <= 7``: ``q = 2c - (2^b - 1)`` (odd integers, ``|q| <= 127``), ``scale = step/2``, ``zero = 0``:
    the integer dot product needs no zero-point correction.
    ``b = 8``: ``q = c - 128``, ``scale = step``, ``zero = -1/2``.
    Returns ``(q, scale, zero)`` with ``scale``/``zero`` of shape ``(n,)``.
    """
    bits = _check_bits(bits)
    step = step.reshape(-1).float()
    if bits <= 7:
        q = (2 * c.to(torch.int16) - (2 ** bits - 1)).to(torch.int8)
        return q, step / 2, torch.zeros_like(step)
    q = (c.to(torch.int16) - 128).to(torch.int8)
    return q, step, torch.full_like(step, -0.5)


def ewgs_delta(trace_over_n: float, grad_std: float, delta_max: float = 2.0) -> float:
    """EWGS's scaling factor ``delta = (Tr(H)/N) / (3 std(g))``, clamped to ``[0, delta_max]``."""
    if not math.isfinite(trace_over_n) or not math.isfinite(grad_std) or grad_std <= 0:
        return 0.0
    return float(min(max(trace_over_n / (3.0 * grad_std), 0.0), delta_max))
