"""qrec: recommenders whose user and item embeddings are stored in 1 to 8 bits."""

__version__ = "0.1.0"
