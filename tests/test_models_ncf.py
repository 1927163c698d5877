"""GMF / NeuMF: all-item scoring equals pairwise scoring; sizes count every dense weight."""

import numpy as np
import pytest
import torch

from qrec.compress.full import FullEmbedding
from qrec.models.gmf import GMF
from qrec.models.neumf import NeuMF


def _gmf(nu=7, ni=11, d=8):
    torch.manual_seed(0)
    return GMF(FullEmbedding(nu, d, init_std=0.5), FullEmbedding(ni, d, init_std=0.5))


def _neumf(nu=7, ni=11, d=8):
    torch.manual_seed(0)
    t = lambda n: FullEmbedding(n, d, init_std=0.5)  # noqa: E731
    return NeuMF(t(nu), t(ni), t(nu), t(ni))


@pytest.mark.parametrize("make", [_gmf, _neumf])
def test_score_all_equals_pairwise_scores(make):
    model = make()
    users = torch.tensor([0, 3, 6])
    all_scores = model.score_all(users)
    assert all_scores.shape == (3, model.n_items)
    for row, u in enumerate(users):
        pair = model.score(u.repeat(model.n_items), torch.arange(model.n_items))
        torch.testing.assert_close(all_scores[row], pair.detach(), rtol=1e-5, atol=1e-5)


def test_neumf_scores_do_not_depend_on_the_user_chunk():
    """Evaluation picks the chunk for speed only (a GEMM of another height may round differently)."""
    model = _neumf(nu=40, ni=300, d=16)
    users = torch.arange(40)
    reference = model.score_all(users, chunk=40)
    for chunk in (1, 7, 16):
        torch.testing.assert_close(model.score_all(users, chunk=chunk), reference, rtol=1e-6, atol=1e-6)


def test_gmf_score_matches_float64_reference():
    model = _gmf()
    p = model.user_table.weight.detach().double().numpy()
    q = model.item_table.weight.detach().double().numpy()
    h = model.output.weight.detach().double().numpy()[0]
    b = float(model.output.bias.detach())
    ref = (p[2] * h) @ q.T + b
    np.testing.assert_allclose(model.score_all(torch.tensor([2]))[0].detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_sizes_count_dense_weights():
    model = _neumf(nu=7, ni=11, d=8)
    tables = 2 * (7 + 11) * 8 * 32
    dense = sum(p.numel() for n, p in model.named_parameters() if "mlp." in n or "output" in n) * 32
    assert model.full_bits() == tables + dense
    assert model.serving_bits() == model.full_bits()  # full tables serve at full size
    assert set(model.embedding_tables()) == {"gmf_user", "gmf_item", "mlp_user", "mlp_item"}


def test_pointwise_loss_is_bce_and_backpropagates():
    model = _gmf()
    batch = {"users": torch.tensor([0, 1]), "items": torch.tensor([2, 3]), "labels": torch.tensor([1.0, 0.0])}
    loss = model.training_loss(batch)
    logits = model.score(batch["users"], batch["items"]).detach().double()
    ref = -(np.log(1 / (1 + np.exp(-logits[0].item()))) + np.log(1 - 1 / (1 + np.exp(-logits[1].item())))) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert model.user_table.weight.grad is not None


def _biased(make):
    """``make``'s model with per-row biases set to random values (they start at zero)."""
    model = make()
    tables = [model.user_table, model.item_table] if isinstance(model, GMF) else \
        [model.gmf_user, model.gmf_item, model.mlp_user, model.mlp_item]
    biased = type(model)(*tables, row_bias=True)
    biased.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        biased.biases.user.normal_()
        biased.biases.item.normal_()
    return model, biased


@pytest.mark.parametrize("make", [_gmf, _neumf])
def test_row_biases_add_to_pair_and_all_item_scores(make):
    """score = unbiased score + b_u + b_i; score_all and top-k agree; the norm counts rows and biases."""
    model, biased = _biased(make)
    users, items = torch.tensor([0, 3, 6, 6]), torch.tensor([1, 10, 0, 5])
    scores, norms = biased.score_and_norm(users, items)
    want = model.score(users, items) + biased.biases.user[users] + biased.biases.item[items]
    torch.testing.assert_close(scores, want)
    rows = [model.user_table(users), model.item_table(items)] if isinstance(model, GMF) else \
        [model.gmf_user(users), model.gmf_item(items), model.mlp_user(users), model.mlp_item(items)]
    want_norm = sum((r.double() ** 2).sum(-1) for r in rows) + biased.biases.user[users].double() ** 2 \
        + biased.biases.item[items].double() ** 2
    torch.testing.assert_close(norms.double(), want_norm, rtol=1e-5, atol=1e-6)
    all_scores = biased.score_all(torch.tensor([0, 3]))
    for row, u in enumerate((0, 3)):
        pair = biased.score(torch.full((biased.n_items,), u), torch.arange(biased.n_items))
        torch.testing.assert_close(all_scores[row], pair.detach(), rtol=1e-5, atol=1e-5)
    top, values = biased.topk(torch.tensor([0, 3]), 4)
    torch.testing.assert_close(values, all_scores.topk(4).values)
    assert biased.dense_bits() == model.dense_bits() + 32 * (biased.n_users + biased.n_items)
