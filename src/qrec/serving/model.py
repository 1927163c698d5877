"""The served model on raw ids: what ``qrec.fit`` returns, ``qrec.load`` reads and ``qrec serve`` answers from.

A ``Model`` always stands on an artifact's verified bytes (``qrec.fit`` exports the trained model to bytes
and loads them back), so the object ``fit`` returns and the one ``load`` reads from its saved file are the
same scorer over the same codes, and ``save`` writes exactly the bytes it serves from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from qrec.errors import QrecError
from qrec.export.artifact import Artifact, ServingData, artifact_bytes, load_artifact
from qrec.export.vocab import IdIndex
from qrec.serving.similar import ItemSpace


class Model:
    """A recommender over raw user and item ids (integers or strings), seen items filtered.

    ``recommend`` and ``similar_items`` follow the ``implicit`` library's shapes: one id gives 1-D arrays of
    ``k``, a sequence of ids ``(len, k)`` arrays. Ranking ties go to the lower item index, exactly.
    """

    def __init__(self, artifact: Artifact):
        self._artifact = artifact
        self.scorer = artifact.model
        self.manifest = artifact.manifest
        self.users = IdIndex(artifact.data.user_ids, "user")
        self.items = IdIndex(artifact.data.item_ids, "item")
        self.seen: sp.csr_matrix = artifact.data.seen
        self._space: ItemSpace | None = None

    # -- construction

    @classmethod
    def load(cls, path: str | Path) -> "Model":
        return cls(load_artifact(path))

    @classmethod
    def from_trained(cls, model, config: dict, data: ServingData) -> "Model":
        """The served form of a trained model: exported to artifact bytes and loaded back."""
        raw, _ = artifact_bytes(model, config, data)
        return cls(load_artifact(raw, name="the exported model"))

    def save(self, path: str | Path) -> Path:
        """Write the artifact (``qrec serve`` / ``qrec.load`` read it); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self._artifact.read_raw())
        tmp.replace(path)
        return path

    # -- facts

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def user_ids(self) -> np.ndarray:
        return self.users.ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.items.ids

    def metadata(self) -> dict:
        """The manifest (config, sizes, tables) without the per-tensor checksums, plus the file size."""
        meta = {k: v for k, v in self.manifest.items() if k != "tensors"}
        return meta | {"file_bytes": self._artifact.nbytes, "n_users": self.n_users, "n_items": self.n_items}

    def __repr__(self) -> str:
        cfg = self.manifest.get("config", {})
        return (f"qrec.Model({cfg.get('model')} {cfg.get('embedding')}, {self.n_users} users x {self.n_items} items, "
                f"{self.manifest['serving_bits'] / 8 / 2**20:.2f} MiB model)")

    # -- queries on raw ids

    def recommend(self, user_ids, k: int = 10, filter_seen: bool = True, exclude=None):
        """``(item_ids, scores)``: each user's ``k`` best items; ``filter_seen`` masks everything the user is
        known to have interacted with, ``exclude`` (raw item ids; unknown ones ignored) masks more. A row
        with fewer than ``k`` rankable items ends in ``-inf`` scores."""
        scalar, ids = _as_list(user_ids)
        users = self.users.lookup(ids)
        extra = None if exclude is None else [self.items.known(list(np.atleast_1d(exclude)))] * len(users)
        top, scores = self.recommend_index(users, k, filter_seen, extra)
        items = self.items.ids[top]
        return (items[0], scores[0]) if scalar else (items, scores)

    def similar_items(self, item_ids, k: int = 10):
        """``(item_ids, scores)``: the ``k`` items whose embeddings are nearest by cosine, the item itself excluded."""
        scalar, ids = _as_list(item_ids)
        rows = self.items.lookup(ids)
        top, scores = self.similar_index(rows, k)
        items = self.items.ids[top]
        return (items[0], scores[0]) if scalar else (items, scores)

    # -- queries on row indices (the server batches these)

    def recommend_index(self, users: np.ndarray, k: int, filter_seen=True, exclude: list | None = None):
        """``(items, scores)`` arrays ``(B, k)`` for row indices ``users``; ``filter_seen`` a bool or one per
        row; ``exclude`` one array of item indices per row, or None."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        self._check_k(k, len(users))
        mask = self._exclusions(users, filter_seen, exclude)
        with torch.no_grad():
            top, scores = self.scorer.topk(torch.from_numpy(users), k, exclude=mask)
        return top.cpu().numpy(), scores.float().cpu().numpy()

    def similar_index(self, rows: np.ndarray, k: int):
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self._check_k(k, len(rows), reserved=1)
        if self._space is None:
            self._space = ItemSpace.of(self.scorer)
        return self._space.nearest(rows, k)

    def _check_k(self, k, batch: int, reserved: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_items - reserved:
            raise QrecError(f"k must be an integer in [1, {self.n_items - reserved}], got {k!r}")
        if batch == 0:
            raise QrecError("no ids given")

    def _exclusions(self, users: np.ndarray, filter_seen, exclude) -> sp.csr_matrix | None:
        """The ``(B, n_items)`` mask: the seen rows where asked, plus each row's extra items."""
        flags = np.broadcast_to(np.asarray(filter_seen, dtype=bool), users.shape)
        parts = []
        if flags.any():
            seen = self._seen_rows(users)
            parts.append(seen if flags.all() else sp.diags(flags.astype(np.float32)) @ seen)
        if exclude is not None and any(len(e) for e in exclude):
            lengths = [len(e) for e in exclude]
            cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
            rows = np.repeat(np.arange(len(users)), lengths)
            parts.append(sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(users), self.n_items)))
        if not parts:
            return None
        if len(parts) == 1 and flags.all():
            return parts[0]
        mask = sum(parts[1:], parts[0]).tocsr()
        mask.eliminate_zeros()
        return mask

    def _seen_rows(self, users: np.ndarray) -> sp.csr_matrix:
        """Rows ``users`` of ``seen`` (sorted indices, as stored), sliced from its arrays: scipy's fancy row
        indexing costs a server tens of microseconds a request in validation alone."""
        indptr, indices = self.seen.indptr, self.seen.indices
        starts, ends = indptr[users], indptr[users + 1]
        picked = indices[starts[0]:ends[0]] if len(users) == 1 else np.concatenate(
            [indices[a:b] for a, b in zip(starts, ends)])
        rows = np.zeros(len(users) + 1, dtype=indptr.dtype)
        np.cumsum(ends - starts, out=rows[1:])
        return sp.csr_matrix((np.ones(len(picked), np.float32), picked, rows), shape=(len(users), self.n_items))


def _as_list(ids) -> tuple[bool, list]:
    """``(was a single id, ids as a list)``: a str / int / numpy scalar is one id, anything else a sequence."""
    if isinstance(ids, (str, bytes, int, np.integer, np.str_)) or np.ndim(ids) == 0:
        return True, [ids.item() if isinstance(ids, np.generic) else ids]
    ids = list(np.asarray(ids).tolist()) if isinstance(ids, np.ndarray) else list(ids)
    if not ids:
        raise QrecError("no ids given")
    return False, ids
