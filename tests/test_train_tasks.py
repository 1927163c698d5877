"""The regression task (MGQE Task 3) end to end on a small synthetic ratings file: it learns, every table
spec trains with it, it resumes bit for bit, and it refuses what it cannot do with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qrec.errors import QrecError, SpecError
from qrec.eval.regression import rmse
from qrec.models.base import Recommender
from qrec.train.config import RunConfig
from qrec.train.pipeline import load_split
from qrec.train.tasks import RankingTask, RegressionTask, make_task
from qrec.train.trainer import fit


def _cfg(ratings_file, **kw) -> RunConfig:
    base = dict(task="regression", dataset="movielens", data_path=str(ratings_file), protocol="kfold-5",
                model="gmf", epochs=3, batch_size=64, dim=8, lr=0.01, l2=0.01, threads=1)
    return RunConfig(**(base | kw))


def _quiet(cfg, out=None, **kw):
    return fit(cfg, out, progress=False, log=lambda s: None, **kw)


def test_regression_beats_the_global_mean(ratings_file):
    """Biased GMF on rank-2 ratings: test RMSE well below predicting the training mean."""
    cfg = _cfg(ratings_file, epochs=15)
    result = _quiet(cfg)
    split = load_split(cfg)
    baseline = rmse(np.full(len(split.test), split.train.ratings.mean()), split.test.ratings)
    assert result.test["rmse"] < 0.85 * baseline
    assert result.test["mae"] <= result.test["rmse"]
    assert result.test["pairs"] == len(split.test)
    assert 1 <= result.best_epoch <= 15 and result.valid["rmse"] == min(h["valid"]["rmse"] for h in result.history)


def test_predictions_are_standardised_back_and_clipped(ratings_file):
    cfg = _cfg(ratings_file)
    split = load_split(cfg)
    task = RegressionTask(cfg, split)
    assert task.mean == pytest.approx(split.train.ratings.mean()) and (task.low, task.high) == (1.0, 5.0)

    class Constant(Recommender):
        def __init__(self, value):
            super().__init__(split.n_users, split.n_items)
            self.value = value
            self.w = torch.nn.Parameter(torch.zeros(1))

        def score(self, users, items):
            return torch.full(users.shape, self.value)

    users = torch.arange(3)
    assert torch.allclose(task.predict(Constant(0.0), users, users), torch.full((3,), task.mean, dtype=torch.float64))
    assert task.predict(Constant(100.0), users, users).max() == 5.0  # clipped to the training range
    assert task.evaluate(Constant(0.0), "test")["rmse"] == pytest.approx(
        rmse(np.full(len(split.test), task.mean), split.test.ratings))


@pytest.mark.parametrize("model, spec", [
    ("gmf", "full"), ("gmf", "lr4"), ("gmf", "sq8-ptq"), ("gmf", "sq4"), ("gmf", "dpq4x16c"),
    ("gmf", "mgqe4x16/4@0.2"), ("gmf", "mgqe-uk4x16/4@0.2"), ("gmf", "mgqe-ud4/2x16@0.2"), ("neumf", "full"),
    ("neumf", "mgqe4x16/4@0.2"),
])
def test_every_table_spec_trains_with_the_regression_task(ratings_file, model, spec):
    result = _quiet(_cfg(ratings_file, model=model, embedding=spec, epochs=2))
    assert np.isfinite(result.test["rmse"]) and result.test["rmse"] < 2.0
    assert result.model.biases is not None  # per-row biases on by default for regression
    bits = result.model.biases.user.numel() * 32 + result.model.biases.item.numel() * 32
    assert result.model.dense_bits() >= bits  # the biases count in the served size


def test_an_interrupted_regression_run_resumes_bit_for_bit(ratings_file, tmp_path):
    cfg = _cfg(ratings_file, embedding="dpq4x16c", epochs=3)
    straight = _quiet(cfg, tmp_path / "a")
    _quiet(cfg.replace(epochs=2), tmp_path / "b")
    resumed = _quiet(cfg, tmp_path / "b")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.test == straight.test and resumed.best_epoch == straight.best_epoch
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_ranking_configs_keep_their_identity(seq_file):
    """The new fields are written only when set: ranking checkpoints and records made before them still match."""
    d = RunConfig(dataset="sequences", data_path=str(seq_file)).to_dict()
    assert "task" not in d and "l2" not in d
    assert RunConfig.from_dict(d) == RunConfig(dataset="sequences", data_path=str(seq_file))
    assert RunConfig(task="regression", l2=0.1).to_dict()["task"] == "regression"
    assert isinstance(make_task(RunConfig(dataset="sequences", data_path=str(seq_file)),
                                load_split(RunConfig(dataset="sequences", data_path=str(seq_file)))), RankingTask)


def test_what_the_regression_task_refuses(seq_file, ratings_file):
    with pytest.raises(QrecError, match="has no scores"):
        _quiet(RunConfig(task="regression", dataset="sequences", data_path=str(seq_file), epochs=1, dim=8))
    with pytest.raises(SpecError, match="row_bias"):
        _quiet(_cfg(ratings_file, model="sasrec", epochs=1))
    with pytest.raises(QrecError, match=r"expected one of \['ranking', 'regression'\]"):
        _quiet(_cfg(ratings_file, task="classification"))


def test_item_to_item_relevance_trains(shared_data, tmp_path, monkeypatch):
    """One epoch on the real ml-100k-i2i (the AAR analogue): RMSE on the -100..100 scale, below the scores' std."""
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path))
    cfg = RunConfig(task="regression", dataset="ml-100k-i2i", data_path=str(shared_data / "ml-100k" / "u.data"),
                    protocol="holdout", epochs=1, batch_size=1024, dim=16, l2=0.01, threads=1)
    result = _quiet(cfg)
    split = load_split(cfg)
    assert (len(split.train) + len(split.valid), len(split.test)) == (125_635, 13_959)  # 90 / 10
    assert result.test["rmse"] < split.test.ratings.std()
