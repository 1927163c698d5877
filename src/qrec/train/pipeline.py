"""Config -> Split: resolve the dataset, filter, split. Cached per process (grids reuse one split)."""

from __future__ import annotations

from functools import lru_cache

from qrec.data import Interactions, Split
from qrec.data.datasets import load_dataset
from qrec.data.splits import kcore_filter, make_split, seeded_protocol
from qrec.train.config import RunConfig


def load_split(cfg: RunConfig) -> Split:
    seed = cfg.seed if seeded_protocol(cfg.protocol) else 0
    return _cached_split(cfg.dataset, cfg.data_path, cfg.protocol, cfg.min_count, seed, cfg.given_test, cfg.duplicates)


@lru_cache(maxsize=8)
def _cached_split(dataset: str, data_path: str | None, protocol: str, min_count: int, seed: int, given_test: str,
                  duplicates: str) -> Split:
    data = load_dataset(dataset, path=data_path, duplicates=duplicates)
    if isinstance(data, Interactions) and min_count > 0:
        data = kcore_filter(data, min_user=min_count, min_item=min_count)
    return make_split(data, protocol, seed=seed, given_test=given_test)
