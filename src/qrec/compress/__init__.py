"""Embedding tables that compress user and item embeddings, all behind one interface (``base.EmbeddingTable``)."""

from qrec.compress.base import EmbeddingTable
from qrec.compress.spec import build_table, code_size, parse_spec

__all__ = ["EmbeddingTable", "build_table", "code_size", "parse_spec"]
