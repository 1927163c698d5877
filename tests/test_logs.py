"""Console output (``qrec.logs``): one clean line per epoch when stderr is not a terminal (a pipe, a file,
``nohup``), never a ``\\r`` frame; a ``train.log`` in every run folder; ``--quiet`` / ``-v``; bars with a total."""

from __future__ import annotations

import io
import re
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qrec import logs
from qrec.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _train_args(seq_file, out, epochs=3) -> list[str]:
    return ["train", "--dataset", "sequences", "--path", str(seq_file), "--dim", "8", "--epochs", str(epochs),
            "--batch-size", "16", "--threads", "1", "--out", str(out)]


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(SRC)}


def _epoch_lines(text: str) -> list[str]:
    """The per-epoch log lines (``epoch   3  loss ...``, after a time stamp in train.log), no bar frames."""
    return [line for line in text.splitlines() if re.match(r"([\d:, -]+ INFO )?epoch +\d+  loss", line)]


def test_piped_stderr_gets_one_line_per_epoch_and_no_bar_frames(seq_file, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "qrec.cli", *_train_args(seq_file, out)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert [line.split()[1] for line in _epoch_lines(done.stderr)] == ["1", "2", "3"]
    assert not re.search(r"epoch \d+/\d+:", done.stderr)  # no bar at all
    assert len(done.stderr.splitlines()) == 4  # the run's header and its epochs, nothing else
    log = (out / "train.log").read_text()
    assert len(_epoch_lines(log)) == 3 and "\r" not in log


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup on this machine")
def test_a_run_under_nohup_logs_one_line_per_epoch(seq_file, tmp_path):
    args = " ".join(_train_args(seq_file, tmp_path / "run"))
    subprocess.run(f"nohup {sys.executable} -m qrec.cli {args} > nohup.log 2>&1", shell=True, cwd=tmp_path,
                   env=_env(), check=True, timeout=300)
    text = (tmp_path / "nohup.log").read_text()
    assert "\r" not in text and len(_epoch_lines(text)) == 3


def test_quiet_keeps_the_train_log_but_not_the_console(seq_file, tmp_path, capsys):
    assert main([*_train_args(seq_file, tmp_path / "run", epochs=2), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.count("\n") == 1  # the result line only
    assert len(_epoch_lines((tmp_path / "run" / "train.log").read_text())) == 2
    # resuming to more epochs appends to the same log
    assert main([*_train_args(seq_file, tmp_path / "run", epochs=3), "-q"]) == 0
    assert len(_epoch_lines((tmp_path / "run" / "train.log").read_text())) == 3


def test_verbose_training_shows_the_config_and_data_provenance(seq_file, tmp_path, capsys):
    assert main([*_train_args(seq_file, tmp_path / "run", epochs=1), "-v"]) == 0
    err = capsys.readouterr().err
    assert '"dim": 8' in err and f"data sequences from path ['{seq_file}']" in err
    assert main([*_train_args(seq_file, tmp_path / "other", epochs=1)]) == 0
    assert '"dim": 8' not in capsys.readouterr().err


def test_verbosity_levels():
    stream = io.StringIO()
    log = logging.getLogger("qrec.test")
    for verbosity, shown in ((-1, ["warning"]), (0, ["info", "warning"]), (1, ["debug", "info", "warning"])):
        logs.setup_console(verbosity, stream)
        stream.seek(0), stream.truncate()
        log.debug("debug"), log.info("info"), log.warning("warning")
        assert stream.getvalue().split() == shown
    logs.setup_console(0)


def test_bar_has_a_total_and_is_silent_off_a_terminal(monkeypatch):
    class Sized:
        def __len__(self):
            return 7

        def __iter__(self):
            return iter(range(7))

    logs.setup_console(0)
    bar = logs.bar(Sized(), desc="epoch 1/3")
    assert bar.total == 7 and bar.disable  # pytest's stderr is no terminal
    assert list(bar) == list(range(7))
    assert logs.bar(Sized(), desc="x", enabled=False).disable


def test_run_log_sends_lines_to_a_given_console_and_the_file(tmp_path):
    seen = []
    with logs.run_log(tmp_path / "r", seen.append) as emit:
        emit("epoch   1  loss 0.5")
    assert seen == ["epoch   1  loss 0.5"]
    assert (tmp_path / "r" / "train.log").read_text().rstrip().endswith("INFO epoch   1  loss 0.5")
    assert not any(isinstance(h, logging.FileHandler) for h in logs.LOGGER.handlers)  # closed after the run


def _run_on_a_terminal(argv: list[str]) -> str:
    """``python -m qrec.cli argv`` with a 100-column pseudo-terminal as its stdin, stdout and stderr."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "qrec.cli", *argv], stdin=slave, stdout=slave, stderr=slave,
                            env=_env(), close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")
    os.close(master)
    return out.decode(errors="replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as Linux has them")
def test_on_a_terminal_each_epoch_has_a_bar_with_total_and_eta(seq_file, tmp_path):
    text = _run_on_a_terminal(_train_args(seq_file, tmp_path / "run", epochs=2))
    frames = [f for f in text.replace("\r\n", "\n").replace("\r", "\n").splitlines() if f.startswith("epoch 1/2:")]
    assert frames, text
    totals = {int(t) for t in re.findall(r"\| *\d+/(\d+) \[", "\n".join(frames))}
    assert len(totals) == 1 and totals.pop() > 1  # one total for the epoch's batches
    assert re.search(r"\[\d\d:\d\d<(\d\d:\d\d|\?)", frames[-1])  # elapsed < remaining
    assert len(_epoch_lines(text.replace("\r\n", "\n"))) == 2
