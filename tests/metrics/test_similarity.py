"""SSIM / MS-SSIM / MSE between and within image sets: identities, closed forms, hand computation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_synth.metrics import (
    MS_SSIM_WEIGHTS,
    ms_ssim_between,
    ms_ssim_params_for_size,
    ms_ssim_within,
    mse_between,
    mse_of_means,
    sample_pairs,
    ssim_between,
    ssim_within,
)

G = torch.Generator().manual_seed(0)
IMGS28 = torch.rand(6, 1, 28, 28, generator=G)


@pytest.mark.parametrize("fn", [ssim_between, ms_ssim_between], ids=["ssim", "ms_ssim"])
def test_image_with_itself_scores_one(fn):
    x = IMGS28[:1]
    r = fn(x, x.clone(), n_pairs=4)
    torch.testing.assert_close(r.values, torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    assert r.mean == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("a,b", [(0.2, 0.6), (0.5, 0.5), (0.0, 1.0)])
def test_ssim_of_constant_images_closed_form(a, b):
    """Constant images have zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) (Wang et al. 2004, Eq. 13)."""
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    c1 = (0.01 * 1.0) ** 2
    assert ssim_between(x, y, n_pairs=1).mean == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)


def test_mse_between_matches_hand_computation():
    a = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    b = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    r = mse_between(a, b, n_pairs=10, seed=7)
    i, j = sample_pairs(4, 3, 10, seed=7)
    an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    ref = [np.mean((an[p] - bn[q]) ** 2) for p, q in zip(i.tolist(), j.tolist())]
    np.testing.assert_allclose(r.values.numpy(), ref, rtol=1e-12)
    assert r.mean == pytest.approx(np.mean(ref), rel=1e-12)
    assert mse_of_means(a, b) == pytest.approx(np.mean((an.mean(0) - bn.mean(0)) ** 2), rel=1e-10)


def test_mse_uint8_and_numpy_inputs_agree_with_float():
    a = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    b = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    r_u8 = mse_between(a, b.numpy(), n_pairs=5)
    r_f = mse_between(a.float() / 255, b.float() / 255, n_pairs=5)
    assert r_u8.mean == pytest.approx(r_f.mean, rel=1e-6)


def test_sample_pairs_within_are_distinct_and_seeded():
    i, j = sample_pairs(3, None, 500, seed=0)
    assert torch.all(i != j) and int(i.max()) == 2 and int(j.max()) == 2
    i2, j2 = sample_pairs(3, None, 500, seed=0)
    i3, _ = sample_pairs(3, None, 500, seed=1)
    assert torch.equal(i, i2) and torch.equal(j, j2) and not torch.equal(i, i3)


def test_within_set_diversity():
    same = IMGS28[:1].repeat(4, 1, 1, 1)
    assert ssim_within(same, n_pairs=6).mean == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_within(same, n_pairs=6).mean == pytest.approx(1.0, abs=1e-5)
    assert ssim_within(IMGS28, n_pairs=20).mean < 0.2  # independent noise images are dissimilar
    assert ms_ssim_within(IMGS28, n_pairs=20).mean < 0.5


@pytest.mark.parametrize(
    "size,kernel,n_scales",
    [((28, 28), 7, 3), ((32, 32), 7, 3), ((64, 64), 7, 4), ((176, 176), 11, 5), ((256, 256), 11, 5)],
)
def test_ms_ssim_params_for_size(size, kernel, n_scales):
    k, w = ms_ssim_params_for_size(size)
    assert k == kernel and len(w) == n_scales
    assert sum(w) == pytest.approx(1.0)
    np.testing.assert_allclose(np.array(w) * sum(MS_SSIM_WEIGHTS[:n_scales]), MS_SSIM_WEIGHTS[:n_scales])


def test_ms_ssim_too_small_error():
    with pytest.raises(ValueError, match="at least 28 px"):
        ms_ssim_params_for_size((16, 16))
    with pytest.raises(ValueError, match="at least 28 px"):
        ms_ssim_between(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), n_pairs=2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ssim_between(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 9, 9)), "shapes differ"),
        (lambda: ssim_between(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)), "kernel_size"),
        (lambda: mse_between(torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8)), r"\[0, 1\]"),
        (lambda: ssim_within(torch.rand(1, 1, 16, 16)), "at least 2"),
        (lambda: mse_between(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), n_pairs=0), "n_pairs"),
    ],
    ids=["shape_mismatch", "window_too_big", "range", "within_one_image", "zero_pairs"],
)
def test_similarity_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
