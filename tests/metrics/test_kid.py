"""KID: unbiased MMD^2 against an O(n^2) hand-written loop, behaviour on equal/shifted distributions, seeding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_synth.metrics import KIDMetric, compute_kid, mmd2_unbiased, polynomial_kernel


def _k(x, y, d):
    return (float(np.dot(x, y)) / d + 1.0) ** 3


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al. 2018 unbiased estimator, written as explicit double sums."""
    m, n, d = len(x), len(y), x.shape[1]
    sxx = sum(_k(x[i], x[j], d) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    syy = sum(_k(y[i], y[j], d) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    sxy = sum(_k(x[i], y[j], d) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_polynomial_kernel_matches_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    k = polynomial_kernel(torch.tensor(x), torch.tensor(y)).numpy()
    ref = np.array([[_k(a, b, 4) for b in y] for a in x])
    np.testing.assert_allclose(k, ref, rtol=1e-12)


@pytest.mark.parametrize("m,n", [(5, 4), (6, 6), (2, 3)], ids=["5x4", "6x6", "2x3"])
def test_mmd2_unbiased_matches_loops(m, n):
    rng = np.random.default_rng(m * 10 + n)
    x, y = rng.normal(size=(m, 3)), rng.normal(loc=0.3, size=(n, 3))
    assert float(mmd2_unbiased(torch.tensor(x), torch.tensor(y))) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)


def test_kid_with_one_full_subset_equals_reference():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.5
    r = compute_kid(x, y, subset_size=7, num_subsets=1)
    assert r.mean == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    assert r.std == 0.0 and r.subset_size == 7 and r.num_subsets == 1


def test_kid_near_zero_for_same_distribution_and_larger_when_shifted():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    shifted = torch.randn(400, 16, generator=g) + 1.0
    same = compute_kid(a, b, subset_size=100, num_subsets=20)
    diff = compute_kid(a, shifted, subset_size=100, num_subsets=20)
    assert abs(same.mean) < 0.02
    assert diff.mean > 0.3
    assert diff.mean > 10 * abs(same.mean)


def test_kid_seeding():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g)
    r1 = compute_kid(a, b, subset_size=20, num_subsets=5, seed=0)
    r2 = compute_kid(a, b, subset_size=20, num_subsets=5, seed=0)
    r3 = compute_kid(a, b, subset_size=20, num_subsets=5, seed=1)
    assert r1 == r2
    assert r1.mean != r3.mean


def test_kid_caps_subset_size_and_metric_wrapper():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, 4, generator=g), torch.randn(12, 4, generator=g)
    r = compute_kid(a, b, subset_size=1000, num_subsets=3)
    assert r.subset_size == 10
    out = KIDMetric(subset_size=1000, num_subsets=3)(a, b)
    np.testing.assert_allclose(out.numpy(), [r.mean, r.std])


@pytest.mark.parametrize(
    "a,b,kwargs,match",
    [
        (torch.zeros(5), torch.zeros(5, 3), {}, "number of images"),
        (torch.zeros(5, 3), torch.zeros(5, 4), {}, "dimensions differ"),
        (torch.zeros(1, 3), torch.zeros(5, 3), {}, "at least 2"),
        (torch.zeros(5, 3), torch.zeros(5, 3), {"num_subsets": 0}, "num_subsets"),
    ],
    ids=["1d", "dims", "too_few", "no_subsets"],
)
def test_kid_errors(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_kid(a, b, **kwargs)
