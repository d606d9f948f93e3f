"""FID: closed form for Gaussians (independent eigen-decomposition and scipy references), self-distance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from monai.metrics.fid import get_fid_score

from monai_synth.metrics import FeatureStatistics, FIDMetric, compute_fid, frechet_distance


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _closed_form_eigh(mu1, s1, mu2, s2) -> float:
    """Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), computed with symmetric eigen-decompositions only."""
    r1 = _psd_sqrt(s1)
    tr_sqrt = np.trace(_psd_sqrt(r1 @ s2 @ r1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _closed_form_scipy(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(covmean)))


def _case(name: str, d: int = 6):
    rng = np.random.default_rng(0)
    if name == "identical":
        s = _spd(rng, d)
        mu = rng.normal(size=d)
        return mu, s, mu.copy(), s.copy()
    if name == "diagonal":
        return rng.normal(size=d), np.diag(rng.uniform(0.5, 2, d)), rng.normal(size=d), np.diag(rng.uniform(0.5, 2, d))
    return rng.normal(size=d), _spd(rng, d), rng.normal(size=d) + 1.0, _spd(rng, d)


@pytest.mark.parametrize("name", ["identical", "diagonal", "general_spd"])
def test_frechet_distance_matches_closed_form(name):
    mu1, s1, mu2, s2 = _case(name)
    stats1 = FeatureStatistics(torch.tensor(mu1), torch.tensor(s1), 100)
    stats2 = FeatureStatistics(torch.tensor(mu2), torch.tensor(s2), 100)
    value = frechet_distance(stats1, stats2)
    assert value == pytest.approx(_closed_form_eigh(mu1, s1, mu2, s2), abs=1e-8, rel=1e-8)
    assert value == pytest.approx(_closed_form_scipy(mu1, s1, mu2, s2), abs=1e-8, rel=1e-8)
    if name == "diagonal":  # commuting covariances: sum (sqrt(a) - sqrt(b))^2
        ref = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
        assert value == pytest.approx(ref, rel=1e-10)
    if name == "identical":
        assert value == pytest.approx(0.0, abs=1e-8)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    mu1, s1, mu2, s2 = _case("general_spd", d=4)
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    ref = _closed_form_eigh(mu1, s1, mu2, s2)
    assert compute_fid(torch.tensor(x), y) == pytest.approx(ref, rel=0.05)


def test_fid_of_a_set_with_itself_is_zero():
    f = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert compute_fid(f, f) == pytest.approx(0.0, abs=1e-6)


def test_feature_statistics_match_numpy():
    f = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    st = FeatureStatistics.from_features(f)
    np.testing.assert_allclose(st.mu.numpy(), f.numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(st.sigma.numpy(), np.cov(f.numpy(), rowvar=False), atol=1e-12)
    assert st.n == 30


def test_fid_metric_agrees_with_monai():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g) + 0.5
    ours = float(FIDMetric()(a, b))
    assert ours == pytest.approx(float(get_fid_score(a, b)), rel=1e-9)
    assert ours == pytest.approx(compute_fid(a, b), rel=1e-12)


@pytest.mark.parametrize(
    "a,b,match",
    [
        (torch.zeros(5), torch.zeros(5, 3), "number of images"),
        (torch.zeros(1, 3), torch.zeros(5, 3), "at least 2"),
        (torch.randn(5, 3), torch.randn(5, 4), "dimensions differ"),
    ],
    ids=["1d", "one_vector", "dim_mismatch"],
)
def test_fid_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        compute_fid(a, b)
