"""``synthetic-powerlaw``: SYNTHETIC interaction logs of any size, for scale tests. Never benchmark quality.

The dataset name carries its parameters (so a run's name and its cached split name the data exactly)::

    synthetic-powerlaw                                   # the defaults below
    synthetic-powerlaw:users=1e6,items=1e5,n=1e7,zipf=1.1,seed=0

Keys (any subset, any order; integers may be written ``1e6``): ``users``, ``items``, ``n`` (interactions),
``zipf`` (item popularity exponent ``s``: the item of popularity rank ``r`` is drawn with weight ``r^-s``),
``user_zipf`` (the same for user activity), ``clusters`` (planted communities) and ``affinity`` (the
probability that an interaction stays inside its user's community), ``seed``.

The model. Items and users are split into ``clusters`` communities, stratified by rank (every run of
``clusters`` consecutive ranks holds one member of each), so each community carries the same share of the
popularity and the marginal item popularity stays Zipf. The ``k``-th draw of the stream picks its user (the
first ``3 x users`` draws visit every user three times, round robin, so leave-one-out holds two items out of
every user; later ones by activity), then with probability ``affinity`` an item of the user's community,
else any item, each by popularity. So popularity alone explains part of the log and the communities the rest:
a model that learns them beats the popularity ranking (``tests/test_data_powerlaw.py`` checks GMF does).

The log is the first ``n`` *distinct* (user, item) pairs of that stream, in stream order, with the stream
position as timestamp (distinct, so leave-one-out is well defined). Draws come in fixed blocks of
``BLOCK`` positions, each from its own generator seeded by ``(seed, block)``: the result depends on the seed
alone, never on ``chunk`` (how many positions are materialised at once). Memory is ``O(users + items)`` for the
model plus 8 bytes per drawn pair (and the sort that removes repeats); no Python object per interaction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from qrec.data.interactions import Interactions
from qrec.errors import SpecError

__all__ = ["NAME", "BLOCK", "PowerLawSpec", "powerlaw_interactions"]

NAME = "synthetic-powerlaw"
BLOCK = 1 << 16  # positions per seeded generator: the unit of determinism
_MAX_ROUNDS = 64  # top-up rounds after repeats are dropped; more means the log is nearly saturated
_MAX_DENSITY = 0.5  # n / (users x items) above this: distinct pairs would take unboundedly many draws


@dataclass(frozen=True)
class PowerLawSpec:
    """The generator's parameters (see the module docstring)."""

    users: int = 10_000
    items: int = 5_000
    n: int = 200_000
    zipf: float = 1.0
    user_zipf: float = 0.5
    clusters: int = 16
    affinity: float = 0.8
    seed: int = 0

    @classmethod
    def parse(cls, name: str) -> "PowerLawSpec":
        """``synthetic-powerlaw[:key=value,...]`` -> spec; a clear ``SpecError`` naming the bad part."""
        base, _, options = name.partition(":")
        if base != NAME:
            raise SpecError(f"{name!r} is not a {NAME} dataset name")
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for part in filter(None, (p.strip() for p in options.split(","))):
            key, eq, raw = part.partition("=")
            key = key.strip()
            if not eq or key not in types:
                raise SpecError(f"{name!r}: bad option {part!r}; use key=value with keys {sorted(types)}")
            values[key] = _number(name, key, raw.strip(), integral=types[key] == "int")
        spec = cls(**values)
        spec.validate(name)
        return spec

    def validate(self, name: str = NAME) -> None:
        if min(self.users, self.items, self.n, self.clusters) < 1:
            raise SpecError(f"{name!r}: users, items, n and clusters must be >= 1")
        if self.clusters > min(self.users, self.items):
            raise SpecError(f"{name!r}: clusters ({self.clusters}) must be at most users and items")
        if not 0.0 <= self.affinity <= 1.0 or self.zipf < 0 or self.user_zipf < 0:
            raise SpecError(f"{name!r}: affinity must be in [0, 1] and the exponents >= 0")
        if self.n > _MAX_DENSITY * self.users * self.items:
            raise SpecError(f"{name!r}: n = {self.n} distinct pairs is more than {_MAX_DENSITY:g} of "
                            f"users x items = {self.users * self.items}; ask for fewer or a larger catalogue")

    @property
    def name(self) -> str:
        """The canonical dataset name of this spec (every key, fixed order)."""
        return f"{NAME}:" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in asdict(self).items())


def _number(name: str, key: str, raw: str, integral: bool):
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{name!r}: {key}={raw!r} is not a number") from None
    if not integral:
        return value
    if not math.isfinite(value) or value != int(value):
        raise SpecError(f"{name!r}: {key}={raw!r} must be a whole number")
    return int(value)


@dataclass(frozen=True)
class _Model:
    """What every draw reads: users' sampling weights and communities, items sorted by (community, rank)
    with their cumulative popularity, and each community's span of it."""

    user_cdf: np.ndarray      # cumulative activity over users (float64)
    user_cluster: np.ndarray  # community of each user
    item_cluster: np.ndarray  # community of each item
    items_sorted: np.ndarray  # item ids ordered by (community, popularity rank)
    item_cdf: np.ndarray      # cumulative popularity in that order (float64)
    lo: np.ndarray            # per community: its span [lo, hi) of item_cdf
    hi: np.ndarray


def _stratified_clusters(n: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Community of each rank: every run of ``clusters`` consecutive ranks is a permutation of them."""
    strata = -(-n // clusters)
    return np.argsort(rng.random((strata, clusters)), axis=1).reshape(-1)[:n]


def _model(spec: PowerLawSpec) -> _Model:
    rng = np.random.default_rng([spec.seed, 0])
    item_of_rank = rng.permutation(spec.items)  # ids carry no popularity order
    user_of_rank = rng.permutation(spec.users)
    item_cluster = np.empty(spec.items, dtype=np.int64)
    item_cluster[item_of_rank] = _stratified_clusters(spec.items, spec.clusters, rng)
    user_cluster = np.empty(spec.users, dtype=np.int64)
    user_cluster[user_of_rank] = _stratified_clusters(spec.users, spec.clusters, rng)
    item_weight = np.empty(spec.items)
    item_weight[item_of_rank] = np.arange(1, spec.items + 1, dtype=np.float64) ** -spec.zipf
    user_weight = np.empty(spec.users)
    user_weight[user_of_rank] = np.arange(1, spec.users + 1, dtype=np.float64) ** -spec.user_zipf
    items_sorted = np.lexsort((-item_weight, item_cluster))
    item_cdf = np.cumsum(item_weight[items_sorted])
    ends = np.cumsum(np.bincount(item_cluster, minlength=spec.clusters))
    hi = item_cdf[ends - 1]
    lo = np.r_[0.0, hi[:-1]]
    return _Model(np.cumsum(user_weight), user_cluster, item_cluster, items_sorted, item_cdf, lo, hi)


def _draw_block(spec: PowerLawSpec, model: _Model, block: int) -> np.ndarray:
    """Keys ``user * items + item`` of stream positions ``[block * BLOCK, (block + 1) * BLOCK)``. Every position
    reads three uniforms whatever its branch, so a block's draws depend on ``(seed, block)`` alone."""
    rng = np.random.default_rng([spec.seed, 1, block])
    u_user, u_stay, u_item = rng.random((3, BLOCK))
    position = block * BLOCK + np.arange(BLOCK, dtype=np.int64)
    by_activity = np.searchsorted(model.user_cdf, u_user * model.user_cdf[-1], side="right")
    users = np.where(position < 3 * spec.users, position % spec.users, np.minimum(by_activity, spec.users - 1))
    stay = u_stay < spec.affinity
    c = model.user_cluster[users]
    lo = np.where(stay, model.lo[c], 0.0)
    hi = np.where(stay, model.hi[c], model.item_cdf[-1])
    at = np.searchsorted(model.item_cdf, lo + u_item * (hi - lo), side="right")
    items = model.items_sorted[np.minimum(at, spec.items - 1)]
    return users * np.int64(spec.items) + items


def _draw(spec: PowerLawSpec, model: _Model, start_block: int, n_blocks: int, chunk: int) -> np.ndarray:
    """Keys of ``n_blocks`` whole blocks from ``start_block``, ``chunk`` positions (rounded to blocks) at a time."""
    out = np.empty(n_blocks * BLOCK, dtype=np.int64)
    step = max(1, -(-chunk // BLOCK))
    for first in range(0, n_blocks, step):
        blocks = range(start_block + first, start_block + min(n_blocks, first + step))
        out[first * BLOCK : (first + len(blocks)) * BLOCK] = np.concatenate([_draw_block(spec, model, b) for b in blocks])
    return out


def _first_distinct(keys: np.ndarray) -> np.ndarray:
    """Ascending positions of each key's first occurrence."""
    order = np.argsort(keys, kind="stable")  # equal keys keep position order: the first comes first
    sorted_keys = keys[order]
    first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    return np.sort(order[first])


def powerlaw_interactions(spec: PowerLawSpec | str = PowerLawSpec(), chunk: int = 1 << 22) -> Interactions:
    """The log of ``spec`` (a :class:`PowerLawSpec` or a dataset name), drawing ``chunk`` positions at a time."""
    spec = PowerLawSpec.parse(spec) if isinstance(spec, str) else spec
    spec.validate()
    model = _model(spec)
    keys = _draw(spec, model, 0, -(-spec.n // BLOCK), chunk)
    for _ in range(_MAX_ROUNDS):
        positions = _first_distinct(keys)
        if positions.size >= spec.n:
            break
        # repeats so far predict how many more draws give the missing distinct pairs (10% margin)
        missing = (spec.n - positions.size) * keys.size / max(1, positions.size)
        more = _draw(spec, model, keys.size // BLOCK, -(-int(1.1 * missing + 1) // BLOCK), chunk)
        keys = np.concatenate([keys, more])
    else:
        raise SpecError(f"{spec.name}: {positions.size} distinct pairs after {keys.size} draws, fewer than n = "
                        f"{spec.n}; the log is too dense for this popularity skew")
    positions = positions[: spec.n]
    keys = keys[positions]
    return Interactions(
        users=keys // spec.items, items=keys % spec.items, n_users=spec.users, n_items=spec.items,
        user_ids=np.arange(spec.users), item_ids=np.arange(spec.items), timestamps=positions,
        name=NAME, meta={"synthetic": True, "generator": spec.name,
                         "user_cluster": model.user_cluster, "item_cluster": model.item_cluster},
    )
