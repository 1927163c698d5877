"""Resumable benchmark output: one JSON line per measured row, appended as soon as it is measured, so a killed or
interrupted benchmark reruns only what is missing (``bench_scale.py``, ``bench_distributed.py``)."""

from __future__ import annotations

import json
from pathlib import Path


def key(row: dict, fields) -> str:
    """A row's configuration (its ``fields``) as one comparable string."""
    return json.dumps({k: row.get(k) for k in fields}, sort_keys=True)


def written(path: Path, fields) -> dict[str, dict]:
    """The rows already in ``path`` by ``key`` (a torn last line, from a killed run, is measured again)."""
    if not path.exists():
        return {}
    done = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[key(row, fields)] = row
    return done


def append(path: Path, row: dict) -> None:
    """One JSON line at the end of ``path``, on a line of its own even after a torn last line."""
    torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if torn else "") + json.dumps(row) + "\n")
