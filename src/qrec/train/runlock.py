"""One writer per run folder: an exclusive ``flock`` on ``<run>/.lock`` held while a run trains.

A second ``qrec train`` into the same folder fails at once, naming the holder (pid, host, start time),
instead of both writing the same checkpoint and record. The lock belongs to the open file, so the kernel
drops it when the holder exits in any way (``kill -9`` included): a stale lock file never blocks a resume.
Nested holds in one process (``qrec train`` around ``fit``) share the one lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from qrec.errors import QrecError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs there are not protected
    fcntl = None

LOCK = ".lock"
_held: dict[Path, list] = {}  # folder -> [open lock file, nesting depth] of this process


class RunFolderBusyError(QrecError):
    """Another process is writing into this run folder."""


@contextlib.contextmanager
def run_folder_lock(folder: str | Path):
    """Hold ``folder``'s lock for the ``with`` block (created with the folder); raise at once if it is held."""
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder][1] += 1
        try:
            yield
        finally:
            _held[folder][1] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK, "a+")
    try:
        _acquire(f, folder)
        _held[folder] = [f, 1]
        try:
            yield
        finally:
            del _held[folder]
    finally:
        f.close()  # closing releases the flock


def _acquire(f, folder: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunFolderBusyError(f"{folder}: run folder in use by {_holder(folder / LOCK)}; wait for it to finish, "
                                 "or train into another --out") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    f.flush()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"
