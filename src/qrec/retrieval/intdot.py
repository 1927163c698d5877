"""Scoring b-bit codes with integer dot products (int32 accumulation), then dequantizing.

A node's vector is ``x = scale * (q - zero)`` with ``q`` a row of int8 codes (``qrec.quant.uniform.int8_codes``
makes them from b-bit grid codes), ``scale`` and ``zero`` one float each per row. Then exactly::

    <x_u, x_i> = s_u s_i ( <q_u, q_i> - z_i sum(q_u) - z_u sum(q_i) + d z_u z_i )

The integer part ``<q_u, q_i>`` is computed by ``torch._int_mm`` (int8 x int8 -> int32, tensor cores) on CUDA,
and on the CPU by a float32 GEMM (faster there than torch's int8 kernel), which is exact: every partial sum is
an integer of magnitude ``<= d * 128 * 128 < 2^24`` for ``d <= 1024`` (float64 above). The correction
terms are rank-one and cost ``O(B + N)`` per row block. For the symmetric grids of ``b <= 7`` bits
``zero = 0`` and the corrections vanish.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qrec.quant.packing import pack_rows, unpack_rows
from qrec.quant.vector import codebook_ints, codebook_unit

__all__ = ["int_dot", "score_codes", "IntCodes", "VectorCodes", "pack_codes", "unpack_codes"]

_INT_MM_OK: dict[tuple[str, int], bool] = {}


def _int_mm_raw(a: torch.Tensor, bT: torch.Tensor) -> torch.Tensor:
    if a.device.type == "cuda":  # cuBLASLt int8 GEMM wants m > 16 and k, n multiples of 8
        m, k = a.shape
        n = bT.shape[0]
        pk, pn, pm = (-k) % 8, (-n) % 8, max(0, 17 - m)
        a2 = torch.nn.functional.pad(a, (0, pk, 0, pm))
        b2 = torch.nn.functional.pad(bT, (0, pk, 0, pn))
        return torch._int_mm(a2, b2.t())[:m, :n]
    return torch._int_mm(a.contiguous(), bT.t())


def _int_mm_trusted(device: torch.device, k: int) -> bool:
    """Whether ``torch._int_mm`` is available *and correct* for inner size ``k`` on this device.

    Checked once per (device, k) on a small random case against an int64 matmul: torch 2.13's CPU kernel
    returns garbage for k = 1 (found by ``tests/test_retrieval_intdot.py``), so trust is earned, not assumed.
    """
    key = (device.type, int(k))
    if key not in _INT_MM_OK:
        ok = False
        if hasattr(torch, "_int_mm"):
            try:
                g = torch.Generator().manual_seed(0)
                a = torch.randint(-128, 128, (19, k), generator=g).to(torch.int8).to(device)
                b = torch.randint(-128, 128, (23, k), generator=g).to(torch.int8).to(device)
                ok = bool(torch.equal(_int_mm_raw(a, b).long().cpu(), a.long().cpu() @ b.long().cpu().T))
            except (RuntimeError, NotImplementedError):
                ok = False
        _INT_MM_OK[key] = ok
    return _INT_MM_OK[key]


def _int_mm(a: torch.Tensor, bT: torch.Tensor) -> torch.Tensor | None:
    """``a @ bT.T`` via ``torch._int_mm`` (int32 result), or None if unsupported/untrusted here.

    cuBLASLt refuses some shapes outright (seen on an H200 with CUDA 13: users 1,024 x items 40,981 x d 64,
    CUBLAS_STATUS_NOT_SUPPORTED, while small shapes pass), so a refusal tries the transposed product, then
    gives up to the caller's exact float GEMM."""
    if not _int_mm_trusted(a.device, a.shape[1]):
        return None
    try:
        return _int_mm_raw(a, bT)
    except RuntimeError:
        try:
            return _int_mm_raw(bT, a).t()
        except RuntimeError:
            return None


def int_dot(qu: torch.Tensor, qi: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Integer dot products of int8 rows ``(B, d) x (N, d) -> int32 (B, N)``, exact.

    ``backend``: ``"int_mm"`` (``torch._int_mm``), ``"float"`` (exact float GEMM), ``"auto"``: ``int_mm`` on
    CUDA, the float GEMM on the CPU (torch 2.13's CPU int8 GEMM measured 8x slower than the float32 GEMM
    on this project's 2-core machines: BENCHMARKS.md).
    """
    dots = _exact_dots(qu, qi, backend)
    return dots if dots.dtype == torch.int32 else dots.round().to(torch.int32)


def _exact_dots(qu: torch.Tensor, qi: torch.Tensor, backend: str) -> torch.Tensor:
    """``<q_u, q_i>`` as int32 (``_int_mm``) or as float32/64 holding the exact integers (float GEMM)."""
    if qu.dtype != torch.int8 or qi.dtype != torch.int8:
        raise TypeError("int_dot takes int8 codes")
    if qu.shape[-1] != qi.shape[-1]:
        raise ValueError("codes must have the same length d")
    if backend not in ("auto", "int_mm", "float"):
        raise ValueError(f"unknown int_dot backend {backend!r}")
    d = qu.shape[-1]
    if backend == "int_mm" or (backend == "auto" and qu.device.type == "cuda"):
        out = _int_mm(qu, qi)
        if out is not None:
            return out
        if backend == "int_mm":
            raise RuntimeError("torch._int_mm is not available for these tensors")
    # exact even under TF32: int8 values fit its 10-bit mantissa and the products accumulate in float32
    ftype = torch.float32 if d <= 1024 else torch.float64
    return qu.to(ftype) @ qi.to(ftype).T


def score_codes(qu, su, zu, qi, si, zi, backend: str = "auto") -> torch.Tensor:
    """Float32 scores ``<x_u, x_i>`` of ``x = s (q - z)`` rows from their int8 codes, ``(B, N)``.

    Passes over the ``(B, N)`` output: the int32 GEMM, one fused int32 -> float32 multiply by ``s_i``, one
    in-place multiply by ``s_u``, and (non-zero zero points only) one rank-3 ``addmm`` for the corrections
    ``s_u s_i (-z_i S_u - z_u S_i + d z_u z_i) = (s_u S_u)(-s_i z_i) + (s_u z_u)(-s_i S_i) + (d s_u z_u)(s_i z_i)``.
    """
    d = qu.shape[-1]
    dots = _exact_dots(qu, qi, backend)
    su, si = su.reshape(-1).float(), si.reshape(-1).float()
    zu, zi = zu.reshape(-1).float(), zi.reshape(-1).float()
    out = torch.mul(dots, si[None, :]).float()  # int32 (or exact float) * float32 -> float32, one pass
    out.mul_(su[:, None])
    if bool((zu != 0).any()) or bool((zi != 0).any()):
        Su = qu.sum(dim=1, dtype=torch.int32).float()
        Si = qi.sum(dim=1, dtype=torch.int32).float()
        P = torch.stack([su * Su, su * zu, float(d) * su * zu], dim=1)        # (B, 3)
        Q = torch.stack([-si * zi, -si * Si, si * zi], dim=1)                 # (N, 3)
        out = torch.addmm(out, P, Q.T)
    return out


def pack_codes(c: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned b-bit codes ``(n, d)`` -> ``(n, ceil(d b / 8))`` uint8 rows (``qrec.quant.packing.pack_rows``)."""
    return pack_rows(c.detach().cpu(), bits)


def unpack_codes(p: torch.Tensor, bits: int, d: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: ``(n, ceil(d b / 8))`` uint8 -> ``(n, d)`` uint8 codes."""
    return unpack_rows(p.detach().cpu(), bits, d).to(torch.uint8)


@dataclass
class IntCodes:
    """Rows ``x = scale * (q - zero)``: int8 codes ``(n, d)``, per-row float32 ``scale`` and ``zero``."""

    q: torch.Tensor       # (n, d) int8
    scale: torch.Tensor   # (n,) float32
    zero: torch.Tensor    # (n,) float32
    bits: int = 8         # bits per code that a server stores (the grid's b)
    step_dtype: torch.dtype = torch.float32  # how ``export`` stores the step (float16 when it was rounded to it)

    @classmethod
    def from_float(cls, x: torch.Tensor, bits: int, step: torch.Tensor | None = None,
                   scale_method: str = "meanabs", step_dtype: torch.dtype = torch.float32) -> "IntCodes":
        """Quantize rows of ``x`` onto the b-bit grid of ``qrec.quant.uniform`` (per-row step)."""
        from qrec.quant.uniform import int8_codes, node_step, quantize_codes

        x = x.detach()
        if step is None:
            step = node_step(x, bits, scale_method)
        c = quantize_codes(x, bits, step)
        q, s, z = int8_codes(c, bits, step)
        return cls(q, s, z, int(bits), step_dtype)

    def __getitem__(self, idx) -> "IntCodes":
        return IntCodes(self.q[idx], self.scale[idx], self.zero[idx], self.bits, self.step_dtype)

    def __len__(self) -> int:
        return int(self.q.shape[0])

    @property
    def device(self) -> torch.device:
        return self.q.device

    def to(self, device) -> "IntCodes":
        return IntCodes(self.q.to(device), self.scale.to(device), self.zero.to(device), self.bits, self.step_dtype)

    def decode(self) -> torch.Tensor:
        return self.scale[:, None] * (self.q.float() - self.zero[:, None])

    def score(self, items: "IntCodes", backend: str = "auto") -> torch.Tensor:
        """Scores against every item. 1-bit codes on the CPU (``"auto"``) go through popcount
        (``qrec.retrieval.hamming``), the same values up to float32 rounding."""
        if backend == "auto" and self.bits == 1 and items.bits == 1 and self.q.device.type == "cpu":
            return self.binary().score(items.binary())
        return score_codes(self.q, self.scale, self.zero, items.q, items.scale, items.zero, backend)

    def binary(self) -> "BinaryCodes":
        """1-bit codes as packed signs with one scale per row: ``q = +-1``, ``x = scale * q``."""
        from qrec.retrieval.hamming import BinaryCodes

        if self.bits != 1:
            raise ValueError(f"only 1-bit codes are sign codes, these have {self.bits} bits")
        if "_binary" not in self.__dict__:  # packed once: an item table is scored against many user blocks
            self._binary = BinaryCodes.from_float(self.q.float()[:, None, :], self.scale[:, None])
        return self._binary

    def grid_codes(self) -> torch.Tensor:
        """The unsigned b-bit codes ``c`` in ``[0, 2^b - 1]`` that a server stores (uint8)."""
        q = self.q.to(torch.int16)
        c = (q + (2 ** self.bits - 1)) // 2 if self.bits <= 7 else q + 128
        return c.to(torch.uint8)

    def export(self) -> dict[str, torch.Tensor]:
        """Packed b-bit codes + one step per row in ``step_dtype`` (the zero point follows from ``bits``)."""
        step = self.scale * 2 if self.bits <= 7 else self.scale
        return {"codes": pack_codes(self.grid_codes(), self.bits), "step": step.detach().cpu().to(self.step_dtype).contiguous()}


@dataclass
class VectorCodes(IntCodes):
    """Rows coded ``s`` coordinates at a time (``qrec.quant.vector``): ``x = step * codebook[index]``.

    The int8 ``q`` of ``IntCodes`` is the rows' codewords as multiples of the codebook's grid unit and ``scale`` is
    ``step * unit``, so these score like any ``IntCodes``; ``export`` stores the indices (``b s`` bits a block),
    the steps and the codebook instead."""

    index: torch.Tensor | None = None     # (n, D) codeword of each block
    codebook: torch.Tensor | None = None  # (K, s) float32 codewords on an int8 grid
    step: torch.Tensor | None = None      # (n,) float32 per-row scale (its values exact in step_dtype)

    @classmethod
    def from_index(cls, index: torch.Tensor, codebook: torch.Tensor, step: torch.Tensor, bits: int,
                   step_dtype: torch.dtype = torch.float32) -> "VectorCodes":
        step = step.reshape(-1).float()
        q = codebook_ints(codebook).to(index.device)[index].reshape(len(index), -1)
        scale = step * codebook_unit(codebook).to(step.device)
        return cls(q, scale, torch.zeros_like(scale), int(bits), step_dtype, index, codebook.float(), step)

    def __getitem__(self, idx) -> "VectorCodes":
        return VectorCodes(self.q[idx], self.scale[idx], self.zero[idx], self.bits, self.step_dtype, self.index[idx],
                           self.codebook, self.step[idx])

    def to(self, device) -> "VectorCodes":
        return VectorCodes(self.q.to(device), self.scale.to(device), self.zero.to(device), self.bits, self.step_dtype,
                           self.index.to(device), self.codebook.to(device), self.step.to(device))

    @property
    def vector_dim(self) -> int:
        return int(self.codebook.shape[1])

    def binary(self):
        raise ValueError("vector codes are not sign codes")

    def export(self) -> dict[str, torch.Tensor]:
        """Packed block indices (``bits x vector_dim`` bits each), one step per row in ``step_dtype``, the codebook."""
        return {"codes": pack_codes(self.index.to(torch.uint8), self.bits * self.vector_dim),
                "step": self.step.detach().cpu().to(self.step_dtype).contiguous(),
                "codebook": self.codebook.detach().cpu().float().contiguous()}

    @classmethod
    def from_export(cls, tensors: dict[str, torch.Tensor], bits: int, dim: int) -> "VectorCodes":
        """Inverse of ``export`` (``tensors``: its three entries; ``dim``: coordinates per row)."""
        codebook, step = tensors["codebook"].float(), tensors["step"]
        index = unpack_codes(tensors["codes"], bits * codebook.shape[1], dim // codebook.shape[1]).long()
        return cls.from_index(index, codebook, step.float(), bits, step.dtype)
