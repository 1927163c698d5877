"""Served forms of graph models: scorers rebuilt from an artifact's codes, without the graph or training state.

A GCN's serving form is its *final* node embeddings (propagation happens once, offline), so its artifact
holds those, not the layer-0 tables: float32 rows for LightGCN, packed sign bits + scales for the 1-bit
GCN (scored by popcount), packed b-bit codes + steps for the low-bit GCN (scored by integer dot products).
Each scorer answers ``score``/``score_all`` exactly as the trained model does in eval mode: the trained
quantized GCNs score through the same code classes (``ScoredFromCodes``), so the two cannot drift apart.
"""

from __future__ import annotations

import torch

from qrec.compress.base import tensor_bits
from qrec.models.base import Recommender
from qrec.retrieval.hamming import BinaryCodes, angular_scores
from qrec.retrieval.intdot import IntCodes, VectorCodes, unpack_codes
from qrec.quant.uniform import int8_codes


class ServedScorer(Recommender):
    """A read-only recommender over stored user and item representations; nothing to train."""

    def __init__(self, n_users: int, n_items: int, bits: int):
        super().__init__(n_users, n_items)
        self._bits = int(bits)

    def serving_bits(self) -> int:
        return self._bits

    def full_bits(self) -> int:  # the served float32 final embeddings of the same d
        return 32 * (self.n_users + self.n_items) * self.dim


class FloatServed(ServedScorer):
    def __init__(self, users: torch.Tensor, items: torch.Tensor, bits: int):
        super().__init__(len(users), len(items), bits)
        self.users, self.items, self.dim = users.float(), items.float(), int(users.shape[1])

    def score(self, users, items):
        return (self.users[users] * self.items[items]).sum(-1)

    def score_all(self, users):
        return self.users[users] @ self.items.T


class CodesServed(ServedScorer):
    """Codes with a ``score`` against all items (``BinaryCodes`` or ``IntCodes``) and a ``decode``."""

    def __init__(self, users, items, dim: int, bits: int, backend: str = "auto", kind: str = "BinaryGCN",
                 similarity: str = "dot"):
        super().__init__(len(users), len(items), bits)
        self.users, self.items, self.dim, self.backend = users, items, int(dim), backend
        self.similarity = similarity
        self.served_kind = kind  # the trained class whose codes these are: what its artifact records

    def export(self) -> dict[str, torch.Tensor]:
        """The stored code tensors, as the trained model exported them (an artifact can be written again)."""
        return {f"{side}_{name}": t for side, c in (("user", self.users), ("item", self.items))
                for name, t in c.export().items()}

    def serving_meta(self) -> dict:
        return ({"served_kind": self.served_kind} | ({"bits": self.items.bits} if isinstance(self.items, IntCodes) else {})
                | ({"similarity": self.similarity} if self.similarity != "dot" else {}))

    def score(self, users, items):
        return pair_scores(self.users, self.items, users, items, self.similarity)

    def score_all(self, users):
        return code_scores(self.users[users], self.items, self.backend, self.similarity)

    @torch.no_grad()
    def topk(self, users, k, exclude=None):
        """Sign codes (the 1-bit GCNs) on the CPU: popcount fused with the top-k, no score matrix."""
        fused = sign_topk(self.users, self.items, users, k, exclude) if self.similarity == "dot" else None
        return super().topk(users, k, exclude) if fused is None else fused


class ScoredFromCodes:
    """Mixin for a trained GCN evaluated and exported through its node codes, exactly as ``CodesServed`` will
    score them: ``refresh()`` sets ``self._codes = (user codes, item codes)`` (``BinaryCodes`` or
    ``IntCodes``); training steps reset ``_codes`` to None, so the codes are rebuilt once per evaluation."""

    similarity = "dot"  # or "angular" (1-bit codes): what ``code_scores`` computes from them

    def codes(self):
        """``(user codes, item codes)``, recomputed if stale."""
        if self._codes is None:
            self.refresh()
        return self._codes

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        cu, ci = self.codes()
        return pair_scores(cu, ci, users.to(cu.device), items.to(cu.device), self.similarity)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores against every item from the codes (popcount or integer dot products)."""
        cu, ci = self.codes()
        return code_scores(cu[users.to(cu.device)], ci, self.scoring_backend, self.similarity)

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude=None):
        """As the served model ranks (``CodesServed.topk``): sign codes on the CPU fused with the top-k."""
        fused = sign_topk(*self.codes(), users, k, exclude) if self.similarity == "dot" else None
        return super().topk(users, k, exclude) if fused is None else fused

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        """Each side's code tensors, prefixed ``user_`` / ``item_`` (the names ``served_model`` reads)."""
        cu, ci = self.codes()
        return {f"{side}_{name}": t for side, c in (("user", cu), ("item", ci)) for name, t in c.export().items()}

    def serving_bits(self) -> int:
        return tensor_bits(self.export()) + self.dense_bits()


def code_scores(user_codes, item_codes, backend: str = "auto", similarity: str = "dot") -> torch.Tensor:
    """``(users, items)`` scores from codes: their dot products (popcount or integer products), or under
    ``similarity="angular"`` (sign codes at the norm scale) SimHash's estimate ``angular_scores`` of them."""
    dots = user_codes.score(item_codes, backend=backend)
    if similarity == "dot":
        return dots
    return angular_scores(dots, _row_norms(user_codes)[:, None] * _row_norms(item_codes)[None, :])


def _row_norms(codes) -> torch.Tensor:
    """The decoded rows' norms, kept on ``codes`` (an item table is scored against many user blocks)."""
    if "_norms" not in codes.__dict__:
        codes._norms = codes.decode().norm(dim=1)
    return codes._norms


def pair_scores(user_codes, item_codes, users: torch.Tensor, items: torch.Tensor, similarity: str = "dot") -> torch.Tensor:
    """Scores of the (broadcast) ``users`` x ``items`` pairs from their decoded codes."""
    users, items = torch.broadcast_tensors(users, items)
    u, i = user_codes[users.reshape(-1)].decode(), item_codes[items.reshape(-1)].decode()
    pairs = (u * i).sum(-1)
    if similarity != "dot":
        pairs = angular_scores(pairs, u.norm(dim=1) * i.norm(dim=1))
    return pairs.reshape(users.shape)


def sign_topk(user_codes, item_codes, users: torch.Tensor, k: int, exclude=None):
    """``BinaryCodes.topk`` (popcount fused with the top-k) when both sides are sign codes on the CPU, else None."""
    binary = _as_binary(user_codes), _as_binary(item_codes)
    if any(b is None for b in binary) or binary[0].bits.device.type != "cpu":
        return None
    return binary[0][users.to(binary[0].bits.device)].topk(binary[1], k, exclude)


def _as_binary(codes) -> BinaryCodes | None:
    if isinstance(codes, BinaryCodes):
        return codes
    return codes.binary() if codes.bits == 1 else None


def served_model(kind: str, tensors: dict[str, torch.Tensor], dim: int, options: dict) -> ServedScorer:
    """Rebuild the scorer of a model exported with ``served/`` tensors (``kind``: its class name; ``options``:
    the run's model options updated by the artifact's ``served_meta``)."""
    bits = sum(t.numel() * t.element_size() * 8 for t in tensors.values())
    if kind == "Popularity":
        from qrec.models.pop import Popularity

        return Popularity(int(options["n_users"]), tensors["item_counts"])
    if kind == "LightGCN":
        return FloatServed(tensors["user_emb"], tensors["item_emb"], bits)
    if kind == "BinaryGCN":
        users, items = (BinaryCodes(tensors[f"{s}_bits"], tensors[f"{s}_scales"].float(), dim) for s in ("user", "item"))
        return CodesServed(users, items, dim, bits, options.get("scoring_backend", "auto"))
    if kind == "LowBitGCN":
        if "bits" not in options:
            raise ValueError("a low-bit GCN artifact must record its bit width (manifest 'served_meta')")
        b = int(options["bits"])

        def codes(side: str) -> IntCodes:
            if f"{side}_codebook" in tensors:  # vector codes (``vector_dim`` > 1)
                return VectorCodes.from_export({k: tensors[f"{side}_{k}"] for k in ("codes", "step", "codebook")}, b, dim)
            c = unpack_codes(tensors[f"{side}_codes"], b, dim)
            step = tensors[f"{side}_step"]
            return IntCodes(*int8_codes(c, b, step), bits=b, step_dtype=step.dtype)

        return CodesServed(codes("user"), codes("item"), dim, bits, options.get("scoring_backend", "auto"), kind,
                           options.get("similarity", "dot"))
    raise ValueError(f"no served form for model class {kind!r}")
