"""Scalar quantization, ``b`` bits per value (MGQE paper section 5.4, baseline SQ): ``sq<b>`` and ``sq<b>-ptq``.

Per dimension ``j`` the table's range ``[lo_j, hi_j]`` (its min and max) is split into ``L = 2^b`` evenly
spaced levels, as ``tf.quantization.quantize`` (mode MIN_COMBINED, round HALF_AWAY_FROM_ZERO) does::

    step_j = (hi_j - lo_j) / (L - 1)
    code   = clamp(floor((w - lo_j) / step_j + 1/2), 0, L - 1)        # values are >= 0: half away from zero
    w_hat  = lo_j + code * step_j                                    # level j = lo + j (hi - lo) / (L - 1)

A constant dimension (``hi_j == lo_j``) has ``step_j = 0``: every code is 0 and decodes to ``lo_j``.

Two ways to train:

* ``sq<b>`` (quantization-aware, default): a float latent table ``W``; every forward fake-quantizes the
  looked-up rows with the *current* table's min/max (recomputed from ``W`` each call, no gradient through
  them) and passes gradients straight through to ``W``. The range is the table's own, so nothing is ever
  clipped and the straight-through identity is exact on the whole range.
* ``sq<b>-ptq`` (post-training): trains as a plain float table; in eval mode (what evaluation and serving
  see) it returns the quantized table. ``ScalarQuantized.from_float(weight, b)`` quantizes a trained table.

Serving holds the packed codes (``n d`` codes of ``b`` bits, ``ceil(n d b / 8)`` bytes) plus ``lo`` and ``hi``
as float32: ``8 ceil(n d b / 8) + 64 d`` bits. Table 1 of the paper counts ``n d b`` and leaves out the
``64 d`` bits of ranges (0.2% of the codes at n = 3416, d = 64, b = 8).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from qrec.compress.base import EmbeddingTable
from qrec.quant.packing import pack_bits, packed_nbytes, unpack_bits
from qrec.quant.ste import straight_through

# The spec family this module owns (``qrec.compress.spec`` registers it): b bits per dim, optionally post-training.
SPEC_PATTERN = re.compile(r"sq(?P<b>\d+)(?P<ptq>-ptq)?")


def scalar_bits(n: int, d: int, b: int) -> int:
    """Serving size of ``sq<b>``: the packed code stream plus float32 ``lo`` and ``hi`` per dimension."""
    return 8 * packed_nbytes(n * d, b) + 2 * 32 * d


def quantize(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in ``[0, 2^bits)`` of ``w`` (..., d) on the even grid of ``[lo, hi]`` (d,), as int64."""
    levels = (1 << bits) - 1
    step = _step(lo, hi, bits)
    safe = torch.where(step > 0, step, torch.ones_like(step))  # constant dimension: (w - lo) = 0 -> code 0
    return torch.floor((w - lo) / safe + 0.5).clamp_(0, levels).to(torch.int64)


def dequantize(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """``lo + code * step``. Written as two separate ops (no fused multiply-add) so CPU and GPU round alike."""
    return codes.to(lo.dtype) * _step(lo, hi, bits) + lo


def _step(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    return (hi - lo) / float((1 << bits) - 1)


class ScalarQuantized(EmbeddingTable):
    """``b``-bit even-grid scalar quantization of a float latent table, per-dimension min/max."""

    family = "sq"

    def __init__(self, num_embeddings: int, dim: int, bits: int, ptq: bool = False, init_std: float = 0.01):
        super().__init__(num_embeddings, dim)
        if not 1 <= bits <= 16:
            raise ValueError(f"scalar quantization needs 1..16 bits, got {bits}")
        self.bits = int(bits)
        self.ptq = bool(ptq)
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, std=init_std)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int) -> "ScalarQuantized":
        """Post-training SQ of a trained float table: a ``sq<b>-ptq`` table holding a copy of ``weight``.

        Its eval-mode forward, ``all()`` and ``export()`` give the quantized table (min/max of ``weight``).
        """
        weight = weight.detach().float()
        table = cls.blank(weight.shape[0], weight.shape[1], bits, ptq=True).to(weight.device)
        with torch.no_grad():
            table.weight.copy_(weight)
        return table

    @property
    def spec(self) -> str:
        return f"sq{self.bits}" + ("-ptq" if self.ptq else "")

    def ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension ``(lo, hi)`` of the current latent table (no gradient)."""
        lo, hi = torch.aminmax(self.weight.detach(), dim=0)
        return lo, hi

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids]
        if self.ptq and self.training:
            return rows  # post-training quantization: train in float
        lo, hi = self.ranges()
        q = dequantize(quantize(rows.detach(), lo, hi, self.bits), lo, hi, self.bits)
        return straight_through(rows, q)

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """The ``(n, d)`` bucket of every coordinate: what a server stores (with the per-dimension ranges)."""
        lo, hi = self.ranges()
        return quantize(self.weight.detach(), lo, hi, self.bits)

    def export(self) -> dict[str, torch.Tensor]:
        lo, hi = self.ranges()
        codes = self.codes()
        return {
            "codes": pack_bits(codes, self.bits).cpu(),
            "lo": lo.to("cpu", torch.float32).contiguous(),
            "hi": hi.to("cpu", torch.float32).contiguous(),
        }

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        bits = _bits_of(spec)
        codes = unpack_bits(tensors["codes"], bits, num_embeddings * dim).reshape(num_embeddings, dim)
        return dequantize(codes, tensors["lo"].float(), tensors["hi"].float(), bits)


def _bits_of(spec: str) -> int:
    return int(SPEC_PATTERN.fullmatch(spec.strip())["b"])
