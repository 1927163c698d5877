"""Conformance of every backbone to ``qrec.models.base.Recommender``.

``RecommenderConformance`` is a mixin, as ``TableConformance`` is for tables: a backbone x table spec joins with
a short subclass naming ``model`` and ``spec``. Each runs the same checks: pairwise scores equal the all-item
scores, the model's top-k is the deterministic ranking of its masked scores, one training step of its
``loss_kind`` works through the declared protocol alone (a model that learns nothing, popularity, declares
``loss_kind = "none"`` and refuses a step instead), and the served artifact scores like the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qrec.data.sampling import NegativeSampler, bpr_epoch, pointwise_epoch, sequence_epoch
from qrec.data.sequences import history_windows
from qrec.data.splits import leave_one_out
from qrec.data.synthetic import random_interactions
from qrec.export.artifact import export_model, history_length, load_model, read_manifest, serving_data
from qrec.models.base import Recommender
from qrec.models.evaluate import evaluate_model
from qrec.models.registry import build_model
from qrec.retrieval.topk import masked_topk

N_USERS, N_ITEMS, DIM = 30, 48, 16


@pytest.fixture(scope="module")
def split():
    return leave_one_out(random_interactions(N_USERS, N_ITEMS, 500, seed=0))


class RecommenderConformance:
    model: str = ""
    spec: str = "full"
    options: dict = {}
    tol: float = 1e-5
    learns: bool = True  # False: nothing to train (popularity): no parameters, no training step

    def make(self, split) -> Recommender:
        torch.manual_seed(0)
        return build_model(self.model, split, self.spec, self.spec, DIM, **self.options)

    def trained(self, split) -> Recommender:
        model = self.make(split)
        if not self.learns:
            return model.eval()
        batch = next(iter(self._batches(model, split)))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=model.adam_betas)
        for _ in range(2):
            model.on_epoch_start()
            loss = model.training_loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()

    @staticmethod
    def _batches(model, split):
        rng, sampler = np.random.default_rng(0), NegativeSampler(split.train, seed=0)
        if model.loss_kind == "bpr":
            return bpr_epoch(split.train, sampler, 64, rng)
        if model.loss_kind == "sequence":
            return sequence_epoch(split.train, sampler, model.maxlen, 16, rng)
        return pointwise_epoch(split.train, sampler, 2, 64, rng)

    def test_loss_kind_is_declared_and_a_step_is_finite(self, split):
        model = self.make(split)
        if not self.learns:
            assert model.loss_kind == "none" and not list(model.parameters())
            with pytest.raises(RuntimeError, match="nothing to train"):
                model.training_loss({})
            return
        assert model.loss_kind in ("pointwise", "bpr", "sequence")
        loss = model.training_loss(next(iter(self._batches(model, split))))
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    def test_pairwise_scores_equal_all_item_scores(self, split):
        model = self.trained(split)
        model.refresh()
        users = torch.tensor([0, 7, 29])
        every = model.score_all(users).detach()
        assert every.shape == (3, N_ITEMS)
        pairs = model.score(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(3)).detach()
        torch.testing.assert_close(pairs.reshape(3, N_ITEMS).float(), every.float(), rtol=self.tol, atol=self.tol)

    def test_topk_is_the_deterministic_ranking_of_masked_scores(self, split):
        model = self.trained(split)
        users = torch.arange(N_USERS)
        seen = split.train.to_csr()
        items, values = model.topk(users, 10, seen)
        want_items, want_values = masked_topk(model.score_all(users).detach().clone().float(), 10, seen)
        assert torch.equal(items, want_items)
        torch.testing.assert_close(values.float(), want_values, rtol=self.tol, atol=self.tol)
        assert not np.asarray(seen.toarray())[np.arange(N_USERS)[:, None], items.numpy()].any()

    def test_hooks_and_diagnostics(self, split):
        model = self.trained(split)
        model.refresh()
        model.set_stage("valid")
        model.set_stage("test")
        assert isinstance(model.diagnostics(), dict) and isinstance(model.serving_meta(), dict)
        assert model.serving_bits() <= model.full_bits() or self.spec == "full"

    def test_artifact_scores_and_size_equal_the_model(self, split, tmp_path):
        model = self.trained(split)
        path = tmp_path / "model.safetensors"
        manifest = export_model(model, {"model": self.model, "embedding": self.spec, "user_embedding": None,
                                        "dim": DIM, "model_options": self.options, "dataset": "x"}, path,
                                serving_data(split, history_length(model)))
        assert manifest == read_manifest(path)
        assert manifest["serving_bits"] == model.serving_bits()
        served, _ = load_model(path)  # the file alone; a sequential model then reads the split's windows
        if served.loss_kind == "sequence":
            served.set_windows(history_windows(split.train, split.valid, served.maxlen))
        for stage in ("valid", "test"):
            want = evaluate_model(model, split, stage, ks=(5, 10))
            got = evaluate_model(served, split, stage, ks=(5, 10))
            assert got == pytest.approx(want, abs=1e-9)


class TestGMFFull(RecommenderConformance):
    model = "gmf"


class TestGMFMGQE(RecommenderConformance):
    model, spec = "gmf", "mgqe8x16/4@0.25"


class TestGMFBinary(RecommenderConformance):
    model, spec = "gmf", "bin"


class TestNeuMFDPQ(RecommenderConformance):
    model, spec = "neumf", "dpq8x16c"


class TestNeuMFUniform2(RecommenderConformance):
    model, spec = "neumf", "q2"


class TestSASRecFull(RecommenderConformance):
    model, options = "sasrec", {"maxlen": 8, "blocks": 1}


class TestSASRecUniform2(RecommenderConformance):
    model, spec, options = "sasrec", "q2", {"maxlen": 8, "blocks": 1}


class TestLightGCN(RecommenderConformance):
    model = "lightgcn"


class TestBinaryGCN(RecommenderConformance):
    model = "binary-gcn"


class TestLowBitGCN(RecommenderConformance):
    model, options = "lowbit-gcn", {"bits": 2}


class TestLearnedStepLowBitGCN(RecommenderConformance):
    model, options = "lowbit-gcn", {"bits": 2, "learn_scale": True}


class TestHalfStepOneBitGCN(RecommenderConformance):  # float16 steps in training, evaluation and the artifact
    model, options = "lowbit-gcn", {"bits": 1, "step_bits": 16}


class TestVectorTwoBitGCN(RecommenderConformance):  # 2 bits a coordinate, coded 4 coordinates at a time
    model, options = "lowbit-gcn", {"bits": 2, "vector_dim": 4, "estimator": "ste", "step_bits": 16}


class TestAngularOneBitGCN(RecommenderConformance):  # sign codes scored by SimHash's angle estimate
    model, options = "lowbit-gcn", {"bits": 1, "similarity": "angular", "scale_method": "norm"}


class TestPopularity(RecommenderConformance):
    model, learns = "pop", False
