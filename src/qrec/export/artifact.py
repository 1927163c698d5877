"""Write and read a served model: a safetensors file whose metadata holds a versioned JSON manifest.

Layout: for every embedding table ``T`` the tensors of ``T.export()`` are stored as ``tables/T/<name>``
(packed codes as uint8, codebooks and scales as float32); dense weights (MLP, output layer) as
``dense/<name>`` float32; the id maps back to raw ids as ``vocab/users`` / ``vocab/items`` (int64 when the
raw ids are integers). The manifest (metadata key ``qrec``) records the format version, the run config and
every table's spec, rows and dim, so a reader rebuilds the model without the training code's state.
Graph models (LightGCN and its quantized variants) serve their final node embeddings instead: their
``export()`` tensors are stored as ``served/<name>`` and ``load_model`` returns a scorer over those codes
(``qrec.models.served``). Only ``tables/``, ``dense/`` and ``served/`` tensors count toward the model size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qrec.compress.full import FullEmbedding
from qrec.compress.spec import parse_spec
from qrec.errors import DataFormatError
from qrec.models.base import Recommender

FORMAT = "qrec-artifact"
VERSION = 1


def export_model(model: Recommender, config: dict, path: str | Path, user_ids=None, item_ids=None) -> dict:
    """Write ``model``'s serving form to ``path``; returns the manifest."""
    model = model.eval()
    tensors, tables, extra = {}, {}, {}
    served = model.export()
    if served is not None:  # graph models serve their final embeddings' codes
        for key, t in served.items():
            tensors[f"served/{key}"] = t.contiguous()
        extra["served"] = type(model).__name__
        extra["served_meta"] = model.serving_meta()
    else:
        for name, table in model.embedding_tables().items():
            for key, t in table.export().items():
                tensors[f"tables/{name}/{key}"] = t.contiguous()
            tables[name] = {"spec": table.spec, "rows": table.num_embeddings, "dim": table.dim, "class": type(table).__name__}
        for name, p in model.dense_parameters().items():
            tensors[f"dense/{name}"] = p.detach().cpu().float().contiguous()
    for key, ids in (("users", user_ids), ("items", item_ids)):
        if ids is not None and np.issubdtype(np.asarray(ids).dtype, np.integer):
            tensors[f"vocab/{key}"] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    bits = sum(t.numel() * t.element_size() * 8 for k, t in tensors.items() if not k.startswith("vocab/"))
    manifest = {"format": FORMAT, "version": VERSION, "config": config, "tables": tables, "serving_bits": bits,
                "full_bits": model.full_bits()} | extra
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"qrec": json.dumps(manifest)})
    return manifest


def read_manifest(path: str | Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own (unexported) error types on corrupt files
        raise DataFormatError(path, f"not a readable safetensors file ({e})") from e
    if "qrec" not in meta:
        raise DataFormatError(path, "safetensors file without a qrec manifest (metadata key 'qrec')")
    manifest = json.loads(meta["qrec"])
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataFormatError(path, f"unsupported artifact format {manifest.get('format')} v{manifest.get('version')}; this qrec reads {FORMAT} v{VERSION}")
    return manifest


def load_model(path: str | Path, split) -> tuple[Recommender, dict]:
    """Rebuild a servable model from an artifact: DPQ / MGQE tables kept as their codes and codebooks (scored
    from them), the other compressed tables decoded into float tables.

    ``split`` gives the id space (n_users, n_items) the backbone was built over.
    """
    from qrec.train.config import RunConfig
    from qrec.train.trainer import build

    manifest = read_manifest(path)
    tensors = load_file(str(path))
    cfg = RunConfig.from_dict(manifest["config"], source=str(path))
    if "served" in manifest:  # a graph model: score straight from the stored codes
        from qrec.models.served import served_model

        parts = {k[len("served/"):]: v for k, v in tensors.items() if k.startswith("served/")}
        meta = cfg.model_options | manifest.get("served_meta", {})  # the artifact describes itself
        return served_model(manifest["served"], parts, cfg.dim, meta).eval(), manifest
    model = build(cfg.replace(embedding="full", user_embedding=None), split)
    for name, info in manifest["tables"].items():
        parse_spec(info["spec"])  # fails clearly on a spec this qrec does not know
        parts = {k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"tables/{name}/")}
        _set_submodule(model, name, _served_table(_table_class(info["class"]), parts, info))
    dense = {k[len("dense/"):]: v for k, v in tensors.items() if k.startswith("dense/")}
    loaded = model.load_state_dict(dense, strict=False)
    table_keys = {f"{name}.weight" for name in manifest["tables"]}  # filled from the decoded codes above
    if set(loaded.missing_keys) - table_keys or loaded.unexpected_keys:
        raise DataFormatError(path, f"dense weights do not fit the model: missing {sorted(set(loaded.missing_keys) - table_keys)}, unexpected {loaded.unexpected_keys}")
    return model.eval(), manifest


def _served_table(table_cls, parts: dict[str, torch.Tensor], info: dict) -> torch.nn.Module:
    """DPQ / MGQE tables stay codes (scored from them, ``qrec.compress.coded``); the others decode to float."""
    if hasattr(table_cls, "coded_parts"):
        from qrec.compress.coded import CodedEmbedding

        return CodedEmbedding(table_cls, parts, info["rows"], info["dim"], info["spec"])
    served = FullEmbedding(info["rows"], info["dim"])
    served.weight.data.copy_(table_cls.decode_export(parts, info["rows"], info["dim"], info["spec"]))
    return served


def _table_class(name: str):
    from qrec.compress.base import EmbeddingTable

    classes = {cls.__name__: cls for cls in _subclasses(EmbeddingTable)}
    if name not in classes:
        raise DataFormatError("artifact", f"unknown table class {name}; known: {sorted(classes)}")
    return classes[name]


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _set_submodule(model: torch.nn.Module, dotted: str, module: torch.nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
