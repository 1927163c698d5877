"""Sign bits packed into 64-bit words, and scoring by popcount.

Layout (``pack_signs``): a vector ``x`` of length ``d`` becomes ``W = ceil(d / 64)`` words; bit ``j`` of
word ``k`` (least significant bit first) is ``1`` iff ``x[64 k + j] >= 0`` (so ``sign(0) = +1``, as in
``qrec.quant.sign``). Bits past ``d`` in the last word are ``0`` in every code, so they cancel in the
XOR and never count. Words are stored as ``torch.int64`` (same bits as ``uint64``; torch has no full
uint64 support); numpy views them as ``uint64``.

Identity: for ``s_u, s_i`` in ``{-1, +1}^d`` with bits ``b_u, b_i``,
``<s_u, s_i> = d - 2 * popcount(b_u XOR b_i)`` (each differing coordinate contributes -1 instead of +1).

Layered scores (L2Q-GCN / BiGeaR): a node holds ``L+1`` codes (one per layer) and ``L+1`` float scales
(the layer weight folded in: ``scale_l = w_l * alpha_l``); ``score(u, i) = sum_l su_l si_l <s_u,l, s_i,l>``.

Backends of ``score_layers``:

``"numba"``  (CPU, ``"auto"``'s choice there) a compiled loop: hardware popcount of the XOR, scales applied in
             float32 in the same order as the numpy backend (identical results), no temporaries; threads
             over user blocks.
``"numpy"``  (CPU) ``np.bitwise_count`` (numpy >= 2.0; a byte lookup table otherwise) on the XOR of small
             user blocks against all items, threads over user blocks (numpy releases the GIL).
``"torch"``  bit-trick (SWAR) popcount on int64 tensors; device-agnostic.
``"gemm"``   unpacks the bits to +-1 float32 per layer and multiplies: the per-layer dot products are
             small integers, exact in float32 (``|<s_u, s_i>| <= d < 2^24``). Same inputs (packed codes),
             same exact integers, BLAS speed; ``"auto"``'s choice on CUDA (tensor cores).
All four give identical integer dot products; ``tests/test_retrieval_hamming.py`` checks it.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from qrec.quant.packing import pack_rows
from qrec.retrieval.topk import masked_topk, sorted_csr

__all__ = [
    "n_words",
    "pack_signs",
    "unpack_signs",
    "popcount64",
    "popcount_np",
    "hamming_dot",
    "score_layers",
    "topk_layers",
    "BinaryCodes",
    "angular_scores",
]

_M1 = 0x5555555555555555
_M2 = 0x3333333333333333
_M4 = 0x0F0F0F0F0F0F0F0F
_H01 = 0x0101010101010101
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
if sys.byteorder != "little":  # unpack_signs reads words byte by byte
    raise ImportError("qrec.retrieval.hamming assumes a little-endian machine")


def n_words(d: int) -> int:
    """64-bit words per code of ``d`` bits."""
    return (int(d) + 63) // 64


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Bits ``x >= 0`` of the last axis packed into int64 words: ``(..., d) -> (..., ceil(d/64))`` (the rows of
    ``qrec.quant.packing.pack_rows`` at 1 bit, aligned to 8 bytes, read as little-endian words)."""
    return pack_rows(x >= 0, 1, align=8).view(torch.int64)


_PM1_TABLE: dict = {}


def _pm1_table(device, dtype) -> torch.Tensor:
    """``(256, 8)`` table: byte value -> its 8 bits (LSB first) as +-1."""
    key = (str(device), dtype)
    if key not in _PM1_TABLE:
        b = torch.arange(256, dtype=torch.int64)
        bits = (b[:, None] >> torch.arange(8)) & 1
        _PM1_TABLE[key] = (2 * bits - 1).to(device=device, dtype=dtype)
    return _PM1_TABLE[key]


def unpack_signs(words: torch.Tensor, d: int, dtype=torch.float32) -> torch.Tensor:
    """Inverse of ``pack_signs``: ``(..., W) -> (..., d)`` of +-1 in ``dtype`` (a byte lookup table)."""
    W = words.shape[-1]
    # little-endian bytes of each int64 word (x86, ARM and CUDA are little-endian; checked at import)
    by = words.contiguous().view(torch.uint8).reshape(*words.shape[:-1], W * 8).long()
    pm = _pm1_table(words.device, dtype)[by]                     # (..., 8W, 8)
    return pm.reshape(*words.shape[:-1], W * 64)[..., :d]


def popcount64(x: torch.Tensor) -> torch.Tensor:
    """Per-element popcount of int64 words (SWAR bit tricks; any device). Result int64 in [0, 64]."""
    x = x - ((x >> 1) & _M1)  # masks drop the sign-extended bit of the arithmetic shift
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56  # wraps modulo 2^64 as intended; the top byte is <= 64, never negative


def popcount_np(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-element popcount of a uint64 array (``np.bitwise_count`` or a byte lookup table)."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(a, out=out) if out is not None else np.bitwise_count(a)
    c = _BYTE_POPCOUNT[a.view(np.uint8)].reshape(*a.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is not None:
        out[...] = c
        return out
    return c


def _as_u64(words: torch.Tensor) -> np.ndarray:
    return words.detach().cpu().contiguous().numpy().view(np.uint64)


def hamming_dot(bu: torch.Tensor, bi: torch.Tensor, d: int) -> torch.Tensor:
    """``<s_u, s_i> = d - 2 popcount(b_u xor b_i)`` for packed codes ``(B, W)`` x ``(N, W)`` -> int32 ``(B, N)``."""
    if bu.shape[-1] != bi.shape[-1]:
        raise ValueError("codes must have the same number of words")
    if bu.device.type == "cpu":
        a, b = _as_u64(bu), _as_u64(bi)
        cnt = np.zeros((a.shape[0], b.shape[0]), dtype=np.int32)
        for w in range(a.shape[1]):
            cnt += popcount_np(np.bitwise_xor(a[:, w, None], b[None, :, w]))
        return torch.from_numpy(int(d) - 2 * cnt)
    cnt = popcount64(bu[:, None, :] ^ bi[None, :, :]).sum(-1)
    return (int(d) - 2 * cnt).to(torch.int32)


def angular_scores(dots: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """SimHash's inner-product estimate from sign codes (Charikar 2002): ``|a| |b| cos(pi h / d)``, the angle
    between ``a`` and ``b`` read off their codes' Hamming distance ``h``. ``dots``: the codes' dot products at
    the norm scale, ``|a| |b| (1 - 2 h / d)``; ``norms``: ``|a| |b|``. The plain dot product is linear in ``h``
    where the cosine is not: near the top of a ranking (small angles) the two order items differently."""
    return norms * torch.cos(0.5 * torch.pi * (1 - dots / norms.clamp_min(1e-30)))


def _check_layered(bu, su, bi, si):
    if bu.dim() != 3 or bi.dim() != 3 or bu.shape[1:] != bi.shape[1:]:
        raise ValueError(f"codes must be (n, L, W) with equal L, W; got {tuple(bu.shape)} and {tuple(bi.shape)}")
    if su.shape != bu.shape[:2] or si.shape != bi.shape[:2]:
        raise ValueError("scales must be (n, L) matching the codes")


def _user_blocks(B: int, block: int, n_threads: int | None, run) -> None:
    """Call ``run((start, end))`` over user blocks, on threads when asked (the kernels release the GIL)."""
    spans = [(s, min(B, s + block)) for s in range(0, B, block)]
    threads = n_threads or max(1, torch.get_num_threads())
    if threads > 1 and len(spans) > 1:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(run, spans))
    else:
        for span in spans:
            run(span)


def _numpy_inputs(bu, su, bi, si):
    return (_as_u64(bu), su.detach().cpu().float().contiguous().numpy(),
            _as_u64(bi), si.detach().cpu().float().contiguous().numpy())


def _score_numpy(bu, su, bi, si, d, n_threads=None, block=4):
    a, sa, b_rows, sb = _numpy_inputs(bu, su, bi, si)
    b = np.ascontiguousarray(b_rows.transpose(1, 2, 0))  # (L, W, N): contiguous item rows per word
    sbT = np.ascontiguousarray(sb.T)                       # (L, N)
    B, L, W = a.shape
    N = b.shape[2]
    out = np.empty((B, N), dtype=np.float32)
    if B == 0 or N == 0:
        return torch.from_numpy(out)
    cnt_dtype = np.uint8 if 64 * W < 256 else np.uint16

    def run(span):
        s, e = span
        ub = e - s
        o = out[s:e]
        x = np.empty((ub, N), dtype=np.uint64)
        cnt = np.empty((ub, N), dtype=cnt_dtype)
        c1 = np.empty((ub, N), dtype=cnt_dtype) if W > 1 else None
        f = np.empty((ub, N), dtype=np.float32)
        for l in range(L):
            for w in range(W):
                np.bitwise_xor(a[s:e, l, w, None], b[l, w][None, :], out=x)
                if w == 0:
                    popcount_np(x, out=cnt)
                else:
                    popcount_np(x, out=c1)
                    cnt += c1
            # su si (d - 2 popcount), element-wise so the result never depends on the block size
            ul = sa[s:e, l, None]
            np.multiply(cnt, (-2.0 * ul).astype(np.float32), out=f)
            f += float(d) * ul
            f *= sbT[l]
            if l == 0:
                o[...] = f
            else:
                o += f

    _user_blocks(B, block, n_threads, run)
    return torch.from_numpy(out)


def _score_numba(bu, su, bi, si, d, n_threads=None, block=64):
    """The compiled loop (``qrec.retrieval.kernels.popcount_scores``); float32 operations in the numpy
    backend's order, so the two agree bit for bit."""
    from qrec.retrieval.kernels import popcount_scores as kernel

    a, sa, b_rows, sb = _numpy_inputs(bu, su, bi, si)
    b = np.ascontiguousarray(b_rows.transpose(1, 2, 0))  # (L, W, N): contiguous item words, as numpy's
    sbT = np.ascontiguousarray(sb.T)                       # (L, N)
    out = np.empty((a.shape[0], b.shape[2]), dtype=np.float32)
    _user_blocks(a.shape[0], block, n_threads, lambda span: kernel(a, sa, b, sbT, d, span[0], span[1], out))
    return torch.from_numpy(out)


SMALL_BATCH = 8  # fewer queries: one query at a time over item-major codes (fewer than one SIMD vector of queries)


def topk_layers(bu: torch.Tensor, su: torch.Tensor, bi: torch.Tensor, si: torch.Tensor, d: int, k: int,
                exclude=None, n_threads: int | None = None, parts: int | None = None, item_layout=None):
    """Each user's ``k`` best items by ``score_layers``' scores, without the ``(B, N)`` score matrix (CPU).

    From ``SMALL_BATCH`` users: a compiled scan of the item codes (``kernels.scan_topk_sign``, items in parallel
    parts, blocks of users side by side in SIMD vectors) keeps a running top-``k`` per user
    (``qrec.retrieval.fused``). Fewer users (a server's lone query): each user in turn against the items'
    item-major codes (``kernels.popcount_topk``, the SIMD vectors over items), which a lone query scans
    2-3x faster than a mostly padded block.

    ``exclude``: a ``(B, N)`` scipy sparse matrix of items to mask per user (the seen items). Returns ``(indices
    int64 (B, k), values float32 (B, k))`` ordered exactly as ``qrec.retrieval.topk.topk_deterministic`` orders
    the masked score matrix (score descending, then item index ascending; masked items score ``-inf`` and fill
    a row's tail only when fewer than ``k`` remain), with ``score_layers``' float32 values bit for bit.
    ``parts``: parallel item parts (default: ``fused_topk``'s; the result does not depend on it).
    ``item_layout``: ``item_major(bi, si)`` computed once, for items a server ranks again and again.
    """
    _check_layered(bu, su, bi, si)
    a, sa = _as_u64(bu), su.detach().cpu().float().contiguous().numpy()
    if a.shape[0] < SMALL_BATCH:
        return _topk_each_user(a, sa, item_major(bi, si) if item_layout is None else item_layout, d, k, exclude)
    from qrec.retrieval.fused import fused_topk, lanes_for, pad_blocks
    from qrec.retrieval.kernels import scan_topk_sign

    b, sb = _as_u64(bi), si.detach().cpu().float().contiguous().numpy()
    # the per-user factors of score_row, in float32 exactly as it forms them
    c2, cd = sa * np.float32(-2.0), sa * np.float32(d)
    lanes = lanes_for(a.shape[0])
    args = (pad_blocks(a, lanes), pad_blocks(c2, lanes), pad_blocks(cd, lanes), b, sb)
    return fused_topk(scan_topk_sign, args, a.shape[0], b.shape[0], k, b.shape[1] * (8 * b.shape[2] + 4),
                      exclude, n_threads, parts)


def _topk_each_user(a, sa, layout, d: int, k: int, exclude, chunk: int = 4096):
    from qrec.retrieval.kernels import popcount_topk

    b, sbT = layout
    B, N = a.shape[0], b.shape[2]
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, n_items={N}], got {k}")
    indptr, excluded = (np.zeros(B + 1, np.int64), np.zeros(0, np.int64)) if exclude is None else sorted_csr(exclude, B)
    top_i, top_v = np.empty((B, k), np.int64), np.empty((B, k), np.float32)
    popcount_topk(a, sa, b, sbT, d, k, indptr, excluded, 0, B, top_i, top_v, min(chunk, N))
    return torch.from_numpy(top_i), torch.from_numpy(top_v)


def item_major(bi: torch.Tensor, si: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Item codes ``(L, W, N)`` and scales ``(L, N)``: each layer's words contiguous over items, as
    ``popcount_scores`` / ``popcount_topk`` read them."""
    return (np.ascontiguousarray(_as_u64(bi).transpose(1, 2, 0)),
            np.ascontiguousarray(si.detach().cpu().float().numpy().T))


def _score_torch(bu, su, bi, si, d, block=256):
    B = bu.shape[0]
    out = torch.empty(B, bi.shape[0], dtype=torch.float32, device=bu.device)
    sif = si.float()
    for s in range(0, B, block):
        e = min(B, s + block)
        cnt = popcount64(bu[s:e, None, :, :] ^ bi[None, :, :, :]).sum(-1)  # (b, N, L)
        dots = (int(d) - 2 * cnt).to(torch.float32)
        out[s:e] = torch.einsum("bnl,bl,nl->bn", dots, su[s:e].float(), sif)
    return out


def _score_gemm(bu, su, bi, si, d):
    L = bu.shape[1]
    out = None
    for l in range(L):
        pu = unpack_signs(bu[:, l], d)               # +-1, exact
        pi = unpack_signs(bi[:, l], d)
        dots = pu @ pi.T                             # exact integers in float32 (|dot| <= d < 2^24)
        term = dots.mul_(su[:, l, None].float()).mul_(si[None, :, l].float())
        out = term if out is None else out.add_(term)
    return out


def score_layers(bu: torch.Tensor, su: torch.Tensor, bi: torch.Tensor, si: torch.Tensor, d: int,
                 backend: str = "auto", n_threads: int | None = None) -> torch.Tensor:
    """``sum_l su[:, l] si[:, l] (d - 2 popcount(bu[:, l] xor bi[:, l]))`` -> float32 ``(B, N)``.

    ``bu``: ``(B, L, W)`` int64 packed codes, ``su``: ``(B, L)`` scales; ``bi``/``si`` likewise for ``N`` items.
    ``backend``: ``"numba"``, ``"numpy"``, ``"torch"``, ``"gemm"`` or ``"auto"`` (numba on CPU, gemm on
    other devices: on an H200 the +-1 GEMM scored Gowalla's users 5x faster than the bit-trick popcount, whose
    elementwise passes cannot use the tensor cores; set ``QREC_HAMMING_BACKEND`` to override ``"auto"``).
    """
    _check_layered(bu, su, bi, si)
    if backend == "auto":
        backend = os.environ.get("QREC_HAMMING_BACKEND") or ("numba" if bu.device.type == "cpu" else "gemm")
    if backend == "numba":
        return _score_numba(bu, su, bi, si, d, n_threads).to(bu.device)
    if backend == "numpy":
        return _score_numpy(bu, su, bi, si, d, n_threads).to(bu.device)
    if backend == "torch":
        return _score_torch(bu, su, bi, si, d)
    if backend == "gemm":
        return _score_gemm(bu, su, bi, si, d)
    raise ValueError(f"unknown hamming backend {backend!r}; use 'numba', 'numpy', 'torch', 'gemm' or 'auto'")


@dataclass
class BinaryCodes:
    """Packed sign codes of ``n`` nodes x ``L`` layers of ``d`` bits, with one float scale per node and layer."""

    bits: torch.Tensor    # (n, L, W) int64
    scales: torch.Tensor  # (n, L) float32
    dim: int

    @classmethod
    def from_float(cls, layers: torch.Tensor, scales: torch.Tensor) -> "BinaryCodes":
        """``layers``: ``(n, L, d)`` floats whose signs are kept; ``scales``: ``(n, L)``."""
        return cls(pack_signs(layers), scales.float().contiguous(), int(layers.shape[-1]))

    def __getitem__(self, idx) -> "BinaryCodes":
        return BinaryCodes(self.bits[idx], self.scales[idx], self.dim)

    def __len__(self) -> int:
        return int(self.bits.shape[0])

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def to(self, device) -> "BinaryCodes":
        return BinaryCodes(self.bits.to(device), self.scales.to(device), self.dim)

    def decode(self) -> torch.Tensor:
        """The float vectors the codes stand for, concatenated over layers: ``(n, L * d)``."""
        pm = unpack_signs(self.bits, self.dim)                   # (n, L, d)
        return (pm * self.scales[..., None]).reshape(len(self), -1)

    def score(self, items: "BinaryCodes", backend: str = "auto") -> torch.Tensor:
        """Scores of these (user) codes against every item code: ``(len(self), len(items))``."""
        if self.dim != items.dim:
            raise ValueError("user and item codes have different d")
        return score_layers(self.bits, self.scales, items.bits, items.scales, self.dim, backend)

    def topk(self, items: "BinaryCodes", k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best items per (user) code: fused with the scoring on the CPU (``topk_layers``); on a GPU
        the tensor-core scores, then the same deterministic ranking."""
        if self.dim != items.dim:
            raise ValueError("user and item codes have different d")
        if self.bits.device.type != "cpu":
            return masked_topk(self.score(items), k, exclude)
        layout = None
        if len(self) < SMALL_BATCH:  # transposed once: a served item table is ranked against every lone query
            if "_item_major" not in items.__dict__:
                items._item_major = item_major(items.bits, items.scales)
            layout = items._item_major
        return topk_layers(self.bits, self.scales, items.bits, items.scales, self.dim, k, exclude, item_layout=layout)

    def bits_held(self) -> int:
        """Bits stored: ``L * 64 * ceil(d/64)`` code bits plus ``32 L`` scale bits per node (``d = 64``:
        exactly ``L * (64 + 32)``)."""
        n, L, W = self.bits.shape
        return n * L * W * 64 + 32 * n * L

    def export(self) -> dict[str, torch.Tensor]:
        """Packed sign bits ``(n, L, ceil(d/64))`` int64 and scales ``(n, L)`` float32."""
        return {"bits": self.bits.detach().cpu().contiguous(), "scales": self.scales.detach().cpu().float().contiguous()}
