"""Write and read a served model: one self-contained safetensors file (format version 2, docs/ARTIFACT.md).

Tensors (every name, dtype, shape and SHA-256 listed in the manifest; ``export.container`` checks them):

* model: ``tables/<table>/<name>`` (each embedding table's ``export()``: packed codes as uint8, codebooks and
  scales as float32) and ``dense/<name>`` float32 (MLP, output layer); graph models (LightGCN and its
  quantized variants) and the popularity model serve stored scores' inputs instead, ``served/<name>``, and
  load into a scorer over them (``qrec.models.served``);
* ``vocab/users``, ``vocab/items``: the raw ids of every row (``export.vocab``: int64, or UTF-8 strings);
* ``seen/indptr`` (int64) and ``seen/items`` (int32): each user's known items, all parts of the history
  (train, validation and test), as CSR: what ``recommend`` filters;
* ``history/items`` (int32, ``n_users x L``, ``-1`` padded on the left): SASRec's last-``L`` items per user,
  over all parts: what a sequential model reads to serve a user.

The manifest (metadata key ``qrec``) records the format and version, the run config, every table's spec,
rows, dim and class, ``n_users`` / ``n_items`` and the sizes: ``serving_bits`` (the model tensors only, as
before), ``full_bits`` (the same model with float32 tables), ``vocab_bits`` and ``history_bits`` (seen
items and SASRec windows), reported beside the model size, never hidden in it.

``load_artifact`` needs only the file: it never reads the training data, nor imports the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from qrec.compress.base import tensor_bits
from qrec.compress.dpq import DPQEmbedding
from qrec.compress.full import FullEmbedding
from qrec.compress.mgqe import MGQEEmbedding
from qrec.compress.spec import parse_spec
from qrec.data import Split
from qrec.data.sequences import last_items, user_sequences
from qrec.errors import DataFormatError
from qrec.export.container import pack, read_bytes, read_header, unpack
from qrec.export.vocab import decode_ids, encode_ids
from qrec.models.base import Recommender

FORMAT = "qrec-artifact"
VERSION = 2
MODEL_PREFIXES = ("tables/", "dense/", "served/")


@dataclass
class ServingData:
    """What a server knows besides the model: raw ids, each user's seen items, SASRec's history windows."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: sp.csr_matrix               # (n_users, n_items), 1 where the user has interacted with the item
    history: np.ndarray | None = None  # (n_users, L) int64 item indices, PAD (-1) on the left; SASRec only


def serving_data(split: Split, maxlen: int | None = None) -> ServingData:
    """A split's serving data: every part (train, validation, test) counts as seen and as history."""
    parts = [p for p in (split.train, split.valid, split.test) if len(p)] or [split.train]
    seen = sum((p.to_csr() for p in parts[1:]), parts[0].to_csr()).tocsr()
    seen.data[:] = 1
    history = last_items(*user_sequences(*parts), maxlen) if maxlen else None
    return ServingData(np.asarray(split.train.user_ids), np.asarray(split.train.item_ids), seen, history)


def history_length(model: Recommender) -> int | None:
    """How many recent items per user a served model reads (SASRec's window), None for the others."""
    return model.maxlen if model.loss_kind == "sequence" else None


def artifact_bytes(model: Recommender, config: dict, data: ServingData) -> tuple[bytes, dict]:
    """The artifact of ``model`` (its serving form) with ``data``; returns ``(file bytes, manifest)``."""
    model = model.eval()
    tensors, manifest = _model_tensors(model)
    tensors |= encode_ids("vocab/users", data.user_ids) | encode_ids("vocab/items", data.item_ids)
    seen = data.seen.tocsr()
    seen.sort_indices()
    item_dtype = np.int16 if model.n_items < 2**15 else np.int32  # item indices in the fewest bytes that hold them
    tensors["seen/indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
    tensors["seen/items"] = torch.from_numpy(seen.indices.astype(item_dtype))
    if data.history is not None:
        tensors["history/items"] = torch.from_numpy(np.asarray(data.history).astype(item_dtype))
    bits = lambda *prefixes: tensor_bits({k: t for k, t in tensors.items() if k.startswith(prefixes)})  # noqa: E731
    manifest |= {"format": FORMAT, "version": VERSION, "config": config, "n_users": model.n_users,
                 "n_items": model.n_items, "serving_bits": bits(*MODEL_PREFIXES), "full_bits": model.full_bits(),
                 "vocab_bits": bits("vocab/"), "history_bits": bits("seen/", "history/")}
    return pack(tensors, manifest)


def export_model(model: Recommender, config: dict, path: str | Path, data: ServingData) -> dict:
    """Write ``model``'s artifact to ``path``; returns the manifest."""
    raw, manifest = artifact_bytes(model, config, data)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_bytes(raw)
    tmp.replace(path)  # a reader never sees half a file
    return manifest


def _model_tensors(model: Recommender) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, manifest = {}, {"tables": {}}
    served = model.export()
    if served is not None:  # graph models (and pop) serve their final representations
        meta = dict(model.serving_meta())
        manifest["served"] = meta.pop("served_kind", type(model).__name__)  # a served scorer names its source
        manifest["served_meta"] = meta
        return {f"served/{key}": t for key, t in served.items()}, manifest
    for name, table in model.embedding_tables().items():
        tensors |= {f"tables/{name}/{key}": t for key, t in table.export().items()}
        manifest["tables"][name] = {"spec": table.spec, "rows": table.num_embeddings, "dim": table.dim,
                                    "class": type(table).__name__}
    tensors |= {f"dense/{name}": p.detach().cpu().float() for name, p in model.dense_parameters().items()}
    return tensors, manifest


# ------------------------------------------------------------------------------------------- reading


@dataclass
class Artifact:
    model: Recommender
    data: ServingData
    manifest: dict
    raw: bytes | None  # the verified bytes of an artifact loaded from bytes: what saving it writes
    source: Path | None  # the file of an artifact loaded from a path (its bytes are not kept: a server of a
                         # 10^7-item float table would hold them twice)
    nbytes: int

    def read_raw(self) -> bytes:
        """The artifact's bytes: kept ones, or the source file again, refused if its manifest changed since."""
        if self.raw is not None:
            return self.raw
        unchanged = read_header(self.source) == self.manifest  # its per-tensor SHA-256s included
        raw = read_bytes(self.source)
        if not unchanged or len(raw) != self.nbytes:
            raise DataFormatError(self.source, "changed on disk since it was loaded; load it again to save it")
        return raw


def read_manifest(path: str | Path) -> dict:
    """The manifest of an artifact (header only, checked against its own hash), its format checked."""
    return _check_format(read_header(path), path)


def load_artifact(source: str | Path | bytes, name: str = "artifact") -> Artifact:
    """The servable model and its serving data, from the artifact alone (a path, or its bytes)."""
    where = name if isinstance(source, (bytes, bytearray)) else str(source)
    raw = bytes(source) if isinstance(source, (bytes, bytearray)) else read_bytes(source)
    tensors, manifest = unpack(raw, where, check=_check_format)
    try:
        data = _serving_data(tensors, manifest, where)
        model = _rebuild(tensors, manifest, data, where)
    except DataFormatError:
        raise
    except (KeyError, IndexError, AttributeError, RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as e:
        # consistent hashes, foreign content (a crafted file): the manifest is data, never trusted to be well formed
        raise DataFormatError(where, f"does not describe a model this qrec can serve ({type(e).__name__}: {e})") from e
    if (model.n_users, model.n_items) != (len(data.user_ids), len(data.item_ids)):
        raise DataFormatError(where, f"model has {model.n_users} x {model.n_items} rows, the vocabularies "
                                     f"{len(data.user_ids)} x {len(data.item_ids)}")
    kept = raw if isinstance(source, (bytes, bytearray)) else None
    return Artifact(model.eval(), data, manifest, kept, None if kept is not None else Path(source), len(raw))


def load_model(path: str | Path) -> tuple[Recommender, dict]:
    """The servable model of an artifact and its manifest (see ``load_artifact`` for the serving data)."""
    artifact = load_artifact(path)
    return artifact.model, artifact.manifest


def _check_format(manifest: dict, path) -> dict:
    if manifest.get("format") != FORMAT:
        raise DataFormatError(path, f"not a qrec artifact (format {manifest.get('format')!r})")
    version = manifest.get("version")
    if version == 1:
        raise DataFormatError(path, "a version-1 qrec artifact: it is not self-contained (no vocabularies, seen "
                                    "items or checksums) and this qrec reads version 2; re-export it from its "
                                    "run folder: qrec export <run folder> <out.safetensors>")
    if version != VERSION:
        raise DataFormatError(path, f"artifact format version {version!r}; this qrec reads version {VERSION}")
    return manifest


def _serving_data(tensors: dict[str, torch.Tensor], manifest: dict, where) -> ServingData:
    n_users, n_items = int(manifest["n_users"]), int(manifest["n_items"])
    users = decode_ids(tensors, "vocab/users", n_users, where)
    items = decode_ids(tensors, "vocab/items", n_items, where)
    indptr, rows = tensors["seen/indptr"].numpy(), tensors["seen/items"].numpy().astype(np.int64)
    if (indptr.shape != (n_users + 1,) or indptr[0] != 0 or indptr[-1] != len(rows) or np.any(np.diff(indptr) < 0)
            or (len(rows) and (rows.min() < 0 or rows.max() >= n_items))):
        raise DataFormatError(where, "seen/indptr and seen/items are not a CSR matrix of the users' items")
    seen = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), rows, indptr), shape=(n_users, n_items))
    history = None
    if "history/items" in tensors:
        history = tensors["history/items"].numpy().astype(np.int64)
        if history.ndim != 2 or len(history) != n_users or history.min(initial=0) < -1 or history.max(initial=0) >= n_items:
            raise DataFormatError(where, f"history/items {history.shape} is not one window of item indices per user")
    return ServingData(users, items, seen, history)


def _rebuild(tensors: dict[str, torch.Tensor], manifest: dict, data: ServingData, where) -> Recommender:
    """The model from its tensors: DPQ / MGQE tables kept as codes and codebooks (scored from them), the
    other compressed tables decoded into float tables; graph models as scorers over their stored codes."""
    from qrec.models.registry import assemble_model

    cfg = manifest["config"]
    if "served" in manifest:
        from qrec.models.served import served_model

        parts = {k[len("served/"):]: v for k, v in tensors.items() if k.startswith("served/")}
        meta = dict(cfg.get("model_options", {})) | manifest.get("served_meta", {})  # the artifact describes itself
        return served_model(manifest["served"], parts, int(cfg["dim"]), meta)
    tables = {}
    for name, info in manifest["tables"].items():
        parse_spec(info["spec"])  # fails clearly on a spec this qrec does not know
        parts = {k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"tables/{name}/")}
        tables[name] = _served_table(_table_class(info["class"], where), parts, info)
    model = assemble_model(cfg["model"], tables, int(manifest["n_users"]), data.history, cfg.get("model_options", {}))
    dense = {k[len("dense/"):]: v for k, v in tensors.items() if k.startswith("dense/")}
    loaded = model.load_state_dict(dense, strict=False)
    table_keys = {k for k in model.state_dict() if k.split(".")[0] in tables}  # filled from the codes above
    if set(loaded.missing_keys) - table_keys or loaded.unexpected_keys:
        raise DataFormatError(where, f"dense weights do not fit the model: missing "
                                     f"{sorted(set(loaded.missing_keys) - table_keys)}, unexpected {loaded.unexpected_keys}")
    return model


def _served_table(table_cls, parts: dict[str, torch.Tensor], info: dict) -> torch.nn.Module:
    """DPQ / MGQE tables stay codes (scored from them, ``qrec.compress.coded``); the others decode to float."""
    if issubclass(table_cls, (DPQEmbedding, MGQEEmbedding)):  # the classes with coded parts
        from qrec.compress.coded import CodedEmbedding

        return CodedEmbedding(table_cls, parts, info["rows"], info["dim"], info["spec"])
    decoded = table_cls.decode_export(parts, info["rows"], info["dim"], info["spec"])
    return FullEmbedding(info["rows"], info["dim"], weight=decoded)  # the decoded tensor itself, no second copy


def _table_class(name: str, where):
    from qrec.compress.base import EmbeddingTable

    classes = {cls.__name__: cls for cls in _subclasses(EmbeddingTable)}
    if name not in classes:
        raise DataFormatError(where, f"unknown table class {name}; known: {sorted(classes)}")
    return classes[name]


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
