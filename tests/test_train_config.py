"""RunConfig checks every value when it is made: from CLI flags, a TOML file or Python alike."""

from __future__ import annotations

import json
import math

import pytest

from qrec.cli import main
from qrec.errors import ConfigError
from qrec.train.config import RunConfig


@pytest.mark.parametrize("key, value, message", [
    ("epochs", 0, "epochs = 0: must be >= 1"),
    ("epochs", -1, "epochs = -1: must be >= 1"),
    ("epochs", 2.5, "epochs = 2.5: expected a whole number"),
    ("epochs", True, "epochs = True: expected a whole number"),
    ("eval_every", 0, "eval_every = 0: must be >= 1"),
    ("threads", 0, "threads = 0: must be >= 1"),
    ("patience", -1, "patience = -1: must be >= 0"),
    ("n_neg", 0, "n_neg = 0: must be >= 1"),
    ("batch_size", 0, "batch_size = 0: must be >= 1"),
    ("dim", 0, "dim = 0: must be >= 1"),
    ("seed", -1, "seed = -1: must be >= 0 and < 2**32"),
    ("seed", 2**40, "seed = 1099511627776: must be >= 0 and < 2**32"),
    ("lr", math.inf, "lr = inf: must be finite"),
    ("lr", math.nan, "lr = nan: must be finite"),
    ("lr", 0.0, "lr = 0.0: must be positive"),
    ("lr", -0.1, "lr = -0.1: must be positive"),
    ("lr", "0.01", "lr = '0.01': expected a number (written as a string: drop the quotes)"),
    ("weight_decay", -1e-4, "weight_decay = -0.0001: must be >= 0"),
    ("init_std", 0, "init_std = 0: must be positive"),
    ("ks", [], "ks = []: expected a non-empty list"),
    ("ks", [10, 0], "ks = 0: must be >= 1"),
    ("ks", "10", "ks = '10': expected a non-empty list"),
    ("device", "tpu", "device = 'tpu': expected cpu, cuda or cuda:<index>"),
    ("device", "cuda:x", "device = 'cuda:x': expected cpu, cuda or cuda:<index>"),
    ("recall_denominator", "max", "recall_denominator = 'max': expected one of ['test', 'min']"),
    ("select_metric", "ndcg@20", "select_metric = 'ndcg@20': expected <metric>@<k>"),
    ("select_metric", "auc@10", "select_metric = 'auc@10': expected <metric>@<k> with metric one of"),
    ("model", 3, "model = 3: expected a non-empty string"),
    ("given_test", "ignore", "given_test = 'ignore': expected one of ['error', 'drop', 'keep']"),
    ("model_options", [1], "model_options = [1]: expected a table"),
    ("lr_milestones", [20, 10], "lr_milestones = [20, 10]: epochs must be increasing"),
    ("lr_milestones", [0], "lr_milestones = 0: must be >= 1"),
    ("lr_milestones", "20", "lr_milestones = '20': expected a list of epochs"),
    ("lr_gamma", 0.0, "lr_gamma = 0.0: must be in (0, 1]"),
    ("lr_gamma", 2.0, "lr_gamma = 2.0: must be in (0, 1]"),
])
def test_bad_values_are_refused_from_python_and_toml(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=_escape(message)):
        RunConfig(**{key: value})
    path = tmp_path / "run.toml"
    path.write_text(f"{key} = {json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else value}\n")
    with pytest.raises(ConfigError, match=_escape(f"{path}: {message}")):
        RunConfig.from_toml(path)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_values_of_the_right_kind_are_coerced():
    cfg = RunConfig(epochs=20.0, lr=1, ks=[20, 50], seed=3.0)
    assert (cfg.epochs, cfg.lr, cfg.ks, cfg.seed) == (20, 1.0, (20, 50), 3)
    assert type(cfg.epochs) is int and type(cfg.lr) is float
    assert cfg.select_metric == "ndcg@20"  # unset: ndcg at the first cut-off
    assert RunConfig().select_metric == "ndcg@10" and RunConfig(device="cuda:1").device == "cuda:1"


def test_defaults_and_older_records_keep_their_identity():
    """A field added later is left out of to_dict at its default, so existing records and checkpoints match."""
    assert "given_test" not in RunConfig().to_dict()
    assert RunConfig(given_test="drop").to_dict()["given_test"] == "drop"
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    assert "lr_milestones" not in RunConfig().to_dict() and "lr_gamma" not in RunConfig().to_dict()
    stepped = RunConfig(lr_milestones=[10, 20], lr_gamma=0.5)
    assert stepped.to_dict()["lr_milestones"] == [10, 20] and RunConfig.from_dict(stepped.to_dict()) == stepped


def test_the_step_schedule_multiplies_the_lr_after_each_milestone():
    cfg = RunConfig(lr=0.01, lr_milestones=[2, 4], lr_gamma=0.1)
    assert [cfg.lr_at(e) for e in range(6)] == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rel=1e-12)
    assert RunConfig(lr=0.01).lr_at(100) == 0.01


def test_a_toml_file_that_is_not_toml_is_an_error_naming_it(tmp_path):
    path = tmp_path / "x.toml"
    path.write_bytes(b"epochs = = 3\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        RunConfig.from_toml(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        RunConfig.from_toml(path)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "epochs = 0: must be >= 1"),
    (["--epochs", "-1"], "epochs = -1"),
    (["--patience", "-1"], "patience = -1"),
    (["--threads", "0"], "threads = 0"),
    (["--n-neg", "0"], "n_neg = 0"),
    (["--lr", "inf"], "lr = inf: must be finite"),
    (["--eval-every", "0"], "eval_every = 0"),
    (["--device", "tpu"], "device = 'tpu'"),
    (["--ks", "100000"], "cut-off k = 100000 is larger than the catalogue of sequences (60 items)"),
])
def test_cli_flags_are_checked_with_a_one_line_error(seq_file, tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    args = ["train", "--dataset", "sequences", "--path", str(seq_file), "--epochs", "1", "--dim", "8", "--quiet",
            "--out", str(run), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (run / "record.json").exists()


def test_a_toml_value_of_the_wrong_type_is_a_cli_error(seq_file, tmp_path, capsys):
    """``lr = "0.01"`` used to reach torch and fail with a TypeError traceback."""
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "sequences"\ndata_path = "{seq_file}"\nlr = "0.01"\n')
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert f"{config}: lr = '0.01': expected a number" in capsys.readouterr().err


def test_a_diverging_run_ends_with_a_one_line_numeric_error(seq_file, tmp_path, capsys):
    args = ["train", "--dataset", "sequences", "--path", str(seq_file), "--epochs", "2", "--dim", "8", "--quiet",
            "--lr", "1e30", "--threads", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "numeric failure (FloatingPointError)" in err and "Traceback" not in err


def test_cut_offs_larger_than_the_catalogue_are_refused_at_evaluate_and_ptq(seq_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "sequences", "--path", str(seq_file), "--epochs", "1", "--dim", "8",
                 "--threads", "1", "--quiet", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--k", "10", "100000"]) == 2
    assert main(["ptq", str(run), "--bits", "8", "--k", "61"]) == 2
    err = capsys.readouterr().err
    assert err.count("cut-off k = ") == 2 and "(60 items)" in err


def test_recommend_never_returns_seen_items(seq_file, tmp_path, capsys):
    """``-k`` up to the catalogue size: a user gets only the items they have not seen (no -inf scores)."""
    run, artifact = tmp_path / "run", tmp_path / "m.safetensors"
    assert main(["train", "--dataset", "sequences", "--path", str(seq_file), "--epochs", "1", "--dim", "8",
                 "--threads", "1", "--quiet", "--out", str(run)]) == 0
    assert main(["export", str(run), str(artifact)]) == 0
    capsys.readouterr()
    assert main(["recommend", str(artifact), "--user", "1", "-k", "60"]) == 0
    line = json.loads(capsys.readouterr().out)
    seen = set(map(int, seq_file.read_text().splitlines()[0].split()[1:]))  # user 1's whole history (filtered)
    assert len(line["items"]) == 60 - len(seen) and not seen & set(line["items"])
    assert all(math.isfinite(s) for s in line["scores"])
    assert main(["recommend", str(artifact), "--user", "1", "-k", "61"]) == 2


@pytest.mark.parametrize("key, value, message", [
    ("seed", 10**400, "seed = 1000000000000000000000000000000000000...: must be >= 0 and < 2**32"),
    ("epochs", 10**30, "epochs = 1000000000000000000000000000000: must be >= 1 and < 2**63"),
    ("lr", 10**400, "lr = 1000000000000000000000000000000000000...: must be finite"),
    ("device", "x" * 300, "device = '" + "x" * 36 + "...: expected cpu"),
])
def test_huge_values_are_refused_with_a_short_echo(key, value, message):
    """Found by fuzzing the TOML reader: a 400-digit seed raised OverflowError from math.isfinite."""
    with pytest.raises(ConfigError, match=_escape(message)):
        RunConfig(**{key: value})


def test_a_long_run_name_fits_a_file_name_and_stays_distinct():
    teacher = "runs/p/" + "gowalla-lightgcn-full-" + "x" * 150 + "-s0"
    short = RunConfig(dataset="gowalla", model="lowbit-gcn", model_options={"bits": 2, "teacher": "runs/p/t-s0"})
    assert short.run_name() == "gowalla-lowbit-gcn-full-bits2-teachert-s0-s0"  # short names are unchanged
    names = {RunConfig(dataset="gowalla", model="lowbit-gcn", seed=seed, model_options={"bits": b, "teacher": teacher}).run_name()
             for b in (1, 2) for seed in (0, 11)}
    assert len(names) == 4
    for name in names:
        assert len(name) <= 200 and len(f"{name}.json".encode()) < 255 and name.startswith("gowalla-lowbit-gcn-full-bits")
        assert name.endswith(("-s0", "-s11"))
