"""One writer per run folder: a second one fails at once naming the holder; a killed holder frees the folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from qrec.cli import main
from qrec.train.runlock import RunFolderBusyError, run_folder_lock

HOLD = """
import sys, time
from qrec.train.runlock import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / "run"``'s lock (killed with SIGKILL at the end)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def _train(seq_file, run, seed: int) -> list[str]:
    return ["train", "--dataset", "sequences", "--path", str(seq_file), "--epochs", "1", "--dim", "8", "--threads", "1",
            "--seed", str(seed), "--quiet", "--out", str(run)]


def test_a_second_writer_fails_at_once_naming_the_holder(seq_file, tmp_path, holder, capsys):
    """Two ``qrec train`` into one --out used to both exit 0, the last writer's files winning."""
    import qrec.records, qrec.train.trainer  # noqa: F401  (imported first: time the refusal, not the imports)

    start = time.perf_counter()
    assert main(_train(seq_file, tmp_path / "run", seed=1)) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 5
    assert f"run folder in use by pid {holder.pid} on {socket.gethostname()}" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "record.json").exists()


def test_a_killed_holder_frees_the_folder(seq_file, tmp_path, holder):
    holder.kill()  # SIGKILL: no cleanup ran, the lock file stays, the kernel dropped the lock
    holder.wait()
    assert (tmp_path / "run" / ".lock").exists()
    assert main(_train(seq_file, tmp_path / "run", seed=1)) == 0


def test_holds_nest_within_one_process(tmp_path):
    with run_folder_lock(tmp_path / "run"):
        with run_folder_lock(tmp_path / "run"):  # qrec train around fit: one lock
            pass
        proc = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path / "run")],
                              capture_output=True, text=True)
        assert proc.returncode != 0 and "RunFolderBusyError" in proc.stderr  # still held by the outer block
    with run_folder_lock(tmp_path / "run"):  # released on exit
        pass


def test_the_error_is_a_qrec_error():
    from qrec.errors import QrecError

    assert issubclass(RunFolderBusyError, QrecError)
