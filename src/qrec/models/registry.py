"""Backbone names -> models. Every backbone takes its embedding tables from spec strings."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from qrec.compress import build_table
from qrec.data import Split
from qrec.errors import SpecError
from qrec.models.base import Recommender

_BUILDERS: dict[str, Callable[..., Recommender]] = {}


def register_model(name: str):
    def wrap(fn):
        _BUILDERS[name] = fn
        return fn

    return wrap


def model_names() -> list[str]:
    return sorted(_BUILDERS)


def build_model(name: str, split: Split, user_spec: str, item_spec: str, dim: int = 64, **options) -> Recommender:
    """Build backbone ``name`` for ``split``; user and item tables from spec strings.

    Row frequencies for MGQE's head/tail partition are the training counts (never valid/test).
    """
    if name not in _BUILDERS:
        raise SpecError(f"unknown model {name!r}; choose one of {model_names()}")
    try:
        return _BUILDERS[name](split, user_spec, item_spec, dim, **options)
    except TypeError as e:  # an option the backbone does not take: say which, not a bare traceback
        if "unexpected keyword" not in str(e):
            raise
        raise SpecError(f"model {name!r}: {e} (model options given: {sorted(options)})") from e


def row_frequencies(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Training interactions per user and per item: what MGQE ranks rows by."""
    return (np.bincount(split.train.users, minlength=split.n_users),
            np.bincount(split.train.items, minlength=split.n_items))


def _tables(split: Split, user_spec: str, item_spec: str, dim: int, init_std: float):
    user_freq, item_freq = row_frequencies(split)
    user = lambda: build_table(user_spec, split.n_users, dim, frequencies=user_freq, init_std=init_std)  # noqa: E731
    item = lambda: build_table(item_spec, split.n_items, dim, frequencies=item_freq, init_std=init_std)  # noqa: E731
    return user, item


@register_model("gmf")
def _gmf(split, user_spec, item_spec, dim, init_std: float = 0.01, row_bias: bool = False):
    from qrec.models.gmf import GMF

    user, item = _tables(split, user_spec, item_spec, dim, init_std)
    return GMF(user(), item(), row_bias=row_bias)


@register_model("neumf")
def _neumf(split, user_spec, item_spec, dim, init_std: float = 0.01, row_bias: bool = False):
    from qrec.models.neumf import NeuMF

    user, item = _tables(split, user_spec, item_spec, dim, init_std)
    return NeuMF(user(), item(), user(), item(), row_bias=row_bias)


@register_model("sasrec")
def _sasrec(split, user_spec, item_spec, dim, init_std: float = 0.01, maxlen: int = 50, blocks: int = 2,
            heads: int = 1, dropout: float = 0.2):
    """SASRec: one item table (the user spec is unused: a user is their history); MGQE's settings by default."""
    from qrec.data.sequences import history_windows
    from qrec.models.sasrec import SASRec

    _, item = _tables(split, user_spec, item_spec, dim, init_std)
    windows = history_windows(split.train, split.valid, maxlen)
    return SASRec(item(), split.n_users, windows, maxlen=maxlen, blocks=blocks, heads=heads, dropout=dropout)


@register_model("pop")
def _pop(split, user_spec, item_spec, dim):
    """Popularity: every user gets the items with the most training interactions (the specs are unused)."""
    from qrec.models.pop import Popularity

    return Popularity(split.n_users, row_frequencies(split)[1])


def assemble_model(name: str, tables: dict, n_users: int, history=None, options: dict | None = None) -> Recommender:
    """A backbone around already-built (served) ``tables``, named as the trained model's attributes: what an
    artifact loads into, without a split or training data. ``history``: SASRec's served windows."""
    from qrec.models.gmf import GMF
    from qrec.models.neumf import NeuMF
    from qrec.models.sasrec import SASRec

    options = options or {}
    with torch.random.fork_rng(devices=[]):  # the throw-away init of dense layers leaves the caller's RNG alone
        if name == "gmf":
            return GMF(tables["user_table"], tables["item_table"])
        if name == "neumf":
            return NeuMF(tables["gmf_user"], tables["gmf_item"], tables["mlp_user"], tables["mlp_item"])
        if name == "sasrec":
            if history is None:
                raise ValueError("a SASRec artifact needs its users' history windows (history/items)")
            kept = {k: options[k] for k in ("blocks", "heads", "dropout") if k in options}
            return SASRec(tables["item_table"], n_users, {"test": history}, maxlen=history.shape[1], **kept)
    raise ValueError(f"no served form for model {name!r}")


def _graph_tables(split: Split, user_spec: str, item_spec: str, dim: int, init_std: float) -> dict:
    """Layer-0 tables for a GCN; LightGCN's own N(0, 0.1) init unless the config says otherwise."""
    user, item = _tables(split, user_spec, item_spec, dim, init_std)
    return {"user_table": user(), "item_table": item()}


def _graph_model(cls_path: str):
    """A builder for a LightGCN-family class: the graph is the training split only (never valid/test)."""

    def build(split, user_spec, item_spec, dim, init_std: float = 0.1, teacher: Recommender | None = None, **options):
        module, name = cls_path.rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        if teacher is not None:
            return _from_teacher(cls, teacher, user_spec, item_spec, dim, options)
        tables = _graph_tables(split, user_spec, item_spec, dim, init_std)
        return cls(split.n_users, split.n_items, split.train, dim=dim, init_std=init_std, **tables, **options)

    return build


def _from_teacher(cls, teacher: Recommender, user_spec: str, item_spec: str, dim: int, options: dict):
    """``teacher``: a trained LightGCN (``qrec.train`` resolves a teacher run to it): start from its trained layer-0
    tables (and, for the 1-bit GCN, distil its top-ranked items), as BiGeaR trains its student from a
    full-precision LightGCN."""
    from qrec.models.lightgcn import LightGCN

    if type(teacher) is not LightGCN:
        raise SpecError(f"the teacher is a {type(teacher).__name__}; a full-precision lightgcn run is needed")
    if dim < teacher.dim or {user_spec, item_spec} != {"full"}:
        raise SpecError(f"a student of a teacher has full layer-0 tables and a d of at least the teacher's "
                        f"({teacher.dim}; a wider one starts from an orthonormal lift of its rows)")
    return cls.from_lightgcn(teacher, dim=dim, **options)


register_model("lightgcn")(_graph_model("qrec.models.lightgcn.LightGCN"))
register_model("binary-gcn")(_graph_model("qrec.models.binary_gcn.BinaryGCN"))
register_model("lowbit-gcn")(_graph_model("qrec.models.lowbit_gcn.LowBitGCN"))
