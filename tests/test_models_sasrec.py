"""SASRec and its data: sequences and windows against brute force, the epoch's next-item windows, causality,
the history each stage reads, a known-answer fixture (a cycle of items to continue), export."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.compress import build_table
from qrec.data.interactions import Interactions, Split
from qrec.data.sampling import NegativeSampler, sequence_epoch
from qrec.data.sequences import PAD, history_windows, last_items, user_sequences
from qrec.models.sasrec import SASRec
from qrec.train.config import RunConfig
from qrec.train.trainer import fit


def _interactions(users, items, times, n_users, n_items) -> Interactions:
    return Interactions(users=np.asarray(users, np.int64), items=np.asarray(items, np.int64), n_users=n_users,
                        n_items=n_items, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                        timestamps=np.asarray(times, np.int64))


def _random_sequences(rng, n_users, n_items, max_len):
    """Each user a random sequence of distinct items, given to the interactions in shuffled row order."""
    seqs = [list(rng.permutation(n_items)[: rng.integers(0, max_len + 1)]) for _ in range(n_users)]
    rows = [(u, i, t) for u, s in enumerate(seqs) for t, i in enumerate(s)]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    users, items, times = (list(c) for c in zip(*rows)) if rows else ([], [], [])
    return seqs, _interactions(users, items, times, n_users, n_items)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(1, 7), drop=st.integers(0, 2))
def test_sequences_and_windows_match_brute_force(seed, length, drop):
    rng = np.random.default_rng(seed)
    seqs, data = _random_sequences(rng, n_users=6, n_items=12, max_len=9)
    indptr, items = user_sequences(data)
    assert [list(items[indptr[u]:indptr[u + 1]]) for u in range(6)] == seqs
    window = last_items(indptr, items, length, drop_last=drop)
    for u, s in enumerate(seqs):
        kept = s[: max(len(s) - drop, 0)][-length:]
        assert list(window[u]) == [PAD] * (length - len(kept)) + kept


def test_later_parts_follow_earlier_ones_and_ties_keep_file_order():
    train = _interactions([0, 0, 0, 1], [3, 1, 2, 4], [5, 5, 1, 0], 2, 6)  # user 0: time 1, then two at time 5
    valid = _interactions([0, 1], [5, 0], [0, 0], 2, 6)  # earlier timestamps, still after training
    indptr, items = user_sequences(train, valid)
    assert items.tolist() == [2, 3, 1, 5, 4, 0] and indptr.tolist() == [0, 4, 6]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(1, 6))
def test_sequence_epoch_windows_are_next_item_pairs(seed, length):
    rng = np.random.default_rng(seed)
    seqs, data = _random_sequences(rng, n_users=8, n_items=15, max_len=10)
    sampler = NegativeSampler(data, seed=0)
    batches = list(sequence_epoch(data, sampler, length, batch_size=3, rng=np.random.default_rng(seed)))
    users = np.concatenate([b["users"].numpy() for b in batches])
    assert sorted(users) == [u for u, s in enumerate(seqs) if len(s) >= 2]  # each such user once
    for b in batches:
        for u, seq, pos, neg in zip(*(b[k].numpy() for k in ("users", "seq", "pos", "neg"))):
            s = seqs[u]
            steps = min(len(s) - 1, length)
            assert list(seq) == [PAD] * (length - steps) + s[:-1][-steps:]
            assert list(pos) == [PAD] * (length - steps) + s[1:][-steps:]
            assert (neg[: length - steps] == PAD).all()
            assert not set(neg[length - steps:]) & set(s)  # negatives are never the user's training items


def _split(seqs: list[list[int]], n_items: int) -> Split:
    """Leave-one-out by hand: the last item of each sequence is test, the one before it validation."""
    parts = {"train": [], "valid": [], "test": []}
    for u, s in enumerate(seqs):
        for t, i in enumerate(s):
            part = "test" if t == len(s) - 1 else "valid" if t == len(s) - 2 else "train"
            parts[part].append((u, i, t))
    made = {k: _interactions(*(list(c) for c in zip(*rows)), len(seqs), n_items) for k, rows in parts.items()}
    return Split(train=made["train"], valid=made["valid"], test=made["test"], protocol="loo")


def _model(split: Split, spec: str = "full", d: int = 16, maxlen: int = 6) -> SASRec:
    torch.manual_seed(0)
    freq = np.bincount(split.train.items, minlength=split.n_items)
    table = build_table(spec, split.n_items, d, frequencies=freq, init_std=0.3)
    return SASRec(table, split.n_users, history_windows(split.train, split.valid, maxlen), maxlen=maxlen, blocks=2,
                  heads=2, dropout=0.2)


def test_each_stage_reads_its_own_history():
    split = _split([[0, 1, 2, 3, 4], [5, 6, 7], list(range(8, 18))], n_items=20)
    model = _model(split)
    users = torch.tensor([0, 1, 2])
    model.set_stage("valid")
    assert model.history(users).tolist() == [[PAD, PAD, PAD, 0, 1, 2], [PAD] * 5 + [5], [10, 11, 12, 13, 14, 15]]
    model.set_stage("test")  # the validation item appended
    assert model.history(users).tolist() == [[PAD, PAD, 0, 1, 2, 3], [PAD] * 4 + [5, 6], [11, 12, 13, 14, 15, 16]]
    with pytest.raises(ValueError, match="stage"):
        model.set_stage("train")


def test_attention_is_causal_and_scores_are_pairwise_consistent():
    split = _split([list(range(k, k + 7)) for k in range(10)], n_items=20)
    model = _model(split, spec="mgqe8x16/4@0.25").eval()
    seq = torch.tensor([[PAD, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[:, -1] = 12
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(changed)
        torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=0)  # no slot sees a later one
        assert not torch.equal(a[:, -1], b[:, -1])
        users = torch.arange(10)
        scores = model.score_all(users)
        items = torch.randint(0, 20, (10, 4))
        torch.testing.assert_close(model.score(users[:, None], items), scores.gather(1, items))


def test_sizes_count_positions_and_blocks_as_dense():
    split = _split([list(range(k, k + 7)) for k in range(10)], n_items=20)
    model = _model(split, d=16, maxlen=6)
    assert set(model.embedding_tables()) == {"item_table"}
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("item_table.")) * 32
    assert model.full_bits() == 20 * 16 * 32 + dense and model.dense_bits() == dense


def _cycle_file(tmp_path, n_items=30, n_users=80):
    """Each user watches a run of consecutive items of a cycle: the next item is always the last one + 1."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(n_users):
        start, length = rng.integers(0, n_items), rng.integers(6, 12)
        lines.append(" ".join(map(str, [u, *((start + np.arange(length)) % n_items)])))
    path = tmp_path / "cycle.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("spec", ["full", "mgqe16x16/4@0.25"])
def test_sasrec_learns_to_continue_a_cycle(tmp_path, spec):
    """Known answer: the test item is the item after the validation item; the trained model ranks it first
    for most users (an untrained one would for ~1 in 20)."""
    cfg = RunConfig(dataset="sequences", data_path=str(_cycle_file(tmp_path)), model="sasrec", embedding=spec,
                    dim=16, epochs=40, batch_size=16, lr=5e-3, ks=(1, 10), threads=1, eval_every=10,
                    model_options={"maxlen": 8, "dropout": 0.1})
    res = fit(cfg, None, progress=False, log=lambda s: None)
    assert res.test["hr@1"] > 0.6
    assert res.model.serving_bits() < res.model.full_bits() or spec == "full"


def test_sasrec_artifact_scores_like_the_trained_model(tmp_path):
    from qrec.export.artifact import export_model, load_model, serving_data

    cfg = RunConfig(dataset="sequences", data_path=str(_cycle_file(tmp_path)), model="sasrec",
                    embedding="dpq8x16c", dim=16, epochs=1, batch_size=32, threads=1, model_options={"maxlen": 8})
    res = fit(cfg, None, progress=False, log=lambda s: None)
    manifest = export_model(res.model, cfg.to_dict(), tmp_path / "m.safetensors", serving_data(res.split, 8))
    assert manifest["serving_bits"] == res.model.serving_bits()
    served, _ = load_model(tmp_path / "m.safetensors")
    every = last_items(*user_sequences(res.split.train, res.split.valid, res.split.test), 8)
    assert np.array_equal(served.history(torch.arange(res.split.n_users)).numpy(), every)  # serving: all history
    served.set_windows(history_windows(res.split.train, res.split.valid, 8))  # evaluation: the split's windows
    users = torch.arange(res.split.n_users)
    with torch.no_grad():
        torch.testing.assert_close(served.score_all(users), res.model.eval().score_all(users), rtol=1e-5, atol=1e-5)
