"""How much does quantizing a *trained* float model lose, before any quantization-aware training?

``qrec ptq <run>`` evaluates a trained full-precision run with its embeddings compressed after training (no
gradient step). It separates what a code format can hold from what training recovers: the gap from a row here
to the quantization-aware run of the same format is training's contribution.

* a LightGCN run: b-bit codes of the final embeddings (HQ-GNN's form), with and without ITQ's rotation (at one
  bit also scored by SimHash's angle estimate, ``similarity="angular"``; at 2-4 bits also as vector codes, a byte
  per block of ``8 // b`` coordinates, ``vector_dim``), and 1-bit codes of every layer (BiGeaR's form);
* a GMF / NeuMF run with full tables (MGQE's baselines): every table in each spec's format, fitted to the
  trained table (``qrec.compress.spec.compress_trained``: SQ by per-dimension min/max, the GCN papers' per-row
  b-bit grid ``q<b>``, low rank by SVD, DPQ / MGQE codebooks by k-means), evaluated at the run's selected (best
  validation) epoch.

Every table ends with the popularity model of the same training data (``--model pop``, nothing learned): the floor a
compressed model has to clear to be worth its bits.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path

import torch

from qrec.compress.full import FullEmbedding
from qrec.compress.spec import compress_trained
from qrec.errors import QrecError
from qrec.models.evaluate import evaluate_model
from qrec.models.binary_gcn import BinaryGCN
from qrec.models.gmf import GMF
from qrec.models.lightgcn import LightGCN
from qrec.models.lowbit_gcn import LowBitGCN
from qrec.models.neumf import NeuMF
from qrec.models.registry import build_model, row_frequencies
from qrec.records import SCHEMA_VERSION, git_commit, write_record
from qrec.train.trainer import load_trained

#: the last row of every table
POPULARITY = "popularity (training counts, nothing learned)"
#: formats ``qrec ptq`` fits to a GMF / NeuMF run's tables besides SQ at ``--bits`` (MGQE Table 3 / Fig. 6)
TABLE_SPECS = ("lr48", "dpq64x256", "dpq16x256", "dpq8x256", "mgqe64x256/64@0.1", "mgqe16x256/64@0.1")


def quantized_variants(teacher: LightGCN, bits: tuple[int, ...]):
    """``(label, model)`` pairs: the float model, then each quantized form of its trained embeddings."""
    yield "float32 (the trained LightGCN)", teacher
    for b in bits:
        yield f"{b}-bit final embedding", LowBitGCN.from_lightgcn(teacher, bits=b)
        rotated = LowBitGCN.from_lightgcn(teacher, bits=b, rotation="itq")
        rotated.fit_rotation()
        yield f"{b}-bit final embedding, ITQ rotation", rotated
        if b == 1:  # the same sign bits, norms for scales, scored by SimHash's angle estimate
            angular = LowBitGCN.from_lightgcn(teacher, bits=1, rotation="itq", similarity="angular", scale_method="norm")
            angular.R.copy_(rotated.R)
            yield "1-bit final embedding, ITQ rotation, angular scores", angular
        s = 8 // b  # vector codes: the same b bits a coordinate, one byte a block of s coordinates
        if 2 <= b and s >= 2 and teacher.dim % s == 0:
            yield (f"{b}-bit final embedding, vector codes of {s} coordinates",
                   LowBitGCN.from_lightgcn(teacher, bits=b, estimator="ste", vector_dim=s))
    yield "1-bit per layer (BiGeaR layer weights)", BinaryGCN.from_lightgcn(teacher, teacher=False)


def spectrum_line(teacher: LightGCN) -> str:
    """How concentrated the final embeddings are: what a rotation can change before a sign code."""
    parts = []
    for name, X in zip(("users", "items"), teacher.final_embeddings()):
        X = X.detach().double()
        ev = torch.linalg.eigvalsh(torch.cov(X.T)).flip(0)
        parts.append(f"{name}: top-8 of {X.shape[1]} covariance eigenvalues hold {100 * float(ev[:8].sum() / ev.sum()):.0f}% "
                     f"of the variance, |mean row| / mean |row| = {float(X.mean(0).norm() / X.norm(dim=1).mean()):.2f}")
        del X
    return "Final embeddings: " + "; ".join(parts) + "."


def compressed_copies(model, split, specs, seed: int = 0):
    """``(spec, model)`` pairs: copies of a model with full tables, every table fitted to each spec."""
    frequencies = dict(zip(("user", "item"), row_frequencies(split)))
    for spec in specs:
        copy_ = copy.deepcopy(model)
        for name, table in model.embedding_tables().items():
            side = [s for s in ("user", "item") if s in name]
            if len(side) != 1:
                raise QrecError(f"cannot tell whether table {name!r} holds users or items")
            setattr(copy_, name, compress_trained(spec, table.all(), frequencies[side[0]], seed=seed))
        yield spec, copy_.eval()


def ptq_table(run: str | Path, bits: tuple[int, ...] = (1, 2, 4, 8), ks: tuple[int, ...] | None = None,
              specs: tuple[str, ...] = TABLE_SPECS, records: Path | None = None) -> str:
    """Markdown table: metrics of each variant at the run's cut-offs (or ``ks``), size, and % of the float
    model's first metric. ``records``: also a JSON record per row in that folder (``qrec plot`` / ``report``)."""
    model, cfg, split = load_trained(run)  # the reported epoch: best on validation, else the last
    cfg.check_catalogue(split.n_items, ks)
    if type(model) is LightGCN:
        with torch.no_grad():
            spectrum = spectrum_line(model)
        return _table(run, model, cfg, split, ks, _with_floor(quantized_variants(model, bits), split), spectrum,
                      f"{model.n_layers} layers", records)
    if not isinstance(model, (GMF, NeuMF)) or any(type(t) is not FullEmbedding for t in model.embedding_tables().values()):
        raise QrecError(f"{run}: a {cfg.model} run with {cfg.embedding} tables; qrec ptq quantizes a trained "
                        "full-precision run (lightgcn, or gmf / neumf with full tables)")
    variants = [(f"float32 (the trained {cfg.model})", model)]
    per_bits = [f"sq{b}-ptq" for b in bits] + [f"q{b}" for b in bits]  # per-dimension min/max, per-row grid
    variants += compressed_copies(model, split, per_bits + list(specs), seed=cfg.seed)
    return _table(run, model, cfg, split, ks, _with_floor(variants, split), "", "best validation epoch", records)


def _with_floor(variants, split):
    """The variants, then the popularity model of ``split``'s training data."""
    yield from variants
    yield POPULARITY, build_model("pop", split, "full", "full", 1)


def _table(run, reference, cfg, split, ks, variants, preamble: str, what: str, records: Path | None) -> str:
    ks = tuple(ks or cfg.ks)
    first = "hr" if cfg.protocol == "loo" else "recall"
    names = [f"{m}@{k}" for k in ks for m in (first, "ndcg")]
    lines = [f"Post-training quantization of {run} ({cfg.dataset}, test split, d = {cfg.dim}, {what}); "
             "no training after quantizing.", "",
             "| codes | " + " | ".join(names) + " | size | % of float " + names[0] + " |",
             "|---" * (len(names) + 3) + "|"]
    if preamble:
        lines.insert(1, preamble)
    base = None
    for label, model in variants:
        model.eval()
        metrics = evaluate_model(model, split, "test", ks, cfg.recall_denominator)
        base = base or metrics[names[0]]
        size = model.serving_bits() / reference.serving_bits()
        lines.append(f"| {label} | " + " | ".join(f"{100 * metrics[n]:.2f}" for n in names)
                     + f" | {100 * size:.1f}% | {100 * metrics[names[0]] / base:.1f}% |")
        if records is not None:
            record = ptq_record(run, cfg, split, label, model, reference, metrics)
            write_record(Path(records) / f"{record['run']}.json", record)
    return "\n".join(lines)


def ptq_record(run, cfg, split, label: str, model, reference, metrics: dict) -> dict:
    """One row of the table as a record: ``kind = "ptq"``, its label as the embedding, sizes like a trained
    run's. The float run's config is kept as ``ptq_of_config`` (not ``config``: this is not that run, and a
    grid must never take it for a finished one)."""
    slug = re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")
    family = "float32" if label.startswith("float32") else re.match(r"[a-z]+|\d+-bit", slug).group(0)
    return {"schema": SCHEMA_VERSION, "kind": "ptq", "run": f"{cfg.run_name()}-ptq-{slug}", "label": label,
            "family": family, "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed,
            "protocol": split.protocol, "embedding": {"user": label, "item": label},
            "metrics": {"test": metrics, "valid": {}}, "history": [],
            "size": {"serving_bits": model.serving_bits(), "full_bits": reference.full_bits(),
                     "relative": model.serving_bits() / reference.full_bits(), "dense_bits": model.dense_bits()},
            "ptq_of": str(run), "ptq_of_config": cfg.to_dict(), "git_commit": git_commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
