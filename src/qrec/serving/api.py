"""qrec's Python front door: ``qrec.fit``, ``qrec.load``, ``qrec.build_table`` (re-exported by ``import qrec``).

    import qrec
    model = qrec.fit(df, model="gmf", embedding="mgqe64x256/64@0.1", protocol="all", epochs=20)
    items, scores = model.recommend(["alice", "bob"], k=10)     # raw ids in, raw ids out; seen items filtered
    model.save("model.safetensors")                            # then: qrec serve model.safetensors
    same = qrec.load("model.safetensors")                      # the artifact alone, no training data
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qrec.errors import QrecError
from qrec.serving.model import Model

__all__ = ["fit", "load", "build_table", "Model"]

# file suffix -> registered generic format of ``qrec.data.datasets``
_FORMAT_BY_SUFFIX = {".csv": "table", ".tsv": "table", ".tab": "table", ".parquet": "table", ".pq": "table",
                     ".inter": "table", ".txt": "sequences", ".dat": "movielens", ".data": "movielens"}


def fit(data, model: str = "gmf", embedding: str = "full", *, protocol: str = "loo", duplicates: str = "sum",
        dataset: str | None = None, out: str | Path | None = None, verbose: bool = False, **config) -> Model:
    """Train a model and return it ready to serve (``Model``: ``recommend``, ``similar_items``, ``save``).

    ``data``: a file path (CSV / TSV / Parquet with user and item columns, ``user item item ...`` sequences,
    a LightGCN ``train.txt`` / ``test.txt`` folder; ``dataset=`` names the format or a registered dataset
    otherwise), a pandas DataFrame with user and item columns (integer or string ids) and optional timestamp
    and rating columns (without timestamps, row order is time order), or a SciPy sparse user x item matrix.
    ``duplicates``: what a repeated (user, item) pair becomes, the same for a file, a DataFrame or a matrix:
    ``"sum"`` (one interaction, ratings or else counts summed, the latest timestamp), ``"drop"`` (its first
    row) or ``"error"`` (refused, naming the file's line or the frame's row; ``qrec train --duplicates``).
    ``protocol``: ``"loo"`` (hold out each user's last two items: the returned model's ``metrics`` are
    validation and test numbers), ``"ratio"``, or ``"all"`` (train on every interaction, to serve).
    ``**config``: any ``RunConfig`` field (``dim``, ``epochs``, ``lr``, ``batch_size``, ``seed``,
    ``model_options``, ``threads``, ...). ``out``: a run folder to checkpoint into (resumable).
    """
    from qrec.data.splits import kcore_filter, make_split
    from qrec.export.artifact import history_length, serving_data
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split
    from qrec.train.trainer import fit as train

    try:
        # made, not replaced: defaults that follow other keys (select_metric from ks) follow the given ones
        given = dict(model=model, embedding=embedding, protocol=protocol, duplicates=duplicates) | config
        cfg = RunConfig(**{k: v for k, v in given.items() if v is not None})
    except TypeError as e:  # an unknown keyword
        known = sorted(f.name for f in dataclasses.fields(RunConfig))
        raise QrecError(f"qrec.fit: {e}; known config keys: {known}") from None
    if isinstance(data, (str, Path)):
        path = Path(data).resolve()  # absolute: the config (and the artifact's record of it) works from anywhere
        cfg = cfg.replace(dataset=dataset or _format_of(path), data_path=str(path))
        split = load_split(cfg)
    else:
        interactions = _in_memory(data, duplicates)
        if cfg.min_count > 0:
            interactions = kcore_filter(interactions, min_user=cfg.min_count, min_item=cfg.min_count)
        cfg = cfg.replace(dataset=dataset or interactions.name)
        split = make_split(interactions, protocol, seed=cfg.seed)
    result = train(cfg, out, progress=verbose, log=print if verbose else None, split=split)
    served = Model.from_trained(result.model, cfg.to_dict(), serving_data(split, history_length(result.model)))
    served.metrics = {"valid": result.valid, "test": result.test, "best_epoch": result.best_epoch}
    return served


def load(path: str | Path) -> Model:
    """The model of an artifact (``model.save`` / ``qrec export``), from the file alone."""
    return Model.load(path)


def build_table(spec: str, n: int, d: int, frequencies=None, **options):
    """A compressed embedding table, a drop-in ``nn.Module`` for ``nn.Embedding(n, d)`` in your own model.

    ``spec``: ``full``, ``lr48``, ``sq8``, ``dpq64x256``, ``mgqe64x256/64@0.1``, ... (``qrec.compress.spec``;
    ``qrec.compress.code_size(spec, n, d)`` is its served size in bits). ``table(ids)`` returns
    ``ids.shape + (d,)`` float vectors, differentiable (straight-through where the table quantizes).
    MGQE needs ``frequencies``: each row's training count (its head / tail tiers are by frequency).

    Auxiliary loss: after a training step's forward passes, add ``table.aux_loss()`` to your loss. For DPQ
    and MGQE it is the vector-quantization loss of the step's lookups, ``||c - sg(x)||^2 + beta ||x -
    sg(c)||^2`` per looked-up row (centroids pulled to their queries, queries committed to their
    centroids), averaged over every lookup since it was last read (a table looked up several times in one
    step counts each); reading it starts the next step's average. Without it the codebooks do not train.
    It is zero for the other formats. ``table.export()`` gives the tensors a server stores and
    ``table.serving_bits()`` their size; ``qrec.compress.spec.compress_trained(spec, weight)`` fits a
    format to an already trained float table instead (returned in eval mode).
    """
    from qrec.compress.spec import build_table as build

    return build(spec, n, d, frequencies=frequencies, **options)


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "lightgcn"
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise QrecError(f"{path}: cannot tell the file's format from its suffix; pass dataset= "
                        "('table', 'sequences', 'lightgcn', 'movielens' or a registered name)")
    return fmt


def _in_memory(data, duplicates: str):
    import scipy.sparse as sp

    from qrec.data.frames import from_frame, from_matrix

    if sp.issparse(data):
        return from_matrix(data, duplicates)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return from_frame(data, duplicates)
    raise QrecError(f"qrec.fit: data must be a file path, a pandas DataFrame or a SciPy sparse matrix, got "
                    f"{type(data).__name__}")
