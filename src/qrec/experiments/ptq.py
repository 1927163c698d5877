"""How much does quantizing a *trained* LightGCN lose, before any quantization-aware training?

``qrec ptq <lightgcn run>`` evaluates the run's final embeddings quantized after training (no gradient step):
b-bit codes of the final embeddings (HQ-GNN's form), with and without ITQ's rotation, and 1-bit codes of every
layer (BiGeaR's form). It separates what the code format can hold from what training recovers: the gap from
a row here to the quantization-aware run of the same format is training's contribution.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qrec.errors import QrecError
from qrec.eval.evaluate import evaluate_model
from qrec.models.binary_gcn import BinaryGCN
from qrec.models.lightgcn import LightGCN
from qrec.models.lowbit_gcn import LowBitGCN
from qrec.train.trainer import load_trained


def quantized_variants(teacher: LightGCN, bits: tuple[int, ...]):
    """``(label, model)`` pairs: the float model, then each quantized form of its trained embeddings."""
    yield "float32 (the trained LightGCN)", teacher
    for b in bits:
        yield f"{b}-bit final embedding", LowBitGCN.from_lightgcn(teacher, bits=b)
        rotated = LowBitGCN.from_lightgcn(teacher, bits=b, rotation="itq")
        rotated.fit_rotation()
        yield f"{b}-bit final embedding, ITQ rotation", rotated
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


def ptq_table(run: str | Path, bits: tuple[int, ...] = (1, 2, 4, 8), ks: tuple[int, ...] | None = None) -> str:
    """Markdown table: metrics of each variant at the run's cut-offs (or ``ks``), size, and % of the float
    model's first metric."""
    teacher, cfg, split = load_trained(run, last=True)
    if type(teacher) is not LightGCN:
        raise QrecError(f"{run}: a {cfg.model} run; qrec ptq quantizes a trained full-precision lightgcn run")
    ks = tuple(ks or cfg.ks)
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    lines = [f"Post-training quantization of {run} ({cfg.dataset}, test split, d = {teacher.dim}, "
             f"{teacher.n_layers} layers); no training after quantizing.", "",
             "| codes | " + " | ".join(names) + " | size | % of float " + names[0] + " |",
             "|---" * (len(names) + 3) + "|"]
    with torch.no_grad():
        lines.insert(1, spectrum_line(teacher))
    base = None
    for label, model in quantized_variants(teacher, bits):
        model.eval()
        metrics = evaluate_model(model, split, "test", ks, cfg.recall_denominator)
        base = base or metrics[names[0]]
        size = model.serving_bits() / teacher.serving_bits()
        lines.append(f"| {label} | " + " | ".join(f"{100 * metrics[n]:.2f}" for n in names)
                     + f" | {100 * size:.1f}% | {100 * metrics[names[0]] / base:.1f}% |")
    return "\n".join(lines)
