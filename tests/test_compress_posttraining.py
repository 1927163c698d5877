"""Post-training compression of a trained float table: product k-means against a brute-force reference, and
every spec's ``compress_trained`` form (its served table is what the model sees, its size is the spec's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.compress.kmeans import distortion, product_kmeans
from qrec.compress.spec import build_table, code_size, compress_trained
from qrec.errors import SpecError


def _brute_force_distortion(x: np.ndarray, centroids: np.ndarray) -> float:
    """float64 reference: every sub-vector against every centroid of its subspace."""
    d2 = ((x.astype(np.float64)[:, :, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1)  # (N, D, K)
    return float(d2.min(-1).sum())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), D=st.sampled_from([1, 2, 4]), s=st.sampled_from([1, 2, 3]),
       K=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 5))
def test_kmeans_is_a_fixed_point_of_lloyd_and_matches_brute_force(n, D, s, K, seed):
    x = torch.randn(n, D, s, generator=torch.Generator().manual_seed(seed)).round(decimals=1)  # with ties
    centroids = product_kmeans(x, K, iters=50, seed=seed)
    assert centroids.shape == (D, K, s)
    assert distortion(x, centroids) == pytest.approx(_brute_force_distortion(x.numpy(), centroids.numpy()), rel=1e-9, abs=1e-9)
    again = product_kmeans(x, K, iters=1, seed=seed, fixed=None)
    # Lloyd's steps never raise the distortion (up to float32 rounding of the means)
    assert distortion(x, centroids) <= distortion(x, again) * (1 + 1e-5) + 1e-6


def test_kmeans_distortion_falls_with_more_centroids_and_fixed_centroids_stay():
    x = torch.randn(500, 8, 2, generator=torch.Generator().manual_seed(0))
    errors = [distortion(x, product_kmeans(x, K)) for K in (1, 4, 16, 64)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 4
    fixed = product_kmeans(x[:100], 4)
    grown = product_kmeans(x, 16, fixed=fixed)
    assert torch.equal(grown[:, :4], fixed)
    assert distortion(x, grown) < distortion(x, fixed)


def test_kmeans_with_one_centroid_is_the_mean_and_exact_points_are_recovered():
    x = torch.randn(50, 4, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(product_kmeans(x, 1)[:, 0], x.double().mean(0).float())
    points = torch.tensor([-1.0, 0.5, 2.0, 4.0]).repeat(25).reshape(100, 1, 1)  # exactly 4 distinct values
    assert distortion(points, product_kmeans(points, 4, iters=100)) == 0.0


@pytest.mark.parametrize("spec", ["full", "lr8", "sq4-ptq", "sq2", "dpq8x16c", "dpq16x4c", "mgqe8x16/4@0.25",
                                  "mgqe-uk8x16/4@0.25", "mgqe-ud8/4x16@0.25", "mgqe8x16/8/2@0.2/0.5"])
def test_compress_trained_serves_what_it_evaluates_at_the_spec_size_and_leaves_the_rng_alone(spec):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 16, generator=gen)
    frequencies = torch.randint(0, 100, (40,), generator=gen).numpy()
    torch.manual_seed(7)
    table = compress_trained(spec, weight, frequencies).eval()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(7)))  # RNG untouched
    with torch.no_grad():
        seen = table.all()
        served = type(table).decode_export(table.export(), 40, 16, table.spec)
    torch.testing.assert_close(served, seen)
    assert table.serving_bits() == code_size(spec, 40, 16)
    if spec == "full":
        assert torch.equal(seen, weight)
    else:  # no worse than a random table of the same format
        random = build_table(spec, 40, 16, frequencies=frequencies, init_std=1.0).eval()
        with torch.no_grad():
            assert (seen - weight).square().sum() < (random.all() - weight).square().sum()


def test_post_training_pq_is_k_means_of_the_table_and_leaves_the_rng_alone():
    weight = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    table = compress_trained("dpq4x8c", weight, seed=3)
    assert torch.equal(torch.rand(3), expected)
    torch.testing.assert_close(table.centroids.data, product_kmeans(weight.reshape(64, 4, 2), 8, seed=3))
    more = compress_trained("dpq4x32", weight, seed=3)
    with torch.no_grad():
        assert (more.all() - weight).square().sum() < (table.all() - weight).square().sum()


def test_shared_mgqe_fits_the_tail_codebook_on_tail_rows():
    gen = torch.Generator().manual_seed(4)
    weight = torch.cat([torch.randn(10, 4, generator=gen) + 10, torch.randn(30, 4, generator=gen)])
    frequencies = np.r_[np.full(10, 100), np.ones(30, int)]  # rows 0-9 are the head
    table = compress_trained("mgqe4x8/2@0.25", weight, frequencies)
    tail_book = product_kmeans(weight[10:].reshape(30, 4, 1), 2)
    torch.testing.assert_close(table.codebooks[0].data[:, :2], tail_book)


def test_formats_that_need_training_say_so():
    with pytest.raises(SpecError, match="VQ flavour"):
        compress_trained("dpq8x16c-sx", torch.randn(10, 16))
