"""``evaluate_model``: the protocol hooks it calls around ``evaluate_split`` and the state it restores."""

from __future__ import annotations

import numpy as np
import torch

from qrec.data import Interactions
from qrec.data.splits import leave_one_out
from qrec.eval.evaluate import evaluate_split
from qrec.models.base import Recommender
from qrec.models.evaluate import evaluate_model


class Recorder(Recommender):
    """Fixed scores; records the hooks called, and scores differently at each stage."""

    def __init__(self, scores: np.ndarray):
        super().__init__(*scores.shape)
        self.table = torch.nn.Parameter(torch.from_numpy(scores), requires_grad=False)
        self.calls, self.stage = [], "test"

    def refresh(self):
        self.calls.append("refresh")

    def set_stage(self, stage):
        self.calls.append(f"stage={stage}")
        self.stage = stage

    def score_all(self, users):
        assert not self.training, "scored in training mode"
        return self.table[users] * (-1.0 if self.stage == "valid" else 1.0)


def _split():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 5)
    items = np.concatenate([rng.permutation(9)[:5] for _ in range(6)])
    data = Interactions(users=users, items=items, n_users=6, n_items=9, user_ids=np.arange(6), item_ids=np.arange(9),
                        timestamps=np.tile(np.arange(5), 6))
    return leave_one_out(data)


def test_hooks_run_in_order_and_state_is_restored():
    split = _split()
    model = Recorder(np.random.default_rng(1).normal(size=(6, 9)))
    model.train()
    got = evaluate_model(model, split, "valid", ks=(3,))
    assert model.calls == ["refresh", "stage=valid", "stage=test"]
    assert model.training and model.stage == "test"
    scores = -model.table.detach()  # what the model scores at the validation stage
    assert got == evaluate_split(lambda u: scores[u], split, "valid", ks=(3,))


def test_device_of_a_model_without_parameters_is_the_cpu():
    class Empty(Recommender):
        def score_all(self, users):
            return torch.zeros(len(users), self.n_items)

    assert Empty(2, 3).device == torch.device("cpu")
