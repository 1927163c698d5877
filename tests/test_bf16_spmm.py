"""``A @ X`` with ``X`` read as bfloat16 (``qrec.models.bf16_spmm``) against float64 references, and LightGCN
trained with ``propagation="bfloat16"`` against its float32 self."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.models.bf16_spmm import _chunk_bounds, bf16_bits, bf16_dense_mm
from qrec.models.graph import bf16_product, product, sparse_dense_mm, to_torch_csr
from qrec.models.lightgcn import LightGCN


def _bound(A: sp.csr_matrix, X: np.ndarray) -> np.ndarray:
    """Rounding X to bfloat16 (8 significant bits) moves each entry by at most 2^-8 of itself; float32 sums add
    a little more."""
    return (abs(A) @ np.abs(X)) * (2.0 ** -8 + 2.0 ** -20) + 1e-30


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), m=st.integers(1, 30), d=st.integers(1, 70), density=st.floats(0.0, 1.0),
       seed=st.integers(0, 2 ** 31 - 1), index=st.sampled_from([torch.int32, torch.int64]))
def test_product_is_within_bfloat16_rounding_of_the_float64_product(n, m, d, density, seed, index):
    rng = np.random.default_rng(seed)
    A = sp.random(n, m, density=density, format="csr", random_state=rng, dtype=np.float64)
    A.data = (A.data - 0.5).astype(np.float32).astype(np.float64)  # signed weights, exact in float32
    X = torch.from_numpy(rng.standard_normal((m, d)).astype(np.float32) * 10.0 ** rng.integers(-3, 4))
    out = bf16_dense_mm(to_torch_csr(A, index_dtype=index), X)
    assert out.dtype == torch.float32 and out.shape == (n, d)
    ref = A @ X.double().numpy()
    assert np.all(np.abs(out.numpy() - ref) <= _bound(A, X.double().numpy()))


def test_product_equals_the_float64_product_of_the_rounded_operand():
    # the only error is X's rounding: with X already bfloat16-exact and few terms, the result is exact in float32
    rng = np.random.default_rng(0)
    A = sp.random(300, 200, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    X = torch.from_numpy(rng.standard_normal((200, 64)).astype(np.float32)).to(torch.bfloat16).float()
    out = bf16_dense_mm(to_torch_csr(A, index_dtype=torch.int32), X).numpy()
    ref = A.astype(np.float64) @ X.double().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_bits_are_torch_bfloat16_and_round_to_nearest():
    X = torch.tensor([[1.0, -2.5, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.0e38, 0.0]])
    bits = bf16_bits(X)
    assert bits.dtype == np.uint16
    back = torch.from_numpy(bits.astype(np.int32) << 16).view(torch.float32)
    assert torch.equal(back, X.to(torch.bfloat16).float())
    assert back[0, 2] == 1.0 and back[0, 3] == 1.0 + 2.0 ** -6  # halfway: ties go to the even neighbour


@pytest.mark.parametrize("chunks", [1, 3, 64])
def test_chunks_cover_every_row_once_in_order(chunks):
    indptr = np.concatenate([[0], np.cumsum(np.random.default_rng(1).integers(0, 50, size=37))])
    b = _chunk_bounds(indptr, chunks)
    assert b[0] == 0 and b[-1] == 37 and np.all(np.diff(b) > 0) and len(b) - 1 <= chunks


def test_bad_inputs_are_refused_by_name():
    A = to_torch_csr(sp.eye(3, format="csr"))
    with pytest.raises(ValueError, match=r"A is \(3, 3\), X has 2 rows"):
        bf16_dense_mm(A, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="CPU sparse CSR"):
        bf16_dense_mm(A.to_dense(), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="propagation must be one of"):
        product("float16")
    assert product("float32") is sparse_dense_mm and product("bfloat16") is bf16_product


def _model(propagation, graph):
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 40, 400), rng.integers(0, 60, 400)
    torch.manual_seed(0)
    return LightGCN(40, 60, (u, i), dim=16, n_layers=3, train_graph=graph, propagation=propagation)


@pytest.mark.parametrize("graph", ["rows", "full"])
def test_lightgcn_trains_on_bfloat16_products_close_to_float32(graph):
    batch = {"users": torch.arange(0, 40, 2), "pos": torch.arange(0, 60, 3), "neg": torch.arange(1, 61, 3)}
    losses, grads = [], []
    for prop in ("float32", "bfloat16"):
        model = _model(prop, graph)
        loss = model.training_loss(batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    assert torch.allclose(grads[1], grads[0], rtol=0.0, atol=2e-2 * grads[0].abs().max().item())
    assert not torch.equal(grads[1], grads[0])  # the bfloat16 products did run


def test_evaluation_and_exports_propagate_in_float32():
    a, b = _model("float32", "rows"), _model("bfloat16", "rows")
    for x, y in zip(a.final_embeddings(), b.final_embeddings()):
        assert torch.equal(x, y)

