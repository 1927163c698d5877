"""Multi-granular quantized embeddings (MGQE, Kang et al. WWW 2020, section 4): DPQ with less capacity for
rarely seen rows.

Rows are ranked by training frequency (``qrec.data.partition``; ties to the lower id) and cut into ``m``
groups ``V_1..V_m`` at cumulative fractions ``f_1 <= ... <= f_{m-1}``: ``V_1`` is the top ``ceil(f_1 n)`` rows,
``V_2`` the rows ranked up to ``ceil(f_2 n)``, and so on. Group ``i`` is quantized DPQ-style (VQ flavour,
straight-through, centroid loss as ``qrec.compress.dpq``) with ``D_i`` subspaces and ``K_i`` centroids:

* ``mgqe<D>x<K1>/<K2>[/<K3>..]@<f1>[/<f2>..]`` shared centroids (the paper's default): one ``D x K1``
  codebook; a row of group ``i`` takes the argmin over the *first* ``K_i`` centroids only.
* ``mgqe-uk<D>x<K1>/<K2>..@<f..>`` unshared centroids, variable K: one ``D x K_i`` codebook per group.
* ``mgqe-ud<D1>/<D2>..x<K>@<f..>`` unshared centroids, variable D: one ``D_i x K x d/D_i`` codebook per group.

Lookup follows the paper's Algorithm 1: split the batch's ids by group, one batched quantization per group,
concatenate, and restore the batch order with a single gather; no per-item work.

Serving layout, and what it costs. The paper's Table 1 (``sum_i |V_i| D log K_i + 32 K d``) assumes ids were
renumbered in frequency order, so a row's group is implied by its id. qrec keeps the dataset's ids, so the
export stores what a server needs to find a row's code without a permutation:

* ``groups``: every row's group id packed at ``ceil(log2 m)`` bits (a 1-bit head bitmap for ``m = 2``),
  ``n`` bits in all. Cheaper than any permutation (``n log2 n`` bits) and a rank over the bitmap gives a row's
  position in its group; group sizes follow from it, so they are not stored.
* ``codes<i>``: the codes of group ``i``'s rows in ascending row id, packed at ``log2 K_i`` bits each
  (``ceil(|V_i| D_i log2 K_i / 8)`` bytes; each group's stream is padded to whole bytes on its own).
* ``centroids`` (shared) or ``centroids<i>``: float32 codebooks, ``32 K1 d`` or ``32 d sum_i K_i`` bits.

So ``mgqe_bits = 8 ceil(n ceil(log2 m) / 8) + sum_i 8 ceil(|V_i| D_i log2 K_i / 8) + 32 d K_total``: Table 1
plus ``n`` bits of group map (0.05% of the full table at d = 64) plus byte padding. Group sizes depend only
on ``n`` and the fractions, so the size is a pure function of ``(spec, n, d)``; the frequencies only decide
*which* rows land in each group.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qrec.compress.base import EmbeddingTable
from qrec.compress.coded import CodedPart, decode_parts, narrow_codes
from qrec.compress.dpq import AuxLoss, code_bits, split, unique_ids, vq_lookup
from qrec.retrieval.pqscan import gather_centroids
from qrec.compress.nearest import carried_order, nearest_codes
from qrec.quant.packing import pack_bits, packed_nbytes, unpack_bits
from qrec.data.partition import group_ids, head_size
from qrec.errors import SpecError

_FRACTION = r"(?:\d+(?:\.\d*)?|\.\d+)"
#: the spec grammar of all three variants (registered by ``qrec.compress.spec``)
SPEC_PATTERN = (
    r"mgqe(?:-(?P<variant>uk|ud))?(?P<D>\d+(?:/\d+)*)x(?P<K>\d+(?:/\d+)*)"
    rf"@(?P<f>{_FRACTION}(?:/{_FRACTION})*)"
)
_VARIANTS = {None: "shared", "uk": "uk", "ud": "ud"}


@dataclass(frozen=True)
class MGQEConfig:
    """What a spec says: variant (``shared``/``uk``/``ud``), per-group ``(D_i, K_i)``, cumulative fractions."""

    variant: str
    tiers: tuple[tuple[int, int], ...]
    fractions: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> "MGQEConfig":
        m = re.fullmatch(SPEC_PATTERN, spec.strip())
        if not m:
            raise SpecError(f"not an MGQE spec: {spec!r}")
        return cls.from_match(m)

    @classmethod
    def from_match(cls, m: re.Match) -> "MGQEConfig":
        variant = _VARIANTS[m["variant"]]
        Ds = [int(v) for v in m["D"].split("/")]
        Ks = [int(v) for v in m["K"].split("/")]
        fractions = tuple(float(v) for v in m["f"].split("/"))
        groups = len(fractions) + 1
        varying, fixed = (Ds, Ks) if variant == "ud" else (Ks, Ds)
        if len(fixed) != 1 or len(varying) != groups:
            what = "D" if variant == "ud" else "K"
            raise SpecError(f"{m.string!r}: needs one value per group for {what} ({groups} groups from "
                            f"{len(fractions)} fractions) and a single value for the other")
        tiers = tuple(zip(Ds * groups, Ks)) if variant != "ud" else tuple(zip(Ds, Ks * groups))
        return cls(variant, tiers, fractions)

    def validate(self, d: int) -> None:
        for D, K in self.tiers:
            code_bits(d, D, K)
        if any(not 0.0 <= f <= 1.0 for f in self.fractions) or list(self.fractions) != sorted(self.fractions):
            raise SpecError(f"MGQE fractions must be non-decreasing in [0, 1], got {list(self.fractions)}")
        if self.variant == "shared" and self.tiers[0][1] != max(K for _, K in self.tiers):
            raise SpecError("shared-centroid MGQE: the head's K1 must be the largest (groups use its first K_i)")

    @property
    def spec(self) -> str:
        Ds = [D for D, _ in self.tiers]
        Ks = [K for _, K in self.tiers]
        prefix = {"shared": "mgqe", "uk": "mgqe-uk", "ud": "mgqe-ud"}[self.variant]
        d_part = "/".join(map(str, Ds)) if self.variant == "ud" else str(Ds[0])
        k_part = str(Ks[0]) if self.variant == "ud" else "/".join(map(str, Ks))
        return f"{prefix}{d_part}x{k_part}@" + "/".join(repr(f) for f in self.fractions)

    @property
    def num_groups(self) -> int:
        return len(self.tiers)

    @property
    def group_bits(self) -> int:
        """Bits per row of the group map: ``ceil(log2 m)`` (at least 1)."""
        return max(1, math.ceil(math.log2(self.num_groups)))

    def codebook_shapes(self, d: int) -> list[tuple[int, int, int]]:
        """One ``(D, K, d/D)`` codebook for shared centroids, else one per group."""
        tiers = self.tiers[:1] if self.variant == "shared" else self.tiers
        return [(D, K, d // D) for D, K in tiers]

    def group_sizes(self, n: int) -> list[int]:
        """``|V_i|``: rows ranked in ``[ceil(f_{i-1} n), ceil(f_i n))``, with ``f_0 = 0`` and ``f_m = 1``."""
        bounds = [0] + [head_size(n, fraction=f) for f in self.fractions] + [n]
        return [b - a for a, b in zip(bounds, bounds[1:])]


def mgqe_bits(config: MGQEConfig, n: int, d: int) -> int:
    """Serving bits: group map + per-group packed codes + float32 codebooks (see the module docstring)."""
    config.validate(d)
    group_map = 8 * packed_nbytes(n, config.group_bits)
    sizes = config.group_sizes(n)
    codes = sum(8 * packed_nbytes(size * D, code_bits(d, D, K)) for size, (D, K) in zip(sizes, config.tiers))
    codebooks = sum(32 * D * K * s for D, K, s in config.codebook_shapes(d))
    return group_map + codes + codebooks


class MGQEEmbedding(EmbeddingTable):
    """MGQE table: a training-only query table, the frequency groups, and the codebook(s)."""

    family = "mgqe"

    def __init__(self, num_embeddings: int, dim: int, config: MGQEConfig | str, frequencies,
                 beta: float = 0.0, init_std: float = 0.01, kernel: str = "auto"):
        super().__init__(num_embeddings, dim)
        self.config = MGQEConfig.parse(config) if isinstance(config, str) else config
        self.config.validate(dim)
        self.beta, self.kernel = float(beta), kernel
        self.register_buffer("group", torch.from_numpy(self._groups(frequencies)))
        self.query = nn.Parameter(torch.randn(num_embeddings, dim) * init_std)
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.randn(*shape) * init_std) for shape in self.config.codebook_shapes(dim)
        )
        self._aux = AuxLoss()
        self._orders: dict = {}  # each group's centroid order, carried between steps (nearest_sorted)

    @classmethod
    def from_float(cls, weight: torch.Tensor, config: MGQEConfig | str, frequencies, seed: int = 0) -> "MGQEEmbedding":
        """Post-training MGQE of a trained float table: each group's codebook fitted by k-means on its own rows.
        Shared centroids: the groups from the smallest ``K_i`` up, each adding its ``K_i - K_{i+1}`` centroids
        around the ones already fitted (so the tail's ``K2`` are the tail's k-means, as the lookup needs)."""
        from qrec.compress.kmeans import product_kmeans

        weight = weight.detach().float().cpu()
        table = cls.blank(weight.shape[0], weight.shape[1], config, frequencies)
        with torch.no_grad():
            table.query.copy_(weight)
            fitted = None
            for i in reversed(range(table.config.num_groups)):
                D, K = table.config.tiers[i]
                rows = split(weight[table.group_rows(i)], D)
                if rows.shape[0] == 0:  # an empty group keeps its (unused) initial centroids
                    continue
                if table.config.variant == "shared":
                    fitted = product_kmeans(rows, K, seed=seed, fixed=fitted)
                else:
                    table.codebooks[i].copy_(product_kmeans(rows, K, seed=seed))
            if table.config.variant == "shared" and fitted is not None:
                table.codebooks[0][:, : fitted.shape[1]].copy_(fitted)
        return table.eval()

    @property
    def spec(self) -> str:
        return self.config.spec

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Algorithm 1: group the batch's distinct rows, search each group's codes in one call, then one fused
        lookup (shared centroids) or one per group (unshared), and restore the batch order with one gather."""
        flat, n = ids.reshape(-1), self.num_embeddings
        # each distinct row once, sorted by (group, id) in the one sort of unique: every group is a contiguous
        # run, and the inverse is each looked-up id's place among them (no second sort and scatter)
        keys, batch, counts = unique_ids(self.group[flat] * n + flat)
        groups = torch.div(keys, n, rounding_mode="floor")
        rows = keys - groups * n
        sizes = torch.bincount(groups, minlength=self.config.num_groups).tolist()
        x = self.query.detach().index_select(0, rows)
        codes = [self._nearest(i, part, carry=True) for i, part in enumerate(x.split(sizes))]
        if self.config.variant == "shared":  # group i's codes index the first K_i centroids of the one codebook
            out, aux = vq_lookup(self.query, self.codebooks[0], rows, torch.cat(codes), counts, batch, self.beta, x=x)
        else:
            per_group = zip(rows.split(sizes), codes, counts.split(sizes), x.split(sizes))
            parts = [vq_lookup(self.query, self._codebook(i), r, c, n, None, self.beta, x=xi)
                     for i, (r, c, n, xi) in enumerate(per_group)]
            out = torch.cat([q for q, _ in parts]).index_select(0, batch)
            aux = torch.stack([a for _, a in parts]).sum()
        self._aux.add(aux, ids.numel() * self.dim)
        return out.reshape(*ids.shape, self.dim)

    def aux_loss(self) -> torch.Tensor:
        return self._aux.value(self.query.device)

    def group_rows(self, i: int) -> torch.Tensor:
        """Row ids of group ``i`` in ascending order (the order of ``codes<i>`` in the export)."""
        return torch.nonzero(self.group == i).squeeze(1)

    @torch.no_grad()
    def group_codes(self, i: int) -> torch.Tensor:
        """The ``(|V_i|, D_i)`` codes of group ``i``'s rows, in ascending row id."""
        return self._nearest(i, self.query[self.group_rows(i)])

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """The ``(n, D)`` codes of every row (a row's group decides its centroids): for the variants whose
        groups share D; with variable D a row's codes are ``group_codes`` of its group."""
        if len({D for D, _ in self.config.tiers}) > 1:
            raise ValueError(f"{self.spec}: groups have different D; read each group's codes with group_codes(i)")
        out = torch.empty(self.num_embeddings, self.config.tiers[0][0], dtype=torch.long, device=self.query.device)
        for i in range(self.config.num_groups):
            out[self.group_rows(i)] = self.group_codes(i).long()
        return out

    def export(self) -> dict[str, torch.Tensor]:
        out = {"groups": pack_bits(self.group, self.config.group_bits).cpu()}
        for i, (D, K) in enumerate(self.config.tiers):
            out[f"codes{i}"] = pack_bits(self.group_codes(i), code_bits(self.dim, D, K)).cpu()
        for name, book in self._codebook_names():
            out[name] = book.detach().to("cpu", torch.float32).contiguous()
        return out

    @classmethod
    def coded_parts(cls, tensors, num_embeddings, dim, spec) -> list[CodedPart]:
        """The export as ``CodedPart``s: one over all rows for shared centroids (every group's codes index
        the one codebook), else one per group (its rows, their codes and the group's codebook)."""
        config = MGQEConfig.parse(spec)
        groups = unpack_bits(tensors["groups"], config.group_bits, num_embeddings)
        parts = []
        for i, (D, K) in enumerate(config.tiers):
            rows = torch.nonzero(groups == i).squeeze(1)
            codes = narrow_codes(tensors[f"codes{i}"], code_bits(dim, D, K), rows.numel() * D).reshape(-1, D)
            book = tensors["centroids"] if config.variant == "shared" else tensors[f"centroids{i}"]
            parts.append(CodedPart(rows, codes, book.float()[:, :K]))
        if config.variant != "shared":
            return parts
        D, K = config.tiers[0]  # the head's K is the codebook's
        codes = torch.empty(num_embeddings, D, dtype=torch.uint8 if K <= 256 else torch.int32)
        for part in parts:
            codes[part.rows] = part.codes.to(codes.dtype)
        return [CodedPart(None, codes, tensors["centroids"].float())]

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        return decode_parts(cls.coded_parts(tensors, num_embeddings, dim, spec), num_embeddings, dim)

    # -- internals

    def _groups(self, frequencies) -> np.ndarray:
        if frequencies is None:
            raise ValueError("MGQE needs frequencies (training counts per row): "
                             "build_table(spec, n, d, frequencies=counts)")
        counts = np.asarray(frequencies.cpu() if torch.is_tensor(frequencies) else frequencies)
        if counts.shape != (self.num_embeddings,):
            raise ValueError(f"frequencies must have shape ({self.num_embeddings},), got {counts.shape}")
        return group_ids(counts, self.config.group_sizes(self.num_embeddings)).astype(np.int64)

    def _codebook(self, i: int) -> torch.Tensor:
        """Group ``i``'s centroids: the first ``K_i`` of the shared codebook, or its own codebook."""
        if self.config.variant == "shared":
            return self.codebooks[0][:, : self.config.tiers[i][1]]
        return self.codebooks[i]

    def _codebook_names(self):
        if self.config.variant == "shared":
            return [("centroids", self.codebooks[0])]
        return [(f"centroids{i}", book) for i, book in enumerate(self.codebooks)]

    def _nearest(self, i: int, x: torch.Tensor, carry: bool = False) -> torch.Tensor:
        """Codes ``(rows, D_i)`` of group ``i``'s rows ``x`` (no gradient); ``carry``: keep the codebook's sort
        order for the next training step."""
        D = self.config.tiers[i][0]
        if x.shape[0] == 0:
            return torch.empty(0, D, dtype=torch.int64, device=x.device)
        book = self._codebook(i)
        order = carried_order(self._orders, i, book) if carry else None
        return nearest_codes(split(x, D), book, self.kernel, order)  # chunked inside
