"""Datasets: loaders, the one Interactions type, splits, sampling and popularity partitions."""

from qrec.data.interactions import Interactions, Split

__all__ = ["Interactions", "Split"]
