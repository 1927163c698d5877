"""The command line's surface: help with defaults on every option, ``--version``, one cut-off spelling (old
ones kept with a deprecation note), ``evaluate``'s table and ``--json``, ``--dry-run``'s timed probe, a quiet
stop when the reader of the output goes away."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qrec import __version__
from qrec.cli import PIPE_CLOSED, _all_parsers, main, parser
from test_train_cli import _gmf_preset


def _commands():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub, dict(sub.choices)


def test_every_option_of_every_command_has_a_help_line():
    sub, _ = _commands()
    for p in _all_parsers(sub):
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{p.prog} {action.option_strings or action.dest}: no help"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the formatter wraps lines
    for option, default in (("--epochs", "20"), ("--dim", "64"), ("--lr", "0.001"), ("--batch-size", "1024"),
                            ("--seed", "0"), ("--k", "10")):
        assert re.search(rf"{option} \S+.*?\(default: {re.escape(default)}\)", text), option
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: results)" in text and "(default: docs/figures)" in text


def test_version_and_top_level_help_list_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"qrec {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    _, commands = _commands()
    assert len(commands) >= 11
    for name in commands:
        assert re.search(rf"^\s+{name}\b", text, re.M), name


@pytest.mark.parametrize("argv, expected, old", [
    (["train", "--k", "5", "10"], [5, 10], None),
    (["train", "--ks", "5", "10"], [5, 10], "--ks"),
    (["evaluate", "run", "--k", "20"], [20], None),
    (["ptq", "run", "--k", "20", "50"], [20, 50], None),
    (["recommend", "m.safetensors", "--user", "1", "--k", "5"], 5, None),
    (["recommend", "m.safetensors", "--user", "1", "-k", "5"], 5, "-k"),
])
def test_one_cutoff_spelling_old_ones_deprecated(argv, expected, old, capsys):
    assert parser().parse_args(argv).k == expected
    err = capsys.readouterr().err
    assert (f"{old} is deprecated; use --k" in err) if old else err == ""


def test_quiet_and_verbose_on_every_command():
    _, commands = _commands()
    for name, p in commands.items():
        options = p._option_string_actions
        assert "--quiet" in options and "-v" in options, name


@pytest.fixture
def trained(seq_file, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--dataset", "sequences", "--path", str(seq_file), "--dim", "8", "--epochs", "2",
            "--batch-size", "64", "--threads", "1", "--k", "5", "10", "--out", str(run), "--quiet"]
    assert main(args) == 0
    return run


def test_evaluate_prints_percentages_and_json_for_machines(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.split("metrics in %")[1].strip().splitlines()[:5]
    assert header.split() == ["@5", "@10"]
    for row in rows:  # a percentage with two decimals per cut-off
        name, *cells = row.split()
        assert name in ("hr", "ndcg", "recall", "precision") and all(re.fullmatch(r"\d{1,3}\.\d\d%", c) for c in cells)
    assert "of the float32 model" in out
    assert main(["evaluate", str(trained), "--json"]) == 0
    machine = json.loads(capsys.readouterr().out)
    hr = machine["metrics"]["hr@10"]
    assert 0 <= hr <= 1 and f"{100 * hr:.2f}%" in [c for r in rows for c in r.split()]


def test_dry_run_estimates_unseen_configs_from_a_timed_probe(seq_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    preset = _gmf_preset(tmp_path, "p", seq_file, epochs=30, embeddings=["full", "dpq2x4b"])
    assert main(["experiment", str(preset), "--dry-run", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    lines = [line.split("\t") for line in captured.out.strip().splitlines()]
    assert [name for name, *_ in lines] == [f"sequences-gmf-{spec}-d8-s{seed}" for seed in (0, 1) for spec in ("full", "dpq2x4b")]
    for _, state, estimate in lines:
        assert state == "not started" and "timed probe" in estimate
        assert re.match(r"~\d+ (s|min|h) of training", estimate)
    assert "4 from a timed probe" in captured.err and "0.0 h" not in captured.err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()  # a plan writes nothing


def test_only_selects_runs_by_a_regular_expression_or_a_substring(seq_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    preset = _gmf_preset(tmp_path, "p", seq_file, epochs=30, embeddings=["full", "dpq2x4b"])
    for only, want in (("dpq", ["dpq2x4b-d8-s0", "dpq2x4b-d8-s1"]), ("full-d8-s0$", ["full-d8-s0"]),
                       ("^sequences-gmf-full", ["full-d8-s0", "full-d8-s1"]), ("[", [])):
        assert main(["experiment", str(preset), "--dry-run", "--threads", "1", "--only", only]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert [line.split("\t")[0] for line in lines] == [f"sequences-gmf-{w}" for w in want]


def test_probe_gives_a_positive_estimate_without_training_a_run(seq_file):
    from qrec.train.config import RunConfig
    from qrec.train.trainer import probe_epoch_seconds

    cfg = RunConfig(dataset="sequences", data_path=str(seq_file), dim=8, threads=1, batch_size=8)
    assert probe_epoch_seconds(cfg) > 0


def test_a_closed_pipe_stops_a_command_quietly(seq_file):
    """``qrec data info ... | head``: the reader is gone before the first write; no traceback, no error line
    (the interpreter's last flush included), status 141."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "qrec.cli", "data", "info", "sequences", "--path", str(seq_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=120), err) == (PIPE_CLOSED, "")


@pytest.mark.parametrize("argv", [["data", "list"], ["--help"], ["train", "--help"]])
def test_every_command_stops_quietly_on_a_closed_pipe(argv, monkeypatch, capsys):
    """In process, over a real pipe whose reading end is closed: ``main`` returns 141 and says nothing (help
    text too: argparse ignores its own write errors, and the text left in the buffer meets the closed pipe
    when ``main`` flushes)."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        try:
            code = main(argv)
        except SystemExit as e:  # --help
            code = e.code
        monkeypatch.undo()
    assert code == PIPE_CLOSED and capsys.readouterr().err == ""
