"""CUDA paths against their CPU twins and float64 references. Skipped without a GPU (CI has none); run on a
GPU machine with ``pytest tests/test_cuda.py`` (``benchmarks/gpu_session.sh`` does, with the rest of its checks).

What must be *equal* across devices: integer results (codes, popcounts, int8 dots) bit for bit, float results
to float32 rounding, loss curves of short trainings to 0.2% (a float near-tie may flip one code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qrec.compress import build_table
from qrec.compress.nearest import nearest_codes
from qrec.models.graph import normalized_adjacency, propagate
from qrec.retrieval.hamming import BinaryCodes, hamming_dot, pack_signs, score_layers
from qrec.retrieval.intdot import IntCodes, int_dot
from qrec.train.config import RunConfig
from qrec.train.trainer import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")
SPECS = ["full", "lr8", "sq4", "sq4-ptq", "dpq8x16c", "dpq16x4c-sx", "dpq8x16c-bn", "mgqe8x16/4@0.25",
         "mgqe-uk8x16/4@0.25", "mgqe-ud8/4x16@0.25"]


@pytest.fixture(autouse=True)
def _exact_matmul():
    """TF32 would change float32 products in the 10th bit; the comparisons below are at float32 rounding."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("s", [1, 2, 4])
def test_nearest_codes_on_cuda_pick_a_nearest_centroid(s):
    g = torch.Generator().manual_seed(s)
    x, c = torch.randn(300, 6, s, generator=g), torch.randn(6, 32, s, generator=g)
    cpu, gpu = nearest_codes(x, c), nearest_codes(x.to(CUDA), c.to(CUDA)).cpu()
    dist = ((x.double()[:, :, None, :] - c.double()[None]) ** 2).sum(-1)  # (B, D, K) float64 reference
    best = dist.min(-1).values
    for codes in (cpu, gpu):
        chosen = dist.gather(-1, codes[..., None]).squeeze(-1)
        torch.testing.assert_close(chosen, best, rtol=1e-6, atol=1e-6)
    assert torch.equal(cpu, gpu)  # both settle float32 near-ties in float64, ties to the lowest index


@pytest.mark.parametrize("spec", SPECS)
def test_table_forward_backward_and_export_match_the_cpu(spec):
    """Same initial weights and ids on both devices: outputs and every gradient (of the output and the
    auxiliary loss) agree; the exports hold the same bits."""
    n, d = 90, 16
    freq = (1000 // (1 + np.random.default_rng(0).permutation(n))).astype(np.int64)
    torch.manual_seed(0)
    cpu = build_table(spec, n, d, frequencies=freq)
    gpu = build_table(spec, n, d, frequencies=freq)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    ids = torch.randint(0, n, (256,), generator=torch.Generator().manual_seed(1))
    outs = []
    for table, dev in ((cpu, "cpu"), (gpu, CUDA)):
        table.train()
        out = table(ids.to(dev))
        ((out - 0.05).square().mean() + table.aux_loss()).backward()
        outs.append(out.detach().cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert q.grad.device.type == "cuda", name
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-6, msg=name)
    cpu.eval(), gpu.eval()
    for (key, a), b in zip(cpu.export().items(), gpu.export().values()):
        assert torch.equal(a, b.cpu()), key  # codes and codebooks: the same bits from either device


def test_propagation_on_cuda_matches_dense_float64():
    rng = np.random.default_rng(3)
    nu, ni = 40, 55
    u, i = rng.integers(0, nu, 300), rng.integers(0, ni, 300)
    A = np.zeros((nu + ni, nu + ni))
    A[u, nu + i] = A[nu + i, u] = 1.0
    deg = A.sum(1)
    dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    ref = dinv[:, None] * A * dinv[None, :]
    E0 = rng.normal(size=(nu + ni, 16))
    layers = propagate(normalized_adjacency((u, i), nu, ni, device=CUDA), torch.tensor(E0, dtype=torch.float32, device=CUDA), 3)
    want = E0
    for layer in layers:
        assert layer.device.type == "cuda"
        np.testing.assert_allclose(layer.double().cpu().numpy(), want, rtol=1e-5, atol=1e-6)
        want = ref @ want


@pytest.mark.parametrize("d", [64, 70, 200])
def test_popcount_scores_on_cuda_equal_the_cpu_bit_for_bit(d):
    g = torch.Generator().manual_seed(d)
    a, b = torch.randn(33, d, generator=g), torch.randn(47, d, generator=g)
    want = (torch.where(a >= 0, 1, -1) @ torch.where(b >= 0, 1, -1).T).int()
    assert torch.equal(hamming_dot(pack_signs(a).to(CUDA), pack_signs(b).to(CUDA), d).cpu(), want)
    xu, xi = torch.randn(21, 4, d, generator=g), torch.randn(45, 4, d, generator=g)
    su, si = torch.rand(21, 4, generator=g), torch.rand(45, 4, generator=g)
    cu, ci = BinaryCodes.from_float(xu, su), BinaryCodes.from_float(xi, si)
    ref = torch.einsum("uld,ild,ul,il->ui", torch.where(xu >= 0, 1.0, -1.0).double(),
                       torch.where(xi >= 0, 1.0, -1.0).double(), su.double(), si.double())
    gu, gi = cu.to(CUDA), ci.to(CUDA)
    for backend in ("auto", "torch", "gemm"):
        got = score_layers(gu.bits, gu.scales, gi.bits, gi.scales, d, backend=backend)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.double().cpu(), ref, rtol=1e-5, atol=1e-4)


def test_binary_topk_on_cuda_equals_the_fused_cpu_kernel():
    import scipy.sparse as sp

    g = torch.Generator().manual_seed(11)
    cu = BinaryCodes.from_float(torch.randn(37, 4, 64, generator=g), torch.rand(37, 4, generator=g))
    ci = BinaryCodes.from_float(torch.randn(300, 4, 64, generator=g), torch.rand(300, 4, generator=g))
    seen = sp.random(37, 300, density=0.1, format="csr", random_state=0)
    want_i, want_v = cu.topk(ci, 20, exclude=seen)
    got_i, got_v = cu.to(CUDA).topk(ci.to(CUDA), 20, exclude=seen)
    assert got_i.device.type == "cuda"
    assert torch.equal(got_i.cpu(), want_i)
    torch.testing.assert_close(got_v.cpu(), want_v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(19, 23, 64), (1024, 40981, 64), (300, 5000, 100)])
def test_int8_dots_on_cuda_are_exact_for_shapes_cublas_refuses(shape):
    """cuBLASLt's int8 GEMM refused 1,024 x 40,981 x 64 on an H200 (CUDA 13); the result must stay exact."""
    m, n, d = shape
    g = torch.Generator().manual_seed(m)
    a = torch.randint(-128, 128, (m, d), generator=g).to(torch.int8)
    b = torch.randint(-128, 128, (n, d), generator=g).to(torch.int8)
    got = int_dot(a.to(CUDA), b.to(CUDA), "auto")
    assert got.dtype == torch.int32 and torch.equal(got.cpu().long(), a.long() @ b.long().T)


@pytest.mark.parametrize("d", [16, 64, 100])
def test_int8_dots_on_cuda_are_exact(d):
    g = torch.Generator().manual_seed(d)
    a = torch.randint(-128, 128, (19, d), generator=g).to(torch.int8)
    b = torch.randint(-128, 128, (31, d), generator=g).to(torch.int8)
    got = int_dot(a.to(CUDA), b.to(CUDA), "auto")
    assert got.dtype == torch.int32 and torch.equal(got.cpu().long(), a.long() @ b.long().T)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_code_scores_on_cuda_equal_the_dequantized_float(bits):
    g = torch.Generator().manual_seed(bits)
    U, I = torch.randn(21, 64, generator=g) * 0.3, torch.randn(45, 64, generator=g)
    cu, ci = IntCodes.from_float(U, bits), IntCodes.from_float(I, bits)
    ref = cu.decode().double() @ ci.decode().double().T
    got = cu.to(CUDA).score(ci.to(CUDA))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.double().cpu(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("method", ["lut", "decode", "auto"])
def test_pq_scores_on_cuda_equal_the_float64_reference(method):
    from qrec.retrieval.pqscan import gather_centroids
    from qrec.retrieval.pqscan import pq_scores

    g = torch.Generator().manual_seed(5)
    codebook, codes = torch.randn(8, 256, 8, generator=g), torch.randint(0, 256, (3000, 8), generator=g)
    queries = torch.randn(33, 64, generator=g)
    ref = queries.double() @ gather_centroids(codebook.double(), codes).T
    got = pq_scores(queries.to(CUDA), codes.to(torch.uint8), codebook, method)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.double().cpu(), ref, rtol=1e-5, atol=1e-4)


def _fit_both(cfg: RunConfig):
    quiet = dict(progress=False, log=lambda s: None)
    return fit(cfg, None, **quiet), fit(cfg.replace(device="cuda"), None, **quiet)


@pytest.mark.parametrize("model, spec", [("gmf", "full"), ("gmf", "mgqe8x16/4@0.25"), ("neumf", "dpq8x16c"),
                                          ("neumf", "sq4")])
def test_ncf_training_on_cuda_tracks_the_cpu(seq_file, model, spec):
    """Same seed, same sampled negatives, same initial weights: the loss curves agree to float rounding (a
    nearest-centroid near-tie may flip a code, so the tolerance is loose), and evaluation runs on the GPU."""
    cfg = RunConfig(dataset="sequences", data_path=str(seq_file), model=model, embedding=spec, epochs=2,
                    batch_size=64, dim=8, threads=1)
    cpu, gpu = _fit_both(cfg)
    assert next(gpu.model.parameters()).device.type == "cuda"
    np.testing.assert_allclose([h["loss"] for h in gpu.history], [h["loss"] for h in cpu.history], rtol=2e-3)
    assert set(gpu.test) == set(cpu.test)


@pytest.mark.parametrize("spec", ["full", "mgqe8x16/4@0.25"])
def test_sasrec_training_on_cuda_tracks_the_cpu(seq_file, spec):
    """Without dropout (its random streams differ between devices) the loss curves agree to rounding."""
    cfg = RunConfig(dataset="sequences", data_path=str(seq_file), model="sasrec", embedding=spec, epochs=2,
                    batch_size=16, dim=8, threads=1, model_options={"maxlen": 8, "dropout": 0.0})
    cpu, gpu = _fit_both(cfg)
    np.testing.assert_allclose([h["loss"] for h in gpu.history], [h["loss"] for h in cpu.history], rtol=2e-3)
    assert set(gpu.test) == set(cpu.test)


@pytest.mark.parametrize("model, options", [("lightgcn", {}), ("binary-gcn", {}),
                                            ("lowbit-gcn", {"bits": 2, "estimator": "ewgs", "delta_every": 1}),
                                            ("lowbit-gcn", {"bits": 1, "rotation": "itq"})])
def test_graph_training_on_cuda_tracks_the_cpu(graph_dir, model, options):
    cfg = RunConfig(dataset="lightgcn", data_path=str(graph_dir), protocol="given", model=model, epochs=2,
                    batch_size=64, dim=16, ks=(20,), select_metric="ndcg@20", model_options=options, threads=1)
    cpu, gpu = _fit_both(cfg)
    np.testing.assert_allclose([h["loss"] for h in gpu.history], [h["loss"] for h in cpu.history], rtol=2e-3)
    # a model trained on the GPU scores the same from its codes on either device
    users = torch.arange(gpu.split.n_users)
    with torch.no_grad():
        on_gpu = gpu.model.eval().score_all(users.to(CUDA)).cpu()
        on_cpu = gpu.model.cpu().eval().score_all(users)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-5, atol=1e-5)
