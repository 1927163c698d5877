"""A FAISS index of a model's item codes, where qrec's format is one FAISS has (``qrec export --faiss``).

* DPQ, and MGQE with shared centroids: ``IndexPQ`` (inner product) with qrec's codebook as its product
  quantizer (``M = D`` sub-quantizers of ``K = 2^nbits`` centroids) and qrec's codes as its codes, byte for
  byte at 8 bits (other widths are added as their decoded vectors, which FAISS encodes back to the same
  centroids). An MGQE tail row's codes index the first ``K_tail`` centroids of the one codebook, so they are
  valid codes of the ``K_head`` quantizer. FAISS's inner products are qrec's ``pq_scores`` (up to float32
  rounding); query with what the model scores items against (GMF: ``p_u * h``, SASRec: the encoder's last
  state; GMF's bias adds the same to every item, so it does not change a ranking).
* 1-bit sign codes (the 1-bit GCN; a 1-bit low-bit GCN): ``IndexBinaryFlat`` over each item's packed sign bits
  of every layer, bit for bit. FAISS ranks by Hamming distance, which is qrec's ranking exactly when the
  codes' scales are equal; the 1-bit GCN also weighs each layer by per-node scales, so there the FAISS index
  is a candidate generator to re-rank with qrec's scores.

Unshared MGQE variants (one codebook per group) and float / scalar-quantized tables have no such index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qrec.errors import QrecError
from qrec.retrieval.hamming import BinaryCodes
from qrec.retrieval.intdot import IntCodes


def _faiss():
    try:
        import faiss
    except ImportError:
        raise QrecError("--faiss needs the faiss-cpu package: pip install 'qrec[bench]' (or faiss-cpu)") from None
    return faiss


def faiss_index(model):
    """The FAISS index of ``model``'s item codes (trained or served model); ``QrecError`` where none maps."""
    from qrec.models.gmf import GMF
    from qrec.models.sasrec import SASRec

    binary = item_sign_codes(model)
    if binary is not None:
        return binary_index(binary)
    if not isinstance(model, (GMF, SASRec)):
        raise QrecError(f"no FAISS form for a {type(model).__name__}: FAISS indexes need DPQ / shared-MGQE item "
                        "codes (GMF, SASRec) or 1-bit sign codes (1-bit GCN)")
    codes, codebook = pq_parts(model.item_table)
    return pq_index(codes, codebook)


def item_sign_codes(model) -> BinaryCodes | None:
    """The item side's sign codes of a 1-bit model (trained or served), else None."""
    from qrec.models.served import CodesServed, ScoredFromCodes

    if isinstance(model, ScoredFromCodes):
        codes = model.codes()[1]
    elif isinstance(model, CodesServed):
        codes = model.items
    else:
        return None
    if isinstance(codes, BinaryCodes):
        return codes
    return codes.binary() if isinstance(codes, IntCodes) and codes.bits == 1 else None


def pq_parts(table) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (n, D), codebook (D, K, s))`` of a DPQ / shared-centroid MGQE table (trained or served)."""
    from qrec.compress.coded import CodedEmbedding
    from qrec.compress.dpq import DPQEmbedding
    from qrec.compress.mgqe import MGQEEmbedding

    if isinstance(table, CodedEmbedding):
        parts = table.parts
    elif isinstance(table, (DPQEmbedding, MGQEEmbedding)):
        parts = type(table).coded_parts(table.export(), table.num_embeddings, table.dim, table.spec)
    else:
        raise QrecError(f"item table {table.spec!r} has no product-quantization codes (FAISS IndexPQ needs dpq or mgqe)")
    if len(parts) != 1 or parts[0].rows is not None:
        raise QrecError(f"item table {table.spec!r} has one codebook per group; IndexPQ needs one shared codebook")
    return parts[0].codes.long().numpy(), parts[0].codebook.float().numpy()


def pq_index(codes: np.ndarray, codebook: np.ndarray):
    faiss = _faiss()
    D, K, s = codebook.shape
    nbits = int(np.log2(K))
    if 2**nbits != K:
        raise QrecError(f"IndexPQ needs a power-of-two number of centroids, the codebook has {K}")
    index = faiss.IndexPQ(D * s, D, nbits, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    if nbits == 8:  # qrec's codes are FAISS's code bytes
        faiss.copy_array_to_vector(np.ascontiguousarray(codes, dtype=np.uint8).ravel(), index.codes)
        index.ntotal = len(codes)
    else:
        decoded = codebook[np.arange(D)[None, :], codes].reshape(len(codes), D * s)
        index.add(np.ascontiguousarray(decoded, dtype=np.float32))
    return index


def binary_index(codes: BinaryCodes):
    faiss = _faiss()
    packed = sign_bytes(codes)
    index = faiss.IndexBinaryFlat(packed.shape[1] * 8)
    index.add(packed)
    return index


def sign_bytes(codes: BinaryCodes) -> np.ndarray:
    """Each node's packed sign bits of every layer as bytes ``(n, L * 8 W)`` (the order FAISS reads them)."""
    bits = codes.bits.detach().cpu().contiguous()
    return bits.view(torch.uint8).numpy().reshape(len(codes), -1).copy()


def write_faiss_index(model, path: str | Path) -> str:
    """Write the index (``faiss.write_index`` / ``write_index_binary``); returns a line saying what it holds."""
    faiss = _faiss()
    index = faiss_index(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, str(path))
        return f"wrote {path}: faiss IndexBinaryFlat, {index.ntotal} items x {index.d} sign bits (Hamming ranking)"
    faiss.write_index(index, str(path))
    return (f"wrote {path}: faiss IndexPQ (inner product), {index.ntotal} items, M = {index.pq.M} x "
            f"{index.pq.nbits} bits, qrec's codebook")
