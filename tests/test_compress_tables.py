"""Conformance of every embedding table to ``qrec.compress.base.EmbeddingTable``.

``TableConformance`` is a mixin: a table family joins with a two-line subclass::

    class TestMyTable(TableConformance):
        spec = "my8x16"

(other test files can ``from test_compress_tables import TableConformance``). Class attributes tune it:
``tol`` (0 = bit-exact comparisons; float-matmul tables such as low-rank need a little) and
``train_equals_eval`` (False where training mode legitimately differs: post-training quantization trains
in float, BatchNorm uses batch statistics).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from qrec.compress import EmbeddingTable, build_table, code_size
from qrec.compress.base import tensor_bits
from qrec.retrieval.topk import masked_topk

N, DIM = 120, 64
# Zipf-like training counts, with ties, and the popular rows scattered over the id space (not ids 0..k)
_RANK = np.random.default_rng(7).permutation(N)
FREQUENCIES = (1000 // (1 + _RANK)).astype(np.int64)


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if tol == 0:
        assert torch.equal(actual, expected), (actual - expected).abs().max()
    else:
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * 1e-2)


class TableConformance:
    spec: str = ""
    n: int = N
    dim: int = DIM
    tol: float = 0.0
    train_equals_eval: bool = True

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _one_thread(cls):
        """Tiny tensors: intra-op threads cost more than they save, most of all on a shared CI machine."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)

    # -- helpers

    def make(self, seed: int = 0, frequencies=FREQUENCIES) -> EmbeddingTable:
        torch.manual_seed(seed)
        return build_table(self.spec, self.n, self.dim, frequencies=frequencies)

    def ids(self, *shape: int, seed: int = 1) -> torch.Tensor:
        return torch.randint(0, self.n, shape, generator=torch.Generator().manual_seed(seed))

    def trained(self) -> EmbeddingTable:
        """A table after a few optimizer steps, so tests do not only see the initial state."""
        table = self.make()
        opt = torch.optim.Adam(table.parameters(), lr=1e-2)
        for step in range(3):
            out = table(self.ids(64, seed=step))
            loss = (out - 0.05).square().mean() + table.aux_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return table

    # -- the interface

    def test_spec_round_trips(self):
        table = self.make()
        assert table.spec == self.spec
        assert type(build_table(table.spec, self.n, self.dim, frequencies=FREQUENCIES)) is type(table)

    @pytest.mark.parametrize("shape", [(7,), (5, 3), (1,)])
    def test_forward_shape_and_dtype(self, shape):
        table = self.make().eval()
        ids = self.ids(*shape)
        out = table(ids)
        assert out.shape == (*shape, self.dim) and out.dtype == torch.float32
        _assert_same(out.reshape(-1, self.dim), table(ids.reshape(-1)), self.tol)

    def test_batch_rows_equal_rows_of_the_whole_table(self):
        table = self.trained().eval()
        ids = self.ids(4, 6)
        _assert_same(table(ids), table.all()[ids], self.tol)

    def test_gradients_reach_every_trained_parameter(self):
        table = self.make().train()
        out = table(torch.arange(self.n))  # every row, so every group and codebook takes part
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        loss = (out * weights).sum() + table.aux_loss()
        loss.backward()
        for name, p in table.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient"

    def test_aux_loss_is_a_finite_scalar(self):
        table = self.make().train()
        table(self.ids(16))
        aux = table.aux_loss()
        assert aux.shape == () and torch.isfinite(aux)

    def test_all_equals_forward_of_every_id_in_eval_mode(self):
        table = self.trained().eval()
        _assert_same(table.all(), table(torch.arange(self.n)), self.tol)

    def test_served_table_is_what_the_model_sees(self):
        table = self.trained().eval()
        tensors = table.export()
        assert all(t.device.type == "cpu" for t in tensors.values())
        decoded = type(table).decode_export(tensors, self.n, self.dim, table.spec)
        assert decoded.shape == (self.n, self.dim)
        _assert_same(decoded, table.all(), self.tol)

    def test_coded_serving_scores_like_the_decoded_table(self):
        """DPQ / MGQE tables are served as their codes: lookups, whole table and scores against queries all
        equal the decoded table's, and the server holds exactly the exported tensors."""
        table = self.trained().eval()
        if not hasattr(type(table), "coded_parts"):
            pytest.skip("only DPQ / MGQE tables are served from their codes")
        from qrec.compress.coded import CodedEmbedding

        tensors = table.export()
        decoded = type(table).decode_export(tensors, self.n, self.dim, table.spec)
        served = CodedEmbedding(type(table), tensors, self.n, self.dim, table.spec)
        ids = self.ids(3, 7)
        assert torch.equal(served(ids), decoded[ids]) and torch.equal(served.all(), decoded)
        queries = torch.randn(5, self.dim, generator=torch.Generator().manual_seed(3))
        expected = (queries.double() @ decoded.double().T).float()
        ranked = {}
        exclude = sp.random(5, self.n, density=0.2, random_state=0, format="csr")
        for method in ("auto", "lut", "decode"):  # auto: a table this small is kept decoded beside its codes
            served.method = method
            assert (served.decoded() is not None) == (method == "auto")
            torch.testing.assert_close(served.scores(queries), expected, rtol=1e-5, atol=1e-5)
            assert torch.equal(served(ids), decoded[ids])
            ranked[method] = served.topk(queries, 4, exclude, offset=0.5)
            want = masked_topk(served.scores(queries) + 0.5, 4, exclude)  # its own scores, ranked by the rule
            assert torch.equal(ranked[method][0], want[0]) and torch.equal(ranked[method][1], want[1])
        assert served.serving_bits() == table.serving_bits()

    def test_training_forward_value_is_the_served_value(self):
        if not self.train_equals_eval:
            pytest.skip("training mode differs from eval mode by design for this table")
        table = self.trained()
        ids = self.ids(9)
        train_out = table.train()(ids)
        _assert_same(train_out, table.eval()(ids), self.tol)

    def test_serving_bits_equal_code_size_and_bytes_held(self):
        table = self.trained()
        tensors = table.export()
        held = sum(t.numel() * t.element_size() for t in tensors.values())
        assert table.serving_bits() == code_size(self.spec, self.n, self.dim) == 8 * held == tensor_bits(tensors)

    def test_export_drops_training_only_state(self):
        if self.spec == "full":
            pytest.skip("the full table is its own serving form")
        tensors = self.make().export()
        assert not any(t.is_floating_point() and t.shape == (self.n, self.dim) for t in tensors.values())

    def test_state_dict_round_trip(self):
        source = self.trained().eval()
        target = self.make(seed=123, frequencies=FREQUENCIES[::-1].copy())
        target.load_state_dict(source.state_dict())
        target.eval()
        _assert_same(target.all(), source.all(), 0.0)
        assert target.serving_bits() == source.serving_bits()

    def test_copies_and_pickles_after_a_training_forward(self):
        import copy
        import pickle

        table = self.trained()
        table(self.ids(5))  # leaves autograd state (e.g. a pending aux loss) behind
        for clone in (copy.deepcopy(table), pickle.loads(pickle.dumps(table))):
            _assert_same(clone.eval().all(), table.eval().all(), 0.0)
            table.train()

    def test_deterministic_given_the_seed(self):
        a, b = self.make(seed=5), self.make(seed=5)
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
        assert torch.equal(a.eval().all(), b.eval().all())

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_on_cuda(self):
        table = self.trained().cuda().eval()
        ids = self.ids(8).cuda()
        out = table(ids)
        assert out.device.type == "cuda"
        decoded = type(table).decode_export(table.export(), self.n, self.dim, table.spec)
        # across devices, equal to float32 rounding (the GPU fuses multiply-adds the CPU rounds twice)
        _assert_same(decoded, table.all(), max(self.tol, 1e-5))
        table.train()
        (table(ids).sum() + table.aux_loss()).backward()
        assert all(p.grad is not None and p.grad.device.type == "cuda" for p in table.parameters())


class TestFull(TableConformance):
    spec = "full"


class TestLowRank(TableConformance):
    spec, tol = "lr8", 1e-5


class TestSQ1(TableConformance):
    spec = "sq1"


class TestSQ4(TableConformance):
    spec = "sq4"


class TestSQ8(TableConformance):
    spec = "sq8"


class TestSQ8PostTraining(TableConformance):
    spec, train_equals_eval = "sq8-ptq", False


class TestDPQ8x16(TableConformance):
    spec = "dpq8x4b"


class TestDPQ64x256(TableConformance):
    spec = "dpq64x256"


class TestDPQSoftmax(TableConformance):
    spec = "dpq16x2b-sx"


class TestDPQBatchNorm(TableConformance):
    spec, train_equals_eval = "dpq8x4b-bn", False


class TestDPQSoftmaxBatchNorm(TableConformance):
    spec, train_equals_eval = "dpq8x4b-sx-bn", False


class TestMGQEShared(TableConformance):
    spec = "mgqe8x16/4@0.25"


class TestMGQEPaperDefault(TableConformance):
    spec = "mgqe64x256/64@0.1"


class TestMGQEThreeTiers(TableConformance):
    spec = "mgqe64x256/64/16@0.1/0.3"


class TestMGQEUnsharedK(TableConformance):
    spec = "mgqe-uk8x16/4@0.25"


class TestBinary(TableConformance):
    spec = "bin"


class TestBinaryGaussian(TableConformance):
    spec = "bin-gaussian"


class TestUniform2(TableConformance):
    spec = "q2"


class TestUniform8(TableConformance):
    spec = "q8"


class TestMGQEUnsharedD(TableConformance):
    spec = "mgqe-ud8/4x16@0.25"


# --------------------------------------------------------------------- behaviour beyond the interface


def test_mgqe_groups_follow_training_frequency():
    from qrec.data.partition import head_mask

    torch.manual_seed(0)
    table = build_table("mgqe8x16/4@0.25", N, DIM, frequencies=FREQUENCIES)
    assert torch.equal(table.group == 0, torch.from_numpy(head_mask(FREQUENCIES, fraction=0.25)))
    assert int((table.group == 0).sum()) == 30  # ceil(0.25 * 120)


def test_mgqe_tail_rows_use_only_the_first_k2_centroids():
    torch.manual_seed(0)
    table = build_table("mgqe8x16/4@0.25", N, DIM, frequencies=FREQUENCIES)
    head, tail = table.group_codes(0), table.group_codes(1)
    assert int(tail.max()) < 4 and int(head.max()) >= 4  # the head uses the extra centroids


@pytest.mark.parametrize("spec", ["mgqe8x16/4@0.25", "mgqe-uk8x16/4@0.25", "dpq8x16c", "sq4", "sq3-ptq"])
def test_codes_are_what_the_table_decodes(spec):
    """``codes()`` (what Fig. 8 compares) rebuilds the eval-mode table through its codebooks, row by row."""
    from qrec.retrieval.pqscan import gather_centroids
    from qrec.compress.scalar import dequantize

    torch.manual_seed(0)
    table = build_table(spec, N, DIM, frequencies=FREQUENCIES).eval()
    codes = table.codes()
    if spec.startswith("sq"):
        assert codes.shape == (N, DIM)
        rebuilt = dequantize(codes, *table.ranges(), table.bits)
    else:
        assert codes.shape == (N, 8)
        group = table.group if spec.startswith("mgqe") else torch.zeros(N, dtype=torch.long)
        books = table._codebook if spec.startswith("mgqe") else (lambda g: table.centroids)
        rebuilt = torch.cat([gather_centroids(books(int(g)), c[None]) for g, c in zip(group, codes)])
    torch.testing.assert_close(rebuilt, table.all(), rtol=0, atol=1e-6)


def test_variable_d_mgqe_has_no_single_code_matrix():
    table = build_table("mgqe-ud8/4x16@0.25", N, DIM, frequencies=FREQUENCIES)
    with pytest.raises(ValueError, match="different D"):
        table.codes()


def test_mgqe_groupwise_lookup_equals_quantizing_rows_one_by_one():
    """Algorithm 1 (split by group, one call per group, reorder) = the per-item map it replaces."""
    from qrec.compress.dpq import split
    from qrec.retrieval.pqscan import gather_centroids
    from qrec.compress.nearest import nearest_codes

    torch.manual_seed(0)
    table = build_table("mgqe-ud8/4x16@0.25", N, DIM, frequencies=FREQUENCIES).eval()
    ids = torch.randint(0, N, (50,), generator=torch.Generator().manual_seed(2))
    rows = []
    for i in ids.tolist():
        g = int(table.group[i])
        book = table._codebook(g)
        x = table.query[i : i + 1]
        rows.append(gather_centroids(book, nearest_codes(split(x, book.shape[0]), book)))
    assert torch.equal(table(ids), torch.cat(rows))


def test_mgqe_needs_frequencies():
    with pytest.raises(ValueError, match="frequencies"):
        build_table("mgqe8x16/4@0.25", N, DIM)


def test_dpq_bn_export_uses_running_statistics():
    """The DPQ-BN pitfall: training-mode codes follow batch statistics; export must not depend on the mode."""
    torch.manual_seed(0)
    table = build_table("dpq8x16c-bn", N, DIM)
    table.train()
    for seed in range(3):
        table(torch.randint(0, N, (32,), generator=torch.Generator().manual_seed(seed)))
    stats = (table.running_mean.clone(), table.running_var.clone())
    exported = table.export()
    assert table.training  # export did not flip the mode ...
    assert torch.equal(table.running_mean, stats[0]) and torch.equal(table.running_var, stats[1])  # ... nor the stats
    assert torch.equal(table.eval().export()["codes"], exported["codes"])


def test_aux_loss_averages_over_all_lookups_of_a_step():
    """BPR looks items up twice per step (positives, negatives): the centroid loss covers both."""
    torch.manual_seed(0)
    table = build_table("dpq8x16c", N, DIM).train()
    a, b = torch.arange(0, 10), torch.arange(10, 40)
    table(a)
    table(b)
    both = table.aux_loss()
    assert torch.equal(both, table.aux_loss())  # reading twice is harmless
    table(torch.cat([a, b]))
    torch.testing.assert_close(both, table.aux_loss())  # a new step starts after a read
    with torch.no_grad():
        table(a)  # evaluation lookups are not recorded
    torch.testing.assert_close(both, table.aux_loss())


@pytest.mark.parametrize("spec", ["dpq8x100", "dpq7x16c", "dpq8x1c", "mgqe8x4/16@0.1", "mgqe8x16/4@0.5/0.2",
                                  "mgqe8x16/4/2@0.1", "mgqe-ud8x16@0.1", "sq0", "sq17", "lr0", "dpq8x16c-bn-sx"])
def test_bad_specs_raise_clear_errors(spec):
    from qrec.errors import SpecError

    with pytest.raises(SpecError):
        code_size(spec, N, DIM)


@pytest.mark.parametrize("spec", ["dpq8x16c", "mgqe8x16/4@0.25", "mgqe-uk8x16/4@0.25", "mgqe-ud8/4x16@0.25"])
def test_repeated_ids_are_quantized_once_with_the_batch_loss_unchanged(spec):
    """Distinct rows are quantized once; outputs, the centroid loss and all gradients equal a row-by-row
    computation over the batch with its repeats (the float64 reference: mean over occurrences)."""
    torch.manual_seed(3)
    freq = np.arange(N, 0, -1)
    table = build_table(spec, N, DIM, frequencies=freq).train()
    ids = torch.tensor([[5, 5, 1], [0, 5, 1], [7, 0, 0]])
    out = table(ids)
    with torch.no_grad():
        decoded = table.eval().all()
    table.train()
    torch.testing.assert_close(out.detach(), decoded[ids])
    aux = table.aux_loss()
    query = table.query.detach().double()
    expected = (decoded.double()[ids.reshape(-1)] - query[ids.reshape(-1)]).square().mean()
    torch.testing.assert_close(aux.double(), expected)
    (out.sum() + aux).backward()
    grad = table.query.grad.clone()
    table.query.grad = None
    for p in table.parameters():
        p.grad = None
    # the same loss assembled from one lookup per occurrence
    rows = torch.cat([table(i.reshape(1)) for i in ids.reshape(-1)])
    aux_rows = table.aux_loss()
    torch.testing.assert_close(aux_rows, aux)
    (rows.sum() + aux_rows).backward()
    torch.testing.assert_close(table.query.grad, grad)


@pytest.mark.parametrize("spec", ["mgqe4x16/8@0.3", "mgqe-uk4x16/8@0.3", "mgqe-ud4/2x16@0.3", "dpq4x16c", "dpq4x3b",
                                  "dpq4x16c-sx", "dpq4x16c-bn"])
def test_chunked_decode_and_export_equal_the_whole_table_at_once(spec, monkeypatch):
    """all() in eval mode and MGQE's export work a chunk of rows at a time (memory); the results are the same."""
    from qrec.compress import build_table
    from qrec.compress.base import EmbeddingTable

    torch.manual_seed(0)
    table = build_table(spec, 100, 16, frequencies=np.arange(100)).eval()
    with torch.no_grad():
        whole, exported = table.all(), table.export()
        monkeypatch.setattr(EmbeddingTable, "ALL_CHUNK", 24)  # a multiple of 8: whole bytes per chunk
        assert torch.equal(table.all(), whole)
        chunked = table.export()
    assert chunked.keys() == exported.keys()
    assert all(torch.equal(chunked[k], exported[k]) for k in exported)


@pytest.mark.parametrize("spec", ["full", "lr8", "sq4", "dpq8x16c", "mgqe8x16/4@0.25"])
def test_blocked_topk_ranks_as_the_whole_score_matrix(spec, monkeypatch):
    """A large score matrix is ranked block by block on the CPU (``blocked_topk``); forcing that path on a
    small table gives the ranking of the whole masked matrix (ids and scores; float32 products of one row
    block may round differently from the whole product's, so scores to float tolerance and ids where no
    near-tie could swap them)."""
    from qrec.compress.base import EmbeddingTable

    torch.manual_seed(1)
    table = build_table(spec, N, DIM, frequencies=FREQUENCIES).eval()
    queries = torch.randn(5, DIM)
    exclude = sp.random(5, N, density=0.1, format="csr", random_state=1)
    with torch.no_grad():
        want = table.topk(queries, 7, exclude, offset=0.25)
        monkeypatch.setattr(EmbeddingTable, "TOPK_BLOCKED_FLOATS", 1)
        got = table.topk(queries, 7, exclude, offset=0.25)
        reference = (queries.double() @ table.all().double().T + 0.25).numpy()
    reference[exclude.nonzero()] = -np.inf
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    gaps = np.abs(np.diff(np.sort(reference, axis=1)[:, ::-1][:, :8], axis=1)).min()
    if gaps > 1e-4:
        assert torch.equal(got[0], want[0])
        assert np.array_equal(got[0].numpy(), np.argsort(-reference, axis=1, kind="stable")[:, :7])


def test_eval_rows_are_decoded_once_until_a_parameter_changes():
    """Evaluation scores many batches against one decoded table: it is decoded once in eval mode, again after
    any in-place change of a parameter (an optimizer step, a loaded state), and not kept in training mode."""
    torch.manual_seed(2)
    table = build_table("mgqe8x16/4@0.25", N, DIM, frequencies=FREQUENCIES)
    decodes = []
    original = table.all
    table.all = lambda: decodes.append(1) or original()
    queries = torch.randn(3, DIM)
    table.eval()
    with torch.no_grad():
        first = table.scores(queries)
        assert torch.equal(table.scores(queries), first) and len(decodes) == 1
        next(table.parameters()).add_(0.5)
        assert not torch.equal(table.scores(queries), first) and len(decodes) == 2
        table.scores(queries)
        assert len(decodes) == 2
    table.train()
    assert "_eval_rows" not in table.__dict__
    with torch.no_grad():
        table.scores(queries)  # training mode: the rows as they are now, not kept
    assert len(decodes) == 3 and "_eval_rows" not in table.__dict__
