"""Console output of qrec: Python ``logging`` to stderr, a ``train.log`` per run folder, and progress bars.

The command line calls ``setup_console(verbosity)`` once (``--quiet``: -1, default: 0, ``-v``: 1). Library
code logs to the ``qrec`` logger and leaves the console to the application, as logging intends. Progress
bars (``bar``) show a total and an ETA on a terminal and nothing otherwise: in a file, a pipe or a
``nohup.out`` the one log line per epoch is the record, never a stream of ``\\r`` frames.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm.auto import tqdm

LOGGER = logging.getLogger("qrec")
RUN_LOG = "train.log"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_state = {"bars": True}


class _TqdmHandler(logging.Handler):
    """Writes through ``tqdm.write`` so a log line never tears a live progress bar; to ``stream``, else to
    whatever ``sys.stderr`` is at the time (a test's capture, a redirected stream)."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream or sys.stderr)
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


def setup_console(verbosity: int = 0, stream=None) -> None:
    """Route the ``qrec`` logger to stderr: warnings only at ``verbosity < 0`` (and no progress bars),
    INFO at 0, DEBUG above. Idempotent: a second call replaces the first's handler."""
    for h in [h for h in LOGGER.handlers if isinstance(h, _TqdmHandler)]:
        LOGGER.removeHandler(h)
    handler = _TqdmHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False  # one line per message, whatever the root logger does
    _state["bars"] = verbosity >= 0


def bar(iterable: Iterable, desc: str, unit: str = "batch", enabled: bool = True, total: int | None = None):
    """A tqdm bar with a total (from ``len`` where the iterable has one) and an ETA, on a terminal only."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    on = enabled and _state["bars"]
    # disable=None: tqdm's own test, off when stderr is not a terminal
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=None if on else True,
                dynamic_ncols=True)


@contextmanager
def run_log(folder: str | Path | None, console: Callable[[str], None] | None = None) -> Iterator[Callable[[str], None]]:
    """A function that logs one line of a run, to ``<folder>/train.log`` (appended: a resumed run continues
    its log) and to the console: ``console(line)`` if given, else the ``qrec.train`` logger. While the run
    lasts, every other ``qrec`` log record (a data warning, say) lands in its train.log too."""
    logger = LOGGER.getChild("train")
    handler = None
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(folder) / RUN_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler.setLevel(logging.INFO)
        LOGGER.addHandler(handler)
    level = LOGGER.level
    if level == logging.NOTSET or level > logging.INFO:
        LOGGER.setLevel(logging.INFO)  # the file gets INFO even when no console was set up

    def emit(line: str) -> None:
        if console is None:
            logger.info(line)
            return
        if handler is not None:
            handler.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, None, None))
        console(line)

    try:
        yield emit
    finally:
        LOGGER.setLevel(level)
        if handler is not None:
            LOGGER.removeHandler(handler)
            handler.close()
