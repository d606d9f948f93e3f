"""Memorization audit: brute-force nearest neighbours, planted copies flagged, independent sets not, filter, figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_synth.metrics import (
    FeatureExtractor,
    memorization_audit,
    nearest_neighbours,
    pixel_vectors,
)


def _smooth_images(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """Random low-frequency images in [0, 1] (upsampled 3x3 noise), so sets are not trivially far apart."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 3, 3, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


TRAIN = _smooth_images(40, seed=0)
TEST = _smooth_images(40, seed=1)
INDEPENDENT = _smooth_images(30, seed=2)


def _synthetic_with_copies() -> tuple[torch.Tensor, dict[int, int]]:
    """Independent images with 2 exact copies and 2 noisy copies (std 0.01) of training images planted."""
    syn = INDEPENDENT.clone()
    noise = 0.01 * torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    planted = {3: 7, 11: 20, 17: 33, 25: 2}  # synthetic index -> train index
    syn[3], syn[11] = TRAIN[7], TRAIN[20]
    syn[17] = (TRAIN[33] + noise[0]).clamp(0, 1)
    syn[25] = (TRAIN[2] + noise[1]).clamp(0, 1)
    return syn, planted


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_nearest_neighbours_matches_brute_force(chunk_size):
    g = torch.Generator().manual_seed(0)
    q, r = torch.rand(23, 5, generator=g), torch.rand(31, 5, generator=g)
    d, i = nearest_neighbours(q, r, chunk_size=chunk_size)
    qn, rn = q.double().numpy(), r.double().numpy()
    full = np.sqrt(((qn[:, None, :] - rn[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(i.numpy(), full.argmin(1))
    np.testing.assert_allclose(d.numpy(), full.min(1), rtol=1e-12)


def test_nearest_neighbours_exclude_self():
    x = torch.rand(10, 3, generator=torch.Generator().manual_seed(1))
    d, i = nearest_neighbours(x, x, chunk_size=4, exclude_self=True)
    assert torch.all(i != torch.arange(10)) and torch.all(d > 0)


def test_pixel_distance_is_rms_difference():
    a, b = torch.full((1, 1, 4, 4), 0.2), torch.full((1, 1, 4, 4), 0.5)
    d, _ = nearest_neighbours(pixel_vectors(a), pixel_vectors(b))
    assert float(d[0]) == pytest.approx(0.3, rel=1e-6)


@pytest.mark.parametrize("mode", ["explicit", "quantile"])
def test_audit_flags_planted_copies(mode, tmp_path):
    syn, planted = _synthetic_with_copies()
    kwargs = {"threshold": 0.03} if mode == "explicit" else {"threshold_quantile": 0.01}
    rep = memorization_audit(syn, TRAIN, TEST, figure_path=tmp_path / "pairs.png", n_figure_pairs=4, **kwargs)
    flagged = set(rep.pixel.flagged.tolist())
    assert set(planted) <= flagged
    if mode == "explicit":
        assert flagged == set(planted)
    else:
        assert len(flagged - set(planted)) <= 1  # ~1% of same-distribution images fall below the test 1% quantile
    for s, t in planted.items():
        assert int(rep.pixel.synthetic_nearest[s]) == t
    assert float(rep.pixel.synthetic_distances[3]) == 0.0
    assert 0.005 < float(rep.pixel.synthetic_distances[17]) < 0.015  # noise std 0.01 -> RMS distance ~0.01
    # closest pairs first
    assert rep.pixel.flagged[:2].tolist() in ([3, 11], [11, 3])
    assert rep.pixel.fraction_below_test_p1 >= len(planted) / len(syn)
    assert rep.pixel.quantiles["test"][0.01] > rep.pixel.quantiles["synthetic"][0.0]
    with Image.open(rep.figure_path) as im:
        assert im.size[0] > 0 and im.size[1] > 0


def test_audit_flags_nothing_in_independent_set():
    rep = memorization_audit(INDEPENDENT, TRAIN, TEST, threshold=0.03)
    assert rep.pixel.flagged.numel() == 0
    assert float(rep.pixel.synthetic_distances.min()) > 0.03
    assert rep.feature is None and rep.figure_path is None


def test_audit_feature_space_flags_copies():
    syn, planted = _synthetic_with_copies()
    ext = FeatureExtractor(torch.nn.AdaptiveAvgPool2d(3))  # 9 coarse features per image
    rep = memorization_audit(syn, TRAIN, TEST, extractor=ext, threshold=0.03, feature_threshold=0.05)
    assert set(planted) <= set(rep.feature.flagged.tolist())
    summary = rep.summary()
    assert summary["pixel_n_flagged"] == 4 and "feature_frac_below_test_p1" in summary


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: memorization_audit(INDEPENDENT, TRAIN), "threshold"),
        (lambda: memorization_audit(INDEPENDENT, TRAIN[:, :, :8, :8], threshold=0.1), "differ"),
    ],
    ids=["no_threshold_no_test", "audit_shape"],
)
def test_memorization_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
