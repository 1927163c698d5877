"""Serving a model from its artifact alone: the raw-id ``Model``, item similarity, the HTTP service."""
