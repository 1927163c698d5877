"""Spec strings -> tables, and the pure size function ``code_size(spec, n, d)`` (no model needed).

Grammar (faiss ``index_factory`` in spirit):
  full                          float32 table
  lr<r>                         low-rank n x r times r x d
  sq<b>[-ptq]                   scalar quantization, b bits per dim, 1 <= b <= 16 (quantization-aware;
                                -ptq: post-training)
  dpq<D>x<b>b[-sx][-bn]         DPQ, D subspaces, b-bit codes (K = 2^b centroids, 1 <= b <= 16): FAISS's
                                PQ<M>x<nbits>; dpq16x8b is 16 subspaces of 256 centroids (VQ flavour;
                                -sx: softmax flavour; -bn: batch-normalised responses); D divides d
  dpq<D>x<K>[-sx][-bn]          the same with K centroids, K a power of two above 16: dpq64x256
  dpq<D>x<K>c[-sx][-bn]         K centroids, any power of two 2..65536: dpq8x4c is 8 subspaces of 4
  pq<D>x<b>                     FAISS's spelling of dpq<D>x<b>b (VQ flavour)
                                A bare dpq<D>x<n> with n <= 16 is refused as ambiguous: FAISS reads n as
                                bits, earlier qrec read it as centroids; say b or c.
  mgqe<D>x<K1>/<K2>@<f>         MGQE shared centroids, head fraction f gets K1, tail K2
  mgqe-uk<D>x<K1>/<K2>@<f>      MGQE unshared centroids, variable K
  mgqe-ud<D1>/<D2>x<K>@<f>      MGQE unshared centroids, variable D
                                MGQE keeps its paper's notation: the numbers after x are centroid counts.
  bin[-ste|-gaussian|-fourier]  1 bit per value: sign x per-row scale (L2Q / BiGeaR), sign surrogate gradient
  q<b>                          b bits per value (1 <= b <= 8) on a symmetric per-row grid (HQ-GNN), STE
  More MGQE tiers: one more K (or D) and one more cumulative fraction each, e.g. mgqe64x256/64/16@0.1/0.3
  (top 10% of rows by frequency get 256 centroids, the next 20% 64, the rest 16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from qrec.compress.base import EmbeddingTable
from qrec.compress.dpq import MAX_BARE_AMBIGUOUS
from qrec.errors import SpecError


@dataclass(frozen=True)
class SpecEntry:
    pattern: re.Pattern
    build: Callable[..., EmbeddingTable]      # build(match, n, d, frequencies=None, **opts)
    size: Callable[..., int]                  # size(match, n, d) -> bits, pure
    post: Callable[..., EmbeddingTable] | None = None  # post(match, weight, frequencies, seed): post-training


_REGISTRY: list[SpecEntry] = []


def register(pattern: str, build, size, post=None) -> None:
    """Add a spec family. ``pattern`` is a full-match regex; ``build``/``size``/``post`` receive its match;
    ``post`` (optional) compresses a trained float table into the family's format without training."""
    _REGISTRY.append(SpecEntry(re.compile(pattern), build, size, post))


def parse_spec(spec: str):
    """Return ``(entry, match)`` for a spec string, or raise ``SpecError`` listing the grammar."""
    spec = spec.strip()
    for entry in _REGISTRY:
        m = entry.pattern.fullmatch(spec)
        if m:
            return entry, m
    raise SpecError(f"unknown embedding spec {spec!r}; expected one of the forms in qrec.compress.spec: " + __doc__.split("Grammar")[1])


def build_table(spec: str, n: int, d: int, frequencies=None, **opts) -> EmbeddingTable:
    """Build the table a spec names. ``frequencies`` (training counts per row) is needed by MGQE."""
    entry, m = parse_spec(spec)
    return entry.build(m, n, d, frequencies=frequencies, **opts)


def compress_trained(spec: str, weight, frequencies=None, seed: int = 0) -> EmbeddingTable:
    """A trained ``(n, d)`` float table in a spec's format, fitted without training (post-training
    quantization): SQ by min/max, low rank by truncated SVD, DPQ / MGQE codebooks by k-means."""
    entry, m = parse_spec(spec)
    if entry.post is None:
        raise SpecError(f"{spec!r}: this format has no post-training fit (it needs training)")
    return entry.post(m, weight, frequencies, seed).eval()  # fitted, not to be trained: eval mode, as served


def code_size(spec: str, n: int, d: int) -> int:
    """Bits a server holds for an ``n x d`` table of this spec; equals ``table.serving_bits()``."""
    entry, m = parse_spec(spec)
    return int(entry.size(m, n, d))


#: ``dpq<D>x<n>[b|c][-sx][-bn]`` and FAISS's ``pq<D>x<nbits>`` (no unit, no flavour: bits)
DPQ_PATTERN = r"(?:dpq(?P<D>\d+)x(?P<K>\d+)(?P<unit>[bc])?(?P<sx>-sx)?(?P<bn>-bn)?|pq(?P<pqD>\d+)x(?P<pqbits>\d+))"
def dpq_centroids(m: re.Match) -> int:
    """K of a DPQ / PQ spec match: ``2^b`` for ``<b>b`` and FAISS's ``pq``, ``n`` for ``<n>c`` and a bare
    ``n > 16``; a bare ``n <= 16`` is refused (FAISS reads it as bits, qrec before 0.2 as centroids)."""
    if m["pqD"] is not None:
        return _bits_to_centroids(m, int(m["pqbits"]))
    n, unit = int(m["K"]), m["unit"]
    if unit == "b":
        return _bits_to_centroids(m, n)
    if unit is None and n <= MAX_BARE_AMBIGUOUS:
        D, rest = m["D"], (m["sx"] or "") + (m["bn"] or "")
        raise SpecError(f"{m.string!r} is ambiguous: write dpq{D}x{n}b{rest} for {n}-bit codes ({2 ** n} centroids "
                        f"per subspace, as FAISS reads PQ{D}x{n}) or dpq{D}x{n}c{rest} for {n} centroids "
                        f"(qrec's earlier reading); a bare count is read as centroids only above {MAX_BARE_AMBIGUOUS}")
    return n


def dpq_subspaces(m: re.Match) -> int:
    return int(m["D"] if m["pqD"] is None else m["pqD"])


def _bits_to_centroids(m: re.Match, bits: int) -> int:
    if not 1 <= bits <= 16:
        raise SpecError(f"{m.string!r}: codes take 1..16 bits, got {bits}")
    return 1 << bits


def _register_builtin() -> None:
    from qrec.compress.dpq import DPQEmbedding, dpq_bits
    from qrec.compress.full import FullEmbedding
    from qrec.compress.lowbit import BIN_PATTERN, UNIFORM_PATTERN, LowBitEmbedding, bits_of_spec, lowbit_bits
    from qrec.compress.lowrank import LowRankEmbedding, lowrank_bits
    from qrec.compress.mgqe import SPEC_PATTERN as MGQE_PATTERN
    from qrec.compress.mgqe import MGQEConfig, MGQEEmbedding, mgqe_bits
    from qrec.compress.scalar import SPEC_PATTERN as SQ_PATTERN
    from qrec.compress.scalar import ScalarQuantized, scalar_bits

    def _positive(m: re.Match, group: str) -> int:
        value = int(m[group])
        if value <= 0:
            raise SpecError(f"{m.string!r}: {group} must be positive")
        return value

    def _sq_bits(m: re.Match) -> int:
        bits = int(m["b"])
        if not 1 <= bits <= 16:
            raise SpecError(f"{m.string!r}: scalar quantization takes 1..16 bits")
        return bits

    register(
        r"full",
        lambda m, n, d, frequencies=None, **o: FullEmbedding(n, d, **o),
        lambda m, n, d: 32 * n * d,
        lambda m, w, f, seed: FullEmbedding.from_float(w),
    )
    register(
        r"lr(?P<r>\d+)",
        lambda m, n, d, frequencies=None, **o: LowRankEmbedding(n, d, _positive(m, "r"), **o),
        lambda m, n, d: lowrank_bits(n, d, _positive(m, "r")),
        lambda m, w, f, seed: LowRankEmbedding.from_float(w, _positive(m, "r")),
    )
    register(
        SQ_PATTERN.pattern,
        lambda m, n, d, frequencies=None, **o: ScalarQuantized(n, d, _sq_bits(m), ptq=bool(m["ptq"]), **o),
        lambda m, n, d: scalar_bits(n, d, _sq_bits(m)),
        lambda m, w, f, seed: ScalarQuantized.from_float(w, _sq_bits(m)),
    )
    register(
        DPQ_PATTERN,
        lambda m, n, d, frequencies=None, bn=False, **o: DPQEmbedding(
            n, d, dpq_subspaces(m), dpq_centroids(m), softmax=bool(m["sx"]), bn=bool(m["bn"]) or bn, **o
        ),
        lambda m, n, d: dpq_bits(n, d, dpq_subspaces(m), dpq_centroids(m)),
        lambda m, w, f, seed: _vq_only(m).from_float(w, dpq_subspaces(m), dpq_centroids(m), seed=seed),
    )
    register(
        MGQE_PATTERN,
        lambda m, n, d, frequencies=None, **o: MGQEEmbedding(n, d, MGQEConfig.from_match(m), frequencies, **o),
        lambda m, n, d: mgqe_bits(MGQEConfig.from_match(m), n, d),
        lambda m, w, f, seed: MGQEEmbedding.from_float(w, MGQEConfig.from_match(m), f, seed=seed),
    )

    def _lowbit(m: re.Match) -> tuple[int, str | None]:
        try:
            bits = bits_of_spec(m.string)
        except ValueError as e:
            raise SpecError(str(e)) from None
        binary = BIN_PATTERN.fullmatch(m.string.strip())
        return bits, (binary["estimator"] or "ste") if binary else None

    for pattern in (BIN_PATTERN, UNIFORM_PATTERN):
        register(
            pattern.pattern,
            lambda m, n, d, frequencies=None, **o: LowBitEmbedding(n, d, *_lowbit(m), **o),
            lambda m, n, d: lowbit_bits(n, d, _lowbit(m)[0]),
            lambda m, w, f, seed: LowBitEmbedding.from_float(w, *_lowbit(m)),
        )

    def _vq_only(m: re.Match):
        if m["pqD"] is None and (m["sx"] or m["bn"]):
            raise SpecError(f"{m.string!r}: post-training DPQ fits the VQ flavour only (drop -sx / -bn)")
        return DPQEmbedding


_register_builtin()
