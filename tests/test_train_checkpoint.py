"""Checkpoints are read as data only: a planted pickle payload is refused by every command that opens a run
folder and never runs; damaged or foreign files are errors naming the file; saves are atomic and per process."""

from __future__ import annotations

import os

import pytest
import torch

from qrec.cli import main
from qrec.train.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint, save_checkpoint
from qrec.train.config import RunConfig
from qrec.train.trainer import fit, load_trained

GCN = dict(dataset="lightgcn", protocol="given", model="lightgcn", epochs=1, batch_size=64, dim=8, ks=(5,), threads=1)


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if any code from the checkpoint runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _trained_run(folder, graph_dir):
    fit(RunConfig(data_path=str(graph_dir), **GCN), folder, progress=False, log=lambda s: None)
    return folder


def _plant(ckpt, marker) -> None:
    """Add the payload to a real checkpoint, and check it is live: the old full unpickle would run it."""
    saved = torch.load(ckpt, weights_only=True)
    saved["state"]["note"] = _Payload(marker)
    torch.save(saved, ckpt)
    torch.load(ckpt, weights_only=False)
    assert marker.exists(), "the planted payload should run under a full unpickle"
    marker.unlink()


@pytest.fixture(scope="module")
def poisoned(graph_dir, tmp_path_factory):
    """A lightgcn run folder (its config real) whose checkpoint carries the payload; the marker path."""
    root = tmp_path_factory.mktemp("poisoned")
    run = _trained_run(root / "run", graph_dir)
    _plant(run / CHECKPOINT, root / "marker")
    return run, root / "marker"


def _commands(run, graph_dir, tmp_path):
    train = ["--dataset", "lightgcn", "--path", str(graph_dir), "--protocol", "given", "--epochs", "1",
             "--batch-size", "64", "--dim", "8", "--ks", "5", "--threads", "1"]
    preset = tmp_path / "grid.toml"
    preset.write_text(f'name = "grid"\n[base]\ndataset = "lightgcn"\ndata_path = "{graph_dir}"\nprotocol = "given"\n'
                      'epochs = 1\nbatch_size = 64\ndim = 8\nks = [5]\n[[grid]]\nmodel = "lightgcn"\n')
    grid_run = tmp_path / "runs" / "grid" / RunConfig(data_path=str(graph_dir), **GCN).run_name()
    grid_run.mkdir(parents=True)
    (grid_run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes())
    return {
        "train (resume)": ["train", *train, "--model", "lightgcn", "--out", str(run), "--quiet"],
        "evaluate": ["evaluate", str(run)],
        "evaluate --last": ["evaluate", str(run / CHECKPOINT), "--last"],
        "export": ["export", str(run), str(tmp_path / "m.safetensors")],
        "ptq": ["ptq", str(run), "--bits", "1"],
        "codes": ["codes", str(run)],
        "teacher": ["train", *train, "--model", "lowbit-gcn", "--option", f"teacher={run}", "--option", "bits=2",
                    "--out", str(tmp_path / "student"), "--quiet"],
        "experiment --dry-run": ["experiment", str(preset), "--dry-run", "--results", str(tmp_path / "results")],
    }


@pytest.mark.parametrize("command", ["train (resume)", "evaluate", "evaluate --last", "export", "ptq", "codes",
                                     "teacher", "experiment --dry-run"])
def test_a_planted_pickle_payload_is_refused_and_never_runs(poisoned, graph_dir, tmp_path, monkeypatch, capsys, command):
    run, marker = poisoned
    monkeypatch.chdir(tmp_path)
    code = main(_commands(run, graph_dir, tmp_path)[command])
    captured = capsys.readouterr()
    assert not marker.exists(), f"{command} ran code from the checkpoint"
    if command == "experiment --dry-run":  # lists the run, flags its checkpoint, trains nothing
        assert code == 0 and f"{CHECKPOINT} is unreadable" in captured.out
    else:
        assert code == 2 and "refused" in captured.err and str(CHECKPOINT) in captured.err
        assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) <= 2


@pytest.mark.parametrize("content, reason", [
    (b"", "EOFError"),
    (b"not a checkpoint", "not a readable qrec checkpoint"),
    (os.urandom(4096), "not a readable qrec checkpoint"),
])
def test_empty_foreign_and_truncated_checkpoints_are_errors_naming_the_file(graph_dir, tmp_path, capsys, content, reason):
    path = tmp_path / "run" / CHECKPOINT
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: .*{reason}"):
        load_trained(path.parent)
    assert main(["evaluate", str(path.parent)]) == 2 and str(path) in capsys.readouterr().err


def test_a_truncated_checkpoint_is_an_error_naming_the_file(graph_dir, tmp_path):
    run = _trained_run(tmp_path / "run", graph_dir)
    whole = (run / CHECKPOINT).read_bytes()
    for cut in (len(whole) // 2, len(whole) - 10, 100):
        (run / CHECKPOINT).write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match=f"{run / CHECKPOINT}: not a readable qrec checkpoint"):
            load_trained(run)


def test_a_checkpoint_of_plain_data_without_qrec_keys_is_refused(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a qrec checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_an_error_naming_the_file(graph_dir, tmp_path):
    run = _trained_run(tmp_path / "run", graph_dir)
    saved = load_checkpoint(run / CHECKPOINT)
    saved["state"]["best_model"] = None
    saved["model"] = {k: v[:1] for k, v in saved["model"].items()}
    torch.save(saved, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_trained(run)


def test_a_real_checkpoint_is_tensors_and_plain_values(graph_dir, tmp_path):
    run = _trained_run(tmp_path / "run", graph_dir)
    saved = load_checkpoint(run / CHECKPOINT)
    assert saved["state"]["epoch"] == 1 and RunConfig.from_dict(saved["config"]).model == "lightgcn"


def test_saves_are_atomic_through_a_temporary_file_of_this_process(tmp_path, monkeypatch):
    seen = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (seen.append(str(f)), real_save(obj, f)))
    save_checkpoint(tmp_path / CHECKPOINT, {"x": 1})
    assert seen == [str(tmp_path / f".{CHECKPOINT}.{os.uname().nodename}.{os.getpid()}.tmp")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]  # renamed into place, nothing left
