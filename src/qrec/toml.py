"""TOML reading on every supported Python: the standard library's ``tomllib`` from 3.11, ``tomli`` (its origin,
same API) before."""

try:
    from tomllib import TOMLDecodeError, load, loads
except ModuleNotFoundError:  # Python 3.10
    from tomli import TOMLDecodeError, load, loads

__all__ = ["TOMLDecodeError", "load", "loads"]
