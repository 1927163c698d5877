"""qrec: recommenders whose user and item embeddings are stored in 1 to 8 bits.

``qrec.fit(data, model=..., embedding=...)`` trains one and returns a ``qrec.Model`` (``recommend``,
``similar_items``, ``save``); ``qrec.load(path)`` reads a saved one; ``qrec.build_table(spec, n, d)`` is a
compressed embedding table for your own model. Imported lazily: ``import qrec`` alone loads no torch.
"""

__version__ = "0.1.0"
__all__ = ["fit", "load", "build_table", "Model", "__version__"]


def __getattr__(name: str):
    if name in ("fit", "load", "build_table", "Model"):
        from qrec.serving import api

        return getattr(api, name)
    raise AttributeError(f"module 'qrec' has no attribute {name!r}")
