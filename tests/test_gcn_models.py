"""LightGCN, the 1-bit (BiGeaR-style) and the b-bit (HQ-GNN-style) GCNs: losses, exact code scoring,
serving sizes, and recovery of held-out edges on a planted-community graph."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.models.binary_gcn import BinaryGCN
from qrec.models.graph import normalized_adjacency_scipy
from qrec.models.lightgcn import (LightGCN, permuted, ranked_unseen, sample_bpr_batch, sampled_softmax_loss,
                                  soft_target_loss)
from qrec.models.lowbit_gcn import LowBitGCN


def planted(seed=0, C=4, nu_c=30, ni_c=30, p_in=0.5, p_out=0.02, hold=0.2):
    """C communities of nu_c users x ni_c items; edges with p_in inside, p_out across; a fraction
    ``hold`` of the in-community edges is held out as the test set."""
    rng = np.random.default_rng(seed)
    nu, ni = C * nu_c, C * ni_c
    same = np.repeat(np.arange(C), nu_c)[:, None] == np.repeat(np.arange(C), ni_c)[None, :]
    u, i = np.nonzero(rng.random((nu, ni)) < np.where(same, p_in, p_out))
    test = same[u, i] & (rng.random(u.size) < hold)
    return nu, ni, (u[~test], i[~test]), (u[test], i[test])


def fit(model, train, steps, lr=0.01, bs=256, seed=0, epoch_steps=50):
    """Minimal BPR loop (the real trainer lives elsewhere); an "epoch" starts every ``epoch_steps`` steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        if step % epoch_steps == 0 and hasattr(model, "on_epoch_start"):
            model.on_epoch_start()
        loss = model.training_loss(sample_bpr_batch(train[0], train[1], model.n_items, bs, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def recall_at(model, train, test, k=10):
    S = model.score_all(torch.arange(model.n_users)).clone()
    S[torch.from_numpy(train[0]), torch.from_numpy(train[1])] = -float("inf")
    top = S.topk(k, dim=1).indices.numpy()
    rec = []
    for u in np.unique(test[0]):
        t = set(test[1][test[0] == u].tolist())
        rec.append(len(t & set(top[u].tolist())) / len(t))
    return float(np.mean(rec))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny graphs: thread start-up and oversubscription on a shared 2-core box cost more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def graph():
    return planted()


@pytest.fixture(scope="module")
def teacher(graph):
    nu, ni, train, _ = graph
    return fit(LightGCN(nu, ni, train, dim=16, n_layers=2), train, 250)


# Random ranking: about 2.8 held-out items among ~106 candidates -> Recall@10 ~ 0.09.
# A perfect community detector ranks ~15 in-community candidates first -> ceiling ~ 0.67.

def test_lightgcn_recovers_held_out_edges(graph, teacher):
    _, _, train, test = graph
    r = recall_at(teacher, train, test)
    assert 0.4 < r <= 1.0, r  # observed 0.60 (seed 0)


@pytest.mark.parametrize("estimator", ["gaussian", "ste", "fourier"])
def test_binary_gcn_from_teacher_with_distillation(graph, teacher, estimator):
    nu, ni, train, test = graph
    model = BinaryGCN.from_lightgcn(teacher, estimator=estimator, kd_topr=20)
    assert model.kd_top.shape == (nu, 3, 20)
    fit(model, train, 100, lr=0.005)
    r = recall_at(model, train, test)
    assert 0.35 < r <= 1.0, r  # observed 0.56-0.58 (seed 0)


def test_binary_gcn_from_scratch(graph):
    nu, ni, train, test = graph
    model = fit(BinaryGCN(nu, ni, train, dim=16, n_layers=2), train, 250)
    r = recall_at(model, train, test)
    assert 0.35 < r <= 1.0, r  # observed 0.56 (seed 0)


@pytest.mark.parametrize("estimator", ["ewgs", "ste"])
def test_lowbit_gcn_2bit_recovers_held_out_edges(graph, estimator):
    nu, ni, train, test = graph
    model = fit(LowBitGCN(nu, ni, train, dim=16, n_layers=2, bits=2, estimator=estimator, delta_every=50), train, 250)
    r = recall_at(model, train, test)
    assert 0.35 < r <= 1.0, r  # observed 0.56-0.58 (seed 0)
    if estimator == "ewgs":
        assert [h[0] for h in model.delta_history] == [0, 50, 100, 150, 200]
        assert all(0.0 <= h[1] <= 2.0 and 0.0 <= h[2] <= 2.0 for h in model.delta_history)
        assert model.delta_history[-1][1] > 0
    else:
        assert model.delta_history == []


def test_lowbit_gcn_1bit_with_itq_rotation_from_teacher(graph, teacher):
    """The rotated 1-bit student of the LightGCN teacher keeps the community structure; its rotation stays
    orthogonal and is a checkpointed buffer."""
    nu, ni, train, test = graph
    model = LowBitGCN.from_lightgcn(teacher, bits=1, estimator="ste", rotation="itq")
    fit(model, train, 100, lr=0.005)
    assert 0.35 < recall_at(model, train, test) <= 1.0
    torch.testing.assert_close(model.R.T @ model.R, torch.eye(16), atol=1e-5, rtol=0)
    assert not torch.equal(model.R, torch.eye(16)) and "R" in model.state_dict()
    assert "R" not in LowBitGCN(nu, ni, train, dim=16).state_dict()  # unrotated checkpoints are unchanged


# ------------------------------------------------------------------ exactness of the pieces


def _small(seed=1, nu=9, ni=11):
    rng = np.random.default_rng(seed)
    u, i = rng.integers(0, nu, 40), rng.integers(0, ni, 40)
    return nu, ni, (u, i)


def test_lightgcn_loss_is_bpr_plus_lightgcn_reg():
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2)
    assert float(m.user_table.weight.detach().std()) == pytest.approx(0.1, rel=0.5)
    batch = {"users": torch.tensor([0, 3, 3]), "pos": torch.tensor([1, 2, 5]), "neg": torch.tensor([4, 4, 0])}
    E0 = torch.cat([m.user_table.weight, m.item_table.weight]).detach().double()
    A = m.adjacency.to_dense().double()
    E = (E0 + A @ E0 + A @ A @ E0) / 3
    U, I = E[:nu], E[nu:]
    u, p, n = U[batch["users"]], I[batch["pos"]], I[batch["neg"]]
    bpr = F.softplus(-((u * p).sum(-1) - (u * n).sum(-1))).mean()
    reg = 1e-2 * 0.5 * (E0[:nu][batch["users"]].pow(2).sum() + E0[nu:][batch["pos"]].pow(2).sum()
                        + E0[nu:][batch["neg"]].pow(2).sum()) / 3
    assert m.training_loss(batch).item() == pytest.approx(float(bpr + reg), rel=1e-5)
    torch.testing.assert_close(m.score_all(torch.arange(nu)).double(), U @ I.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("negatives", [0, 2])
def test_lightgcn_softmax_loss_is_shared_negative_cross_entropy_plus_reg(negatives):
    """float64 reference: row b's logits are [u_b.p_b, u_b.n_1 .. u_b.n_N] / T over the batch's first N negatives."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2, loss="softmax", temperature=0.5, negatives=negatives)
    batch = {"users": torch.tensor([0, 3, 3]), "pos": torch.tensor([1, 2, 5]), "neg": torch.tensor([4, 6, 0])}
    neg = batch["neg"][: negatives or 3]
    E0 = torch.cat([m.user_table.weight, m.item_table.weight]).detach().double()
    A = m.adjacency.to_dense().double()
    E = (E0 + A @ E0 + A @ A @ E0) / 3
    U, I = E[:nu], E[nu:]
    u, p, n = U[batch["users"]], I[batch["pos"]], I[neg]
    ce = 0.0
    for b in range(3):
        logits = torch.cat([(u[b] * p[b]).sum().view(1), n @ u[b]]) / 0.5
        ce += float(torch.logsumexp(logits, 0) - logits[0]) / 3
    reg = 1e-2 * 0.5 * (E0[:nu][batch["users"]].pow(2).sum() + E0[nu:][batch["pos"]].pow(2).sum()
                        + E0[nu:][neg].pow(2).sum()) / 3
    assert m.training_loss(batch).item() == pytest.approx(ce + float(reg), rel=1e-5)


def test_lightgcn_softmax_loss_learns_and_students_inherit_it(graph):
    nu, ni, train, test = graph
    model = fit(LightGCN(nu, ni, train, dim=16, n_layers=2, loss="softmax"), train, 150)
    assert recall_at(model, train, test) > 0.4
    student = LowBitGCN.from_lightgcn(model, bits=2)
    assert (student.loss, student.temperature, student.negatives) == ("softmax", 1.0, 0)


@pytest.mark.parametrize("cls", [BinaryGCN, LowBitGCN])
def test_softmax_students_see_only_the_shared_negatives(cls):
    """A student's loss on a batch equals its loss on the batch cut to its first ``negatives`` negatives."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    teacher = LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2, loss="softmax", temperature=0.5, negatives=2)
    extra = dict(teacher=False) if cls is BinaryGCN else dict(estimator="ste")
    student = cls.from_lightgcn(teacher, **extra)
    batch = {"users": torch.tensor([0, 3, 3]), "pos": torch.tensor([1, 2, 5]), "neg": torch.tensor([4, 6, 0])}
    cut = dict(batch, neg=batch["neg"][:2])
    assert student.negatives == 2
    assert student.training_loss(batch).item() == student.training_loss(cut).item()
    assert student.training_loss(batch).item() != student.training_loss(dict(batch, neg=batch["neg"][1:])).item()


@pytest.mark.parametrize("cls", [LightGCN, LowBitGCN])
def test_a_wider_student_starts_with_its_teachers_scores_and_l2(cls):
    """d = 8 teacher -> d = 20 student: rows times an orthonormal lift keep every dot product and norm."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    teacher = fit(LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2), train, 5)
    student = cls.from_lightgcn(teacher, dim=20)
    assert student.dim == 20 and student.user_table.weight.shape == (nu, 20)
    (Ut, It), (Us, Is) = teacher.final_embeddings(), student.final_embeddings()
    torch.testing.assert_close((Us @ Is.T).double(), (Ut @ It.T).double(), rtol=1e-4, atol=1e-6)
    batch = {"users": torch.tensor([0, 3]), "pos": torch.tensor([1, 2]), "neg": torch.tensor([4, 6])}
    assert student.reg_loss(batch).item() == pytest.approx(teacher.reg_loss(batch).item(), rel=1e-5)
    with pytest.raises(ValueError, match="narrower"):
        LightGCN.from_lightgcn(teacher, dim=4)


def test_mask_hits_leaves_out_exactly_each_rows_training_items():
    """Brute force: negative j is left out of row b iff (user b, j) is a training pair; the masked loss equals
    the softmax over the remaining candidates in float64."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    model = LightGCN(nu, ni, train, dim=8, n_layers=2, loss="softmax", temperature=0.5, negatives=4, mask_hits=True)
    pairs = set(zip(train[0].tolist(), train[1].tolist()))
    users = train[0][:4].tolist()
    negs = [train[1][0], train[1][2], (train[1][0] + 1) % ni, (train[1][1] + 3) % ni, train[1][3]]  # 2+ of them hit
    batch = {"users": torch.tensor(users), "pos": torch.tensor(train[1][:4].tolist()), "neg": torch.tensor(negs)}
    b = model.training_batch(batch)
    want = torch.tensor([[(u, j) in pairs for j in b["neg"].tolist()] for u in b["users"].tolist()])
    assert b["neg"].tolist() == negs[:4] and torch.equal(b["hits"], want) and want.any() and not want.all()
    U, I = (E.detach().double() for E in model.final_embeddings())
    u, p, n = U[b["users"]], I[b["pos"]], I[b["neg"]]
    expected = []
    for r in range(4):
        cands = [float(u[r] @ p[r])] + [float(u[r] @ n[j]) for j in range(4) if not want[r, j]]
        z = torch.tensor(cands, dtype=torch.float64) / 0.5
        expected.append(float(torch.logsumexp(z, 0) - z[0]))
    got = sampled_softmax_loss(u, p, n, 0.5, b["hits"]).item()
    assert got == pytest.approx(np.mean(expected), rel=1e-12)
    assert "hits" not in LightGCN(nu, ni, train, dim=8, loss="softmax", negatives=4).training_batch(batch)
    label = LightGCN(nu, ni, train, dim=8, loss="softmax", negatives=4, mask_hits="label").training_batch(batch)
    assert torch.equal(label["hits"], torch.tensor([[j == p for j in negs[:4]] for p in batch["pos"].tolist()]))
    assert label["hits"].any()  # row 0's positive is negative 0 (only the row's own positive is left out)


def test_soft_target_loss_is_the_kl_divergence_in_float64():
    rng = np.random.default_rng(0)
    s, t = (rng.normal(size=(5, 7)) * 3 for _ in range(2))
    ps, pt = (np.exp(x - x.max(1, keepdims=True)) for x in (s, t))
    ps, pt = ps / ps.sum(1, keepdims=True), pt / pt.sum(1, keepdims=True)
    want = (pt * np.log(pt / ps)).sum(1).mean()
    logp = [F.log_softmax(torch.tensor(x, dtype=torch.float64), dim=1) for x in (s, t)]
    assert soft_target_loss(*logp).item() == pytest.approx(want, rel=1e-12)
    assert soft_target_loss(logp[1], logp[1]).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_a_distilled_student_adds_the_kl_to_its_teachers_scores_over_the_same_candidates(loss):
    """kd_weight x KL(teacher || student) over [positive, negatives], the teacher's scores from its final
    embeddings (d = 8, the student's d = 12), the student's from its quantized rows; not in the checkpoint."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    teacher = fit(LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2, init_std=1.0, loss=loss, temperature=0.5,
                           negatives=2), train, 3)
    batch = {"users": torch.tensor([0, 3, 3]), "pos": torch.tensor([1, 2, 5]), "neg": torch.tensor([4, 6, 0])}
    plain = LowBitGCN.from_lightgcn(teacher, dim=12, bits=1, estimator="ste")
    torch.manual_seed(1)
    distilled = LowBitGCN.from_lightgcn(teacher, dim=12, bits=1, estimator="ste", kd_weight=0.7)
    distilled.load_state_dict(plain.state_dict())
    assert "kd_users" not in distilled.state_dict()
    Ut, It = (E.double() for E in teacher.final_embeddings())
    x = distilled.rotate(distilled.combine(distilled.batch_layers(distilled.batch_index(distilled.training_batch(batch)))))
    b = distilled.training_batch(batch)
    xq = torch.cat([distilled.quantize(x[:3], 0.0)[0], distilled.quantize(x[3:], 0.0)[0]]).double()
    u, p, n = xq[:3], xq[3:6], xq[6:]
    tu, tp, tn = Ut[b["users"]], It[b["pos"]], It[b["neg"]]
    if loss == "softmax":
        s, t = (torch.cat([(a * c).sum(1, keepdim=True), a @ m.T], 1) / 0.5 for a, c, m in ((u, p, n), (tu, tp, tn)))
    else:
        s, t = (torch.stack([(a * c).sum(1), (a * m).sum(1)], 1) for a, c, m in ((u, p, n), (tu, tp, tn)))
    kl = (t.softmax(1) * (t.log_softmax(1) - s.log_softmax(1))).sum(1).mean().item()
    gap = distilled.training_loss(batch).item() - plain.training_loss(batch).item()
    assert kl > 1e-2 and gap == pytest.approx(0.7 * kl, rel=1e-4)
    distilled.kd_weight = 0.0  # the ranking part, from the shared log-softmax, is the plain loss
    u, p, n = (r.float() for r in (u, p, n))
    assert distilled.distilled_ranking_loss(b, u, p, n).item() == pytest.approx(distilled.ranking_loss(u, p, n).item(), rel=1e-6)


def test_soft_target_loss_leaves_out_the_candidates_both_sides_mask():
    """mask_hits puts -inf in both distributions: those columns add 0 (not 0 x nan), the rest is the KL over the
    others, and the gradient is finite."""
    rng = np.random.default_rng(1)
    s, t = (torch.tensor(rng.normal(size=(4, 6)), dtype=torch.float64) for _ in range(2))
    hits = torch.zeros(4, 6, dtype=torch.bool)
    hits[0, 2] = hits[3, 5] = True
    s.requires_grad_(True)
    got = soft_target_loss(F.log_softmax(s.masked_fill(hits, -np.inf), 1), F.log_softmax(t.masked_fill(hits, -np.inf), 1))
    want = np.mean([soft_target_loss(F.log_softmax(s[r][~hits[r]], 0)[None], F.log_softmax(t[r][~hits[r]], 0)[None]).item()
                    for r in range(4)])
    assert got.item() == pytest.approx(want, rel=1e-12)
    got.backward()
    assert torch.isfinite(s.grad).all() and (s.grad[hits] == 0).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.integers(1, 5))
def test_ranked_unseen_is_the_brute_force_ranking_of_unseen_items(seed, R, chunk):
    rng = np.random.default_rng(seed)
    nu, ni = 7, 15
    U, I = (torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32) for n in (nu, ni))
    seen = sp.random(nu, ni, density=0.15, random_state=rng, format="csr")
    got = ranked_unseen(U, I, seen, R, chunk)
    scores = U.double().numpy() @ I.double().numpy().T
    for u in range(nu):
        order = [j for j in np.argsort(-scores[u], kind="stable") if seen[u, j] == 0][:R]
        assert got[u, :len(order)].tolist() == order  # then seen items where fewer than R are unseen


def _kd_student(**kw):
    nu, ni, train = _small()
    torch.manual_seed(0)
    teacher = fit(LightGCN(nu, ni, train, dim=8, n_layers=2, reg=1e-2, init_std=1.0, loss="softmax", temperature=0.5,
                           negatives=3, mask_hits=True), train, 3)
    return teacher, LowBitGCN.from_lightgcn(teacher, dim=8, bits=2, estimator="ste", kd_weight=0.7, **kw), train


def test_kd_top_draws_each_rows_items_from_its_users_unseen_teacher_top():
    teacher, student, train = _kd_student(kd_top=3, kd_pool=4)
    U, I = teacher.final_embeddings()
    assert torch.equal(student.kd_ranked, ranked_unseen(U, I, teacher.training_matrix(), 4))
    seen = teacher.training_matrix()
    users = torch.tensor([0, 3, 3, 8])
    top = student.teacher_top(users)
    assert top.shape == (4, 3)
    for r, u in enumerate(users.tolist()):
        assert set(top[r].tolist()) <= set(student.kd_ranked[u].tolist())
        assert all(seen[u, j] == 0 for j in top[r].tolist())
    assert LowBitGCN.from_lightgcn(teacher, dim=8, bits=2, kd_weight=0.7).teacher_top(users) is None


def test_kd_top_items_join_the_distillation_not_the_ranking_loss():
    """CE over [positive, shared negatives] (hits left out) + kd_weight x KL over [positive, negatives, the row's
    teacher-top items], every logit / T, from float64 copies of the student's quantized rows."""
    teacher, student, train = _kd_student(kd_top=2, kd_pool=5)
    batch = student.training_batch({"users": torch.tensor([0, 3, 5]), "pos": torch.tensor([1, 2, 5]),
                                    "neg": torch.tensor([4, 6, 0, 7])})
    rng = np.random.default_rng(2)
    u, p, n = (torch.tensor(rng.normal(size=(k, 8)), dtype=torch.float64) for k in (3, 3, 3))
    top = student.teacher_top(batch["users"])
    t = torch.tensor(rng.normal(size=(3, 2, 8)), dtype=torch.float64)
    got = student.distilled_ranking_loss(batch, u, p, n, top, t).item()
    Ut, It = (E.double() for E in teacher.final_embeddings())
    hits = batch["hits"]
    want = 0.0
    for r, user in enumerate(batch["users"].tolist()):
        keep = [j for j in range(3) if not hits[r, j]]
        s_ce = torch.cat([(u[r] * p[r]).sum()[None], n[keep] @ u[r]]) / 0.5
        s_kd = torch.cat([s_ce, t[r] @ u[r] / 0.5])
        tu = Ut[user]
        t_kd = torch.cat([(tu * It[batch["pos"][r]]).sum()[None], It[batch["neg"][keep]] @ tu,
                          It[top[r]] @ tu]) / 0.5
        ce = torch.logsumexp(s_ce, 0) - s_ce[0]
        kl = (t_kd.softmax(0) * (t_kd.log_softmax(0) - s_kd.log_softmax(0))).sum()
        want += (ce + 0.7 * kl).item() / 3
    assert got == pytest.approx(want, rel=1e-5)


def test_a_kd_top_student_trains_with_the_teachers_top_items_propagated():
    teacher, student, train = _kd_student(kd_top=2)
    before = student.item_table.weight.detach().clone()
    fit(student, train, 3)
    assert not torch.equal(before, student.item_table.weight.detach())
    loss = student.training_loss(sample_bpr_batch(train[0], train[1], student.n_items, 16, np.random.default_rng(0)))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("bad", [dict(kd_top=-1), dict(kd_top=2, kd_pool=0), dict(kd_top=2, kd_weight=0.0),
                                 dict(kd_top=2, loss="bpr", kd_weight=1.0)])
def test_kd_top_refuses_what_it_cannot_distil(bad):
    nu, ni, train = _small()
    opts = dict(loss="softmax", negatives=3, kd_weight=1.0) | bad
    with pytest.raises(ValueError):
        LowBitGCN(nu, ni, train, dim=8, **opts)


@pytest.mark.parametrize("bad", [dict(loss="hinge"), dict(temperature=0.0), dict(negatives=-1), dict(mask_hits=True),
                                 dict(loss="softmax", mask_hits="all")])
def test_lightgcn_refuses_a_bad_loss_option(bad):
    nu, ni, train = _small()
    with pytest.raises(ValueError):
        LightGCN(nu, ni, train, dim=4, **bad)


def test_cache_is_dropped_by_training():
    nu, ni, train = _small()
    m = LightGCN(nu, ni, train, dim=8, n_layers=2)
    before = m.score_all(torch.arange(nu)).clone()
    fit(m, train, 3, bs=8)
    assert not torch.equal(before, m.score_all(torch.arange(nu)))
    torch.testing.assert_close(m.score(torch.tensor([1, 2]), torch.tensor([3, 4])),
                               m.score_all(torch.tensor([1, 2]))[[0, 1], [3, 4]])


@pytest.mark.parametrize("cls", [LightGCN, BinaryGCN, LowBitGCN])
def test_moving_or_casting_the_model_drops_what_it_cached(cls):
    """Cached final embeddings / codes belong to the old device and dtype: ``.to()`` must forget them."""
    nu, ni, train = _small()
    m = cls(nu, ni, train, dim=8, n_layers=2)
    m.score_all(torch.arange(nu))
    assert m._cache is not None or m._codes is not None
    m.double()
    assert m._cache is None and m._codes is None
    assert m.final_embeddings()[0].dtype == torch.float64


@pytest.mark.parametrize("dim", [64, 70])
def test_binary_score_all_equals_float_formula(dim):
    """Popcount scores == sum_l w_l^2 alpha_u alpha_i <sign_u, sign_i> from the float layers."""
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = BinaryGCN(nu, ni, train, dim=dim, n_layers=2)
    layers = [E.detach().double() for E in m.layer_embeddings()]
    ref = 0
    for l, E in enumerate(layers):
        alpha = E.abs().mean(-1)
        s = torch.where(E >= 0, 1.0, -1.0).double()
        w = (l + 1) / 3
        ref = ref + w * w * alpha[:nu, None] * alpha[None, nu:] * (s[:nu] @ s[nu:].T)
    for backend in ("numpy", "torch", "gemm"):
        m.scoring_backend = backend
        torch.testing.assert_close(m.score_all(torch.arange(nu)).double(), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(m.score(torch.tensor([0, 5]), torch.tensor([2, 7])).double(), ref[[0, 5], [2, 7]],
                               rtol=1e-5, atol=1e-7)
    # training scores (straight-through forward) are the same numbers
    batch = {"users": torch.tensor([0, 5]), "pos": torch.tensor([2, 7]), "neg": torch.tensor([1, 1])}
    m.kd_weight = 0.0
    m.reg = 0.0
    want = F.softplus(ref[[0, 5], [1, 1]] - ref[[0, 5], [2, 7]]).mean()
    assert m.training_loss(batch).item() == pytest.approx(float(want), rel=1e-5)


def test_binary_serving_size():
    nu, ni, train = _small()
    m = BinaryGCN(nu, ni, train, dim=64, n_layers=3)
    assert m.serving_bits() == (nu + ni) * 4 * (64 + 32)        # (L+1) d bits + (L+1) float32 scales
    assert m.full_bits() == (nu + ni) * 64 * 32                  # the float LightGCN's final table
    assert m.full_bits() / m.serving_bits() == pytest.approx(2048 / 384)
    assert LightGCN(nu, ni, train, dim=64).serving_bits() == m.full_bits()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_lowbit_score_all_equals_dequantized_and_size(bits):
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LowBitGCN(nu, ni, train, dim=64, n_layers=2, bits=bits)
    U, I = (t.detach().double() for t in m.final_embeddings())
    from qrec.quant.uniform import fake_quantize

    ref = fake_quantize(U, bits) @ fake_quantize(I, bits).T
    torch.testing.assert_close(m.score_all(torch.arange(nu)).double(), ref, rtol=1e-4, atol=1e-6)
    assert m.serving_bits() == (nu + ni) * (64 * bits + 32)


def test_lowbit_rotation_keeps_float_scores_and_codes_score_exactly():
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LowBitGCN(nu, ni, train, dim=64, n_layers=2, bits=1, rotation="itq")
    m.on_epoch_start()  # fits the rotation
    U, I = (t.detach().double() for t in m.final_embeddings())
    R = m.R.double()
    torch.testing.assert_close((U @ R) @ (I @ R).T, U @ I.T, atol=1e-4, rtol=1e-4)  # the float model is unchanged
    from qrec.quant.uniform import fake_quantize

    ref = fake_quantize(U @ R, 1) @ fake_quantize(I @ R, 1).T  # the codes are of the rotated embeddings
    torch.testing.assert_close(m.score_all(torch.arange(nu)).double(), ref, rtol=1e-4, atol=1e-6)
    assert m.serving_bits() == (nu + ni) * (64 + 32)  # the rotation costs no serving bits


def test_lowbit_delta_update_uses_hessian_trace():
    nu, ni, train = _small()
    m = LowBitGCN(nu, ni, train, dim=8, n_layers=1, bits=2, delta_every=1000, hutchinson_samples=4)
    batch = {"users": torch.tensor([0, 1, 2, 3]), "pos": torch.tensor([1, 2, 3, 4]), "neg": torch.tensor([5, 6, 7, 8])}
    m.training_loss(batch).backward()
    assert len(m.delta_history) == 1 and int(m.steps_done) == 1
    m.training_loss(batch)
    assert len(m.delta_history) == 1  # not every step


def test_distillation_term_is_used_and_differentiable(graph, teacher):
    nu, ni, train, _ = graph
    for mode in ("layer", "final"):
        m = BinaryGCN.from_lightgcn(teacher, kd_topr=10, kd_mode=mode, kd_weight=1.0)
        assert m.kd_top.shape == (nu, 3 if mode == "layer" else 1, 10)
        idx = torch.cat(m.sample_distillation(torch.arange(8)))
        loss = m.distillation_loss([E[idx] for E in m.layer_embeddings()])
        loss.backward()
        assert torch.isfinite(loss) and m.user_table.weight.grad.abs().sum() > 0
    # teacher's top items per user are its highest-scored items (final mode, no exclusion)
    top0 = teacher.score_all(torch.tensor([0]))[0].topk(10).indices
    assert set(m.kd_top[0, 0].tolist()) == set(top0.tolist())
    m.attach_teacher(teacher, exclude_train=True)
    seen = set(train[1][train[0] == 0].tolist())
    assert not seen & set(m.kd_top[0, 0].tolist())


def test_from_lightgcn_copies_tables(teacher):
    m = LowBitGCN.from_lightgcn(teacher, bits=4)
    assert torch.equal(m.user_table.weight, teacher.user_table.weight)
    assert m.user_table.weight.data_ptr() != teacher.user_table.weight.data_ptr()
    assert m.n_layers == teacher.n_layers and m.dim == teacher.dim


@pytest.mark.parametrize("cls,kw", [(LightGCN, {}), (BinaryGCN, {"estimator": "gaussian"}),
                                    (LowBitGCN, {"bits": 2, "estimator": "ste"}), (LightGCN, {"n_layers": 1}),
                                    (LightGCN, {"n_layers": 2})])
def test_rows_mode_gives_the_full_graph_loss_and_gradients(cls, kw):
    """``train_graph="rows"`` (last layer only for the batch's rows) is the same math as LightGCN's full pass."""
    nu, ni, train = _small(seed=4, nu=30, ni=40)
    kw = dict(dim=8, n_layers=kw.pop("n_layers", 3), **kw)
    torch.manual_seed(0)
    full = cls(nu, ni, train, train_graph="full", **kw)
    rows = cls(nu, ni, train, train_graph="rows", **kw)
    rows.load_state_dict(full.state_dict())
    batch = {"users": torch.tensor([0, 3, 3, 7, 29]), "pos": torch.tensor([1, 2, 5, 39, 0]),
             "neg": torch.tensor([4, 4, 0, 11, 12])}
    grads = []
    for m in (full, rows):
        loss = m.training_loss(batch)
        loss.backward()
        grads.append((loss.item(), m.user_table.weight.grad.clone(), m.item_table.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cls, kw", [(LightGCN, {}), (LowBitGCN, {"bits": 2}), (LowBitGCN, {"bits": 1}),
                                     (BinaryGCN, {"estimator": "gaussian"})])
@pytest.mark.parametrize("train_graph", ["full", "rows"])
def test_reordered_propagation_is_the_same_model(cls, kw, train_graph):
    """``reorder="rcm"`` only changes where rows sit in memory: same loss, gradients, scores and export."""
    nu, ni, train = _small(seed=5, nu=30, ni=40)
    torch.manual_seed(0)
    plain = cls(nu, ni, train, dim=8, train_graph=train_graph, **kw)
    moved = cls(nu, ni, train, dim=8, train_graph=train_graph, reorder="rcm", **kw)
    moved.load_state_dict(plain.state_dict())
    assert moved._order is not None and not torch.equal(moved._order[0], torch.arange(nu + ni))
    batch = {"users": torch.tensor([0, 3, 3, 7, 29]), "pos": torch.tensor([1, 2, 5, 39, 0]),
             "neg": torch.tensor([4, 4, 0, 11, 12])}
    out = []
    for m in (plain, moved):
        loss = m.training_loss(batch)
        loss.backward()
        out.append((loss.item(), m.user_table.weight.grad.clone(), m.item_table.weight.grad.clone()))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-6)
    for a, b in zip(out[0][1:], out[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    users = torch.arange(nu)
    torch.testing.assert_close(plain.score_all(users), moved.score_all(users), rtol=1e-5, atol=1e-6)
    for name, t in plain.export().items():
        torch.testing.assert_close(t, moved.export()[name], rtol=1e-5, atol=1e-6)


def test_rows_mode_with_distillation(teacher):
    torch.manual_seed(3)
    a = BinaryGCN.from_lightgcn(teacher, kd_topr=10, train_graph="full")
    b = BinaryGCN.from_lightgcn(teacher, kd_topr=10, train_graph="rows")
    batch = {"users": torch.tensor([0, 5, 9]), "pos": torch.tensor([1, 2, 3]), "neg": torch.tensor([7, 8, 9])}
    torch.manual_seed(11)
    la = a.training_loss(batch)
    torch.manual_seed(11)
    lb = b.training_loss(batch)
    assert la.item() == pytest.approx(lb.item(), rel=1e-5)


def test_lightgcn_with_a_compressed_layer0_table():
    """Layer-0 tables are any EmbeddingTable: a spec string builds them (here 8-bit scalar quantization)."""
    nu, ni, train = _small()
    m = LightGCN(nu, ni, train, dim=8, n_layers=2, table="sq8")
    assert m.user_table.family != "full"
    loss = m.training_loss({"users": torch.tensor([0, 1]), "pos": torch.tensor([2, 3]), "neg": torch.tensor([4, 5])})
    loss.backward()
    assert torch.isfinite(loss)
    assert m.score_all(torch.tensor([0])).shape == (1, ni)


def test_binary_joint_float_loss_term():
    nu, ni, train = _small()
    torch.manual_seed(0)
    a = BinaryGCN(nu, ni, train, dim=8, n_layers=2, fp_weight=0.0)
    b = BinaryGCN(nu, ni, train, dim=8, n_layers=2, fp_weight=0.5)
    b.load_state_dict(a.state_dict())
    batch = {"users": torch.tensor([0, 1]), "pos": torch.tensor([2, 3]), "neg": torch.tensor([4, 5])}
    ref = LightGCN(nu, ni, train, dim=8, n_layers=2, reg=0.0)
    ref.load_state_dict(a.state_dict())
    diff = b.training_loss(batch).item() - a.training_loss(batch).item()
    assert diff == pytest.approx(0.5 * ref.training_loss(batch).item(), rel=1e-5)


@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_permuted_is_fancy_indexing_of_rows_and_columns(n, seed):
    """``permuted`` (row gather + column relabel) is ``A[perm][:, perm]`` exactly, sorted indices included."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    perm = rng.permutation(n)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n)
    P = permuted(A, perm, inv)
    np.testing.assert_array_equal(P.toarray(), A.toarray()[perm][:, perm])
    assert all(np.all(np.diff(P.indices[a:b]) > 0) for a, b in zip(P.indptr[:-1], P.indptr[1:]))


def test_reordered_model_keeps_one_graph_and_rebuilds_the_id_order_one():
    """Reordered, LightGCN holds the propagation-order graph once (scipy and torch share its arrays); the id-order
    ``A_hat`` that distillation and exports read is rebuilt equal to ``normalized_adjacency_scipy``'s."""
    nu, ni, train = _small(seed=6, nu=30, ni=40)
    m = LightGCN(nu, ni, train, dim=8, reorder="rcm")
    ref = normalized_adjacency_scipy(train, nu, ni)
    assert (m._adj_sp != ref).nnz == 0
    assert m._adj.col_indices().data_ptr() == m._prop_sp.indices.ctypes.data
    assert m._adj.values().data_ptr() == m._prop_sp.data.ctypes.data


def test_table_scope_l2_is_the_papers_prior_on_every_row():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 12, 80), rng.integers(0, 15, 80)
    model = LightGCN(12, 15, (u, i), dim=4, n_layers=2, reg=0.5, reg_scope="table")
    pairs = len(set(zip(u.tolist(), i.tolist())))
    batch = {"users": torch.tensor([0, 1]), "pos": torch.tensor([2, 3]), "neg": torch.tensor([4, 5])}
    model.reg_loss(batch).backward()
    for t in (model.user_table, model.item_table):  # d/dE (0.5 reg |E|^2 / pairs) = reg E / pairs, every row
        w = next(t.parameters())
        torch.testing.assert_close(w.grad, 0.5 * w.detach() / pairs)
    with pytest.raises(ValueError, match="reg_scope must be one of"):
        LightGCN(12, 15, (u, i), reg_scope="rows")


# ------------------------------------------------------------------ angular (SimHash) scoring of sign codes


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 130))
def test_angular_scores_are_the_norms_times_the_cosine_of_the_hamming_angle(seed, d):
    from qrec.models.lowbit_gcn import angular_scores

    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(7, d, generator=g, dtype=torch.float64)
    sa, sb = torch.where(a >= 0, 1.0, -1.0), torch.where(b >= 0, 1.0, -1.0)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    h = (sa[:, None, :] != sb[None, :, :]).sum(-1).double()                   # Hamming distances, brute force
    ref = na[:, None] * nb[None, :] * torch.cos(torch.pi * h / d)
    rows_a, rows_b = sa * (na / d ** 0.5)[:, None], sb * (nb / d ** 0.5)[:, None]  # codes at the norm scale
    got = angular_scores(rows_a @ rows_b.T, na[:, None] * nb[None, :])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_norm_scale_keeps_each_rows_norm_at_one_bit():
    from qrec.quant.uniform import fake_quantize, node_step

    x = torch.randn(20, 48, dtype=torch.float64)
    xq = fake_quantize(x, 1, node_step(x, 1, "norm"))
    torch.testing.assert_close(xq.norm(dim=1), x.norm(dim=1))
    torch.testing.assert_close(torch.sign(xq), torch.sign(x))
    with pytest.raises(ValueError, match="norm"):
        node_step(x, 2, "norm")


@pytest.mark.parametrize("dim", [64, 70])
def test_angular_lowbit_scores_equal_the_float64_simhash_estimate(dim):
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LowBitGCN(nu, ni, train, dim=dim, n_layers=2, bits=1, rotation="itq", similarity="angular", scale_method="norm")
    m.on_epoch_start()
    U, I = ((t.detach() @ m.R).double() for t in m.final_embeddings())
    h = ((U[:, None, :] >= 0) != (I[None, :, :] >= 0)).sum(-1).double()
    ref = U.norm(dim=1)[:, None] * I.norm(dim=1)[None, :] * torch.cos(torch.pi * h / dim)
    torch.testing.assert_close(m.score_all(torch.arange(nu)).double(), ref, rtol=1e-4, atol=1e-6)
    top, _ = m.topk(torch.arange(nu), 3)
    assert torch.equal(top, ref.float().topk(3, dim=1).indices)
    assert m.serving_bits() == (nu + ni) * (8 * -(-dim // 8) + 32)  # the same bytes of codes and scales


@pytest.mark.parametrize("bad", [dict(bits=2, scale_method="norm"), dict(bits=1, scale_method="meanabs"),
                                 dict(bits=1, scale_method="norm", similarity="cosine")])
def test_angular_similarity_refuses_what_it_cannot_score(bad):
    nu, ni, train = _small()
    with pytest.raises(ValueError, match="similarity"):
        LowBitGCN(nu, ni, train, dim=8, **({"similarity": "angular"} | bad))


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_angular_student_trains_on_the_estimate_it_is_scored_by(loss, graph, teacher):
    """The training logits of an angular student are ``angular_scores`` of its quantized rows; it learns."""
    nu, ni, train, test = graph
    opts = dict(bits=1, estimator="ste", rotation="itq", similarity="angular", scale_method="norm", loss=loss)
    if loss == "softmax":
        opts.update(negatives=32, temperature=0.25, kd_weight=1.0)
    model = LowBitGCN.from_lightgcn(teacher, **opts)
    u, p, n = (torch.randn(6, 16, dtype=torch.float64) for _ in range(3))
    logits = model.code_logits(u, p, n)
    from qrec.models.lowbit_gcn import angular_scores

    nu_, np_, nn_ = u.norm(dim=1), p.norm(dim=1), n.norm(dim=1)
    if loss == "softmax":
        ref = torch.cat([angular_scores((u * p).sum(1), nu_ * np_)[:, None],
                         angular_scores(u @ n.T, nu_[:, None] * nn_[None, :])], 1) / 0.25
    else:
        ref = torch.stack([angular_scores((u * p).sum(1), nu_ * np_), angular_scores((u * n).sum(1), nu_ * nn_)], 1)
    torch.testing.assert_close(logits, ref)
    fit(model, train, 100, lr=0.005)
    assert 0.35 < recall_at(model, train, test) <= 1.0


# ------------------------------------------------------------------ learned per-node steps


@pytest.mark.parametrize("bits, method", [(1, "norm"), (1, "meanabs"), (2, "meanabs")])
def test_learned_steps_start_at_the_statistic_and_learn_as_scales(bits, method):
    nu, ni, train = _small()
    torch.manual_seed(0)
    opts = dict(dim=16, n_layers=2, bits=bits, estimator="ste", scale_method=method, loss="softmax", negatives=4)
    m = LowBitGCN(nu, ni, train, learn_scale=True, **opts)
    fixed = LowBitGCN(nu, ni, train, **opts)
    fixed.load_state_dict({k: v for k, v in m.state_dict().items() if k in fixed.state_dict()})
    users = torch.arange(nu)
    torch.testing.assert_close(m.score_all(users), fixed.score_all(users))  # the statistic's steps, to start
    rng = np.random.default_rng(0)
    loss = m.training_loss(sample_bpr_batch(train[0], train[1], ni, 16, rng))
    loss.backward()
    assert m.log_step.grad is not None and m.log_step.grad.abs().sum() > 0
    U, I = (t.detach() for t in m.final_embeddings())
    with torch.no_grad():
        m.log_step.add_(torch.linspace(-0.5, 0.5, nu + ni))  # new steps: at one bit only the scales change
    m.drop_caches()
    s_u, s_i = (m.log_step.detach()[:nu].exp(), m.log_step.detach()[nu:].exp())
    from qrec.quant.uniform import fake_quantize

    ref = fake_quantize(U.double(), bits, s_u.double()[:, None]) @ fake_quantize(I.double(), bits, s_i.double()[:, None]).T
    torch.testing.assert_close(m.score_all(users).double(), ref, rtol=1e-4, atol=1e-6)
    again = LowBitGCN(nu, ni, train, learn_scale=True, **opts)
    again.load_state_dict(m.state_dict())  # the steps are checkpointed
    torch.testing.assert_close(again.score_all(users), m.score_all(users))


# ------------------------------------------------------------------ float16 steps


@pytest.mark.parametrize("bits, method", [(1, "meanabs"), (1, "norm"), (2, "meanabs"), (8, "maxabs")])
def test_half_steps_score_as_float16_steps_and_export_16_bits(bits, method):
    """``step_bits=16``: the scores are float64 dot products of the codes at float16-rounded steps, the export
    stores those steps as float16 (16 bits per node fewer in the size), and the served model reads them back."""
    from qrec.models.served import served_model
    from qrec.quant.uniform import fake_quantize, node_step

    nu, ni, train = _small()
    torch.manual_seed(0)
    opts = dict(dim=24, n_layers=2, bits=bits, scale_method=method)
    half = LowBitGCN(nu, ni, train, step_bits=16, **opts)
    full = LowBitGCN(nu, ni, train, **opts)
    full.load_state_dict(half.state_dict())
    U, I = (E.detach().double() for E in half.final_embeddings())
    steps = [node_step(E, bits, method).half().double() for E in (U, I)]
    ref = fake_quantize(U, bits, steps[0]) @ fake_quantize(I, bits, steps[1]).T
    users = torch.arange(nu)
    torch.testing.assert_close(half.score_all(users).double(), ref, rtol=1e-5, atol=1e-6)
    exported = half.export()
    assert exported["user_step"].dtype == exported["item_step"].dtype == torch.float16
    assert full.serving_bits() - half.serving_bits() == 16 * (nu + ni)
    served = served_model("LowBitGCN", exported, 24, {"bits": bits})
    torch.testing.assert_close(served.score_all(users), half.score_all(users))
    assert served.serving_bits() == half.serving_bits() and served.export()["item_step"].dtype == torch.float16
    pairs = torch.arange(min(nu, ni))
    torch.testing.assert_close(half.score(pairs, pairs).double(), ref[pairs, pairs], rtol=1e-5, atol=1e-6)


def test_half_steps_train_learned_steps_at_their_stored_precision():
    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LowBitGCN(nu, ni, train, dim=16, n_layers=2, bits=1, estimator="ste", learn_scale=True, step_bits=16,
                  loss="softmax", negatives=4)
    rng = np.random.default_rng(0)
    m.training_loss(sample_bpr_batch(train[0], train[1], ni, 16, rng)).backward()
    assert m.log_step.grad is not None and m.log_step.grad.abs().sum() > 0  # the rounding passes the gradient
    nodes = torch.arange(nu + ni)
    x = torch.cat([E.detach() for E in m.final_embeddings()])
    _, _, step = m.quantize(x, 0.0, nodes)
    torch.testing.assert_close(step.detach(), m.node_steps(nodes).detach().half().float())


@pytest.mark.parametrize("bad", [8, 64, "half"])
def test_step_bits_other_than_16_or_32_are_refused(bad):
    nu, ni, train = _small()
    with pytest.raises(ValueError, match="step_bits"):
        LowBitGCN(nu, ni, train, dim=8, step_bits=bad)


# ------------------------------------------------------------------ vector codes


@pytest.mark.parametrize("bits, s, step_bits", [(2, 4, 16), (2, 2, 32), (4, 2, 16)])
def test_vector_codes_score_as_float64_codewords_and_serve_the_same(bits, s, step_bits):
    """``vector_dim = s``: each row's blocks are its nearest codewords (float64 brute force) at the row's RMS step,
    the scores are their float64 dot products, the size is ``b d`` bits + a step per node + the codebook, and the
    served model reads the same scores back from the artifact's tensors."""
    from qrec.models.served import served_model
    from tests.test_quant_vector import brute_nearest

    nu, ni, train = _small()
    torch.manual_seed(0)
    m = LowBitGCN(nu, ni, train, dim=24, n_layers=2, bits=bits, estimator="ste", vector_dim=s, step_bits=step_bits)
    users = torch.arange(nu)
    scores = m.score_all(users).double()
    C = m.codebook.double()
    assert bool(m.codebook_set) and C.shape == (2 ** (bits * s), s)

    def reference(E):
        E = E.detach().double()
        step = E.square().mean(1, keepdim=True).sqrt().to(m.step_dtype).double()
        return step * C[brute_nearest(E / step, C)].reshape(E.shape)

    U, I = (reference(E) for E in m.final_embeddings())
    torch.testing.assert_close(scores, U @ I.T, rtol=1e-5, atol=1e-6)
    exported = m.export()
    assert m.serving_bits() == (nu + ni) * (bits * 24 + step_bits) + 2 * C.numel() * 32
    served = served_model("LowBitGCN", exported, 24, m.serving_meta())
    torch.testing.assert_close(served.score_all(users), m.score_all(users))
    assert served.serving_bits() == m.serving_bits()
    pairs = torch.arange(min(nu, ni))
    torch.testing.assert_close(served.score(pairs, pairs).double(), (U @ I.T)[pairs, pairs], rtol=1e-5, atol=1e-6)


def test_vector_codes_train_straight_through_with_a_fixed_codebook(graph, teacher):
    """The codebook is fitted once (from the lifted teacher) and kept; the rows learn through the snapping, and
    the student keeps its teacher's held-out edges."""
    nu, ni, train, test = graph
    torch.manual_seed(0)
    m = LowBitGCN.from_lightgcn(teacher, dim=32, bits=2, estimator="ste", vector_dim=4)
    x = torch.randn(5, 32, requires_grad=True)
    xq, uq, step = m.quantize(x, 0.0)
    xq.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # straight through
    fitted = m.codebook.clone()
    fit(m, train, 100, lr=0.005)
    assert torch.equal(m.codebook, fitted)
    assert 0.35 < recall_at(m, train, test) <= 1.0


@pytest.mark.parametrize("bad", [dict(bits=1, vector_dim=4), dict(bits=2, vector_dim=3), dict(vector_dim=4, estimator="ewgs"),
                                 dict(vector_dim=4, learn_scale=True), dict(vector_dim=4, scale_method="maxabs"),
                                 dict(vector_dim=0)])
def test_vector_codes_refuse_what_they_cannot_code(bad):
    nu, ni, train = _small()
    with pytest.raises(ValueError, match="vector"):
        LowBitGCN(nu, ni, train, dim=16, **({"bits": 2, "estimator": "ste"} | bad))
