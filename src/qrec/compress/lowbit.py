"""Per-row b-bit tables: the GCN papers' quantizers as embedding tables, for every backbone.

The two quantizers of ``qrec.quant`` that the graph models apply to their final embeddings, here applied to a
table's rows, so a 1-bit GMF or a 2-bit SASRec item table is one spec string:

  bin[-ste|-gaussian|-fourier]   1 bit per value: ``sign(w) * mean|w|`` per row (BiGeaR's / L2Q's binarization);
                                 the backward pass is the named surrogate of ``qrec.quant.sign`` (default ``ste``).
  q<b>   (1 <= b <= 8)           b bits per value on a symmetric per-row grid (HQ-GNN's uniform quantizer,
                                 ``qrec.quant.uniform``: step ``k_b mean|w|``, MSE-optimal for Gaussian rows),
                                 straight-through inside the clipping range.

Both train a float latent table (the quantized rows are what the model sees, forward and eval alike) and serve
the same form: the codes packed at ``b`` bits per value (one stream, ``qrec.quant.packing``) and one float32 step
per row, ``value = step * (code - (2^b - 1) / 2)``: ``8 ceil(n d b / 8) + 32 n`` bits. At one bit the grid is
``+-step/2 = +-mean|w|``, so ``bin`` and ``q1`` store and decode alike; they differ only in their gradient.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from qrec.compress.base import EmbeddingTable
from qrec.quant.packing import pack_bits, packed_nbytes, unpack_bits
from qrec.quant.sign import ESTIMATORS as SIGN_ESTIMATORS
from qrec.quant.sign import sign
from qrec.quant.uniform import dequantize_codes, fake_quantize, node_step, quantize_codes

# The spec families this module owns (``qrec.compress.spec`` registers them).
BIN_PATTERN = re.compile(r"bin(?:-(?P<estimator>" + "|".join(SIGN_ESTIMATORS) + r"))?")
UNIFORM_PATTERN = re.compile(r"q(?P<b>\d+)")
MAX_BITS = 8


def lowbit_bits(n: int, d: int, bits: int) -> int:
    """Serving size of ``q<b>`` / ``bin``: the packed code stream plus a float32 step per row."""
    return 8 * packed_nbytes(n * d, bits) + 32 * n


def bits_of_spec(spec: str) -> int:
    """The bit width a ``bin`` / ``q<b>`` spec names."""
    spec = spec.strip()
    if BIN_PATTERN.fullmatch(spec):
        return 1
    m = UNIFORM_PATTERN.fullmatch(spec)
    if m is None or not 1 <= int(m["b"]) <= MAX_BITS:
        raise ValueError(f"{spec!r} is not a low-bit spec (bin[-estimator] or q1..q{MAX_BITS})")
    return int(m["b"])


class LowBitEmbedding(EmbeddingTable):
    """A float latent ``n x d`` table whose rows are seen quantized to ``bits`` bits per value, per-row step."""

    family = "lowbit"

    def __init__(self, num_embeddings: int, dim: int, bits: int, sign_estimator: str | None = None,
                 init_std: float = 0.01):
        super().__init__(num_embeddings, dim)
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"low-bit tables take 1..{MAX_BITS} bits, got {bits}")
        if sign_estimator is not None and (bits != 1 or sign_estimator not in SIGN_ESTIMATORS):
            raise ValueError(f"a sign estimator needs 1 bit and one of {SIGN_ESTIMATORS}, got {sign_estimator!r}")
        self.bits = int(bits)
        self.sign_estimator = sign_estimator
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, std=init_std)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int, sign_estimator: str | None = None) -> "LowBitEmbedding":
        """Post-training quantization of a trained float table: a copy of ``weight``, seen quantized."""
        weight = weight.detach().float()
        table = cls.blank(weight.shape[0], weight.shape[1], bits, sign_estimator).to(weight.device)
        with torch.no_grad():
            table.weight.copy_(weight)
        return table

    @property
    def spec(self) -> str:
        if self.sign_estimator is None:
            return f"q{self.bits}"
        return "bin" if self.sign_estimator == "ste" else f"bin-{self.sign_estimator}"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids]
        step = node_step(rows, self.bits)  # per row, from the row itself: the same for a row looked up alone
        if self.sign_estimator is not None:  # +-step/2 exactly: the 1-bit grid, with a sign surrogate gradient
            return sign(rows, self.sign_estimator) * (step / 2)
        return fake_quantize(rows, self.bits, step)

    def steps(self) -> torch.Tensor:
        """The per-row step ``(n,)`` (no gradient)."""
        return node_step(self.weight.detach(), self.bits).squeeze(-1)

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """The ``(n, d)`` grid index of every value, in ``[0, 2^b)``: what a server stores (with the steps)."""
        return quantize_codes(self.weight.detach(), self.bits, self.steps().unsqueeze(-1))

    def export(self) -> dict[str, torch.Tensor]:
        return {"codes": pack_bits(self.codes(), self.bits).cpu(),
                "step": self.steps().to("cpu", torch.float32).contiguous()}

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        bits = bits_of_spec(spec)
        codes = unpack_bits(tensors["codes"], bits, num_embeddings * dim).reshape(num_embeddings, dim)
        return dequantize_codes(codes, bits, tensors["step"].float().unsqueeze(-1))
