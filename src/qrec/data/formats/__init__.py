"""One module per file format (``tokens.py``: what they share)."""
