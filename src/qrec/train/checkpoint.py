"""A run's checkpoint on disk: written atomically, read without unpickling code.

A checkpoint is a ``torch.save`` of a dict of tensors and plain values (the config dict, the model and
optimizer state dicts, the loop state: numbers, lists, dicts). It is read with ``weights_only=True``, so
a file that asks to build any other object (a crafted ``__reduce__`` that would run a command) is refused
before anything in it runs. Every way a read can fail becomes a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import socket
import warnings
from pathlib import Path

import torch

from qrec.errors import QrecError

CHECKPOINT = "checkpoint.pt"
_KEYS = ("config", "model", "optimizer", "state")


class CheckpointError(QrecError):
    """A checkpoint file could not be read as a qrec checkpoint (damaged, foreign, or not data only)."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file of this process, then a rename, so a
    crash never leaves half a checkpoint and two processes never write into the same temporary file."""
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint dict at ``path``, read as data only (no pickled code runs); checked for qrec's keys."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on foreign files; the error says it
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint here (qrec train writes <out>/{CHECKPOINT})") from None
    except pickle.UnpicklingError as e:  # weights_only refused an object: never fall back to a full unpickle
        raise CheckpointError(f"{path}: not a readable qrec checkpoint: refused, it holds more than tensors and plain "
                              f"values ({_refusal(e)}); qrec never unpickles objects or code from a file") from None
    except Exception as e:  # nothing ran (weights_only), so any failure is a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable qrec checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(saved, dict) or any(k not in saved for k in _KEYS):
        raise CheckpointError(f"{path}: not a qrec checkpoint (expected a dict with keys {list(_KEYS)})")
    state = saved["state"]
    if not isinstance(saved["config"], dict) or not isinstance(state, dict) or type(state.get("epoch")) is not int:
        raise CheckpointError(f"{path}: not a qrec checkpoint (config or loop state missing)")
    return saved


def restore(module, state_dict, path: Path) -> None:
    """``module.load_state_dict`` with a mismatch (another model, a damaged file) reported as the file's fault."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: its weights do not fit the model of its config ({_first_line(e)})") from None


def _refusal(e: pickle.UnpicklingError) -> str:
    """The line of torch's long weights-only message that says what was refused."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.strip().startswith(boiler)]
    return _first_line(lines[0]) if lines else "unsupported content"


def _first_line(e: BaseException | str) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."
