"""Errors qrec raises on bad input: each names the file and line (or id) at fault."""

from __future__ import annotations


class QrecError(Exception):
    """Base class of every error qrec raises on purpose."""


class DataFormatError(QrecError, ValueError):
    """A data file is malformed. The message names the file and, where known, the 1-based line."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(QrecError, FileNotFoundError):
    """A named dataset could not be resolved locally nor downloaded."""


class SpecError(QrecError, ValueError):
    """A spec string could not be parsed: an embedding spec (e.g. 'dpq64x256') or a generated dataset's options."""


class ConfigError(QrecError, ValueError):
    """A run's configuration (CLI flag, TOML key or ``RunConfig`` argument) has a wrong type or value."""
