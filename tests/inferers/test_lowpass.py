"""Tests for the ILVR low-pass filter phi_N (seed 001, Eq. 3)."""

from __future__ import annotations

import pytest
import torch

from monai_synth.inferers.lowpass import LowPassFilter, lowpass_filter


@pytest.mark.parametrize(
    "shape,factor",
    [
        pytest.param((2, 1, 16, 16), 2, id="2d_n2"),
        pytest.param((1, 3, 16, 32), 4, id="2d_n4_rect"),
        pytest.param((1, 1, 16, 16), 16, id="2d_n16_to_1px"),
        pytest.param((1, 1, 12, 18), 3, id="2d_n3"),
        pytest.param((2, 1, 32), 4, id="1d_n4"),
        pytest.param((1, 1, 8, 8, 8), 2, id="3d_n2"),
    ],
)
def test_constant_image_is_kept(shape, factor):
    for value in (-1.0, 0.0, 3.7):
        x = torch.full(shape, value)
        torch.testing.assert_close(lowpass_filter(x, factor), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_linearity(factor):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    a, b = 0.7, -2.3
    torch.testing.assert_close(
        lowpass_filter(a * x + b * y, factor), a * lowpass_filter(x, factor) + b * lowpass_filter(y, factor),
        atol=1e-5, rtol=1e-5,
    )


def test_factor_one_is_identity():
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lowpass_filter(x, 1), x)


def test_removes_high_frequencies_keeps_low():
    # a checkerboard (Nyquist frequency) is removed almost completely; a slow ramp is kept
    i = torch.arange(16.0)
    checker = ((i[:, None] + i[None, :]) % 2 * 2 - 1)[None, None]
    assert lowpass_filter(checker, 4).abs().max() < 0.05
    ramp = torch.cos(2 * torch.pi * i / 16)[None, None, :, None].expand(1, 1, 16, 16)
    assert torch.corrcoef(torch.stack([lowpass_filter(ramp, 2).flatten(), ramp.flatten()]))[0, 1] > 0.99


def test_antialiased_not_plain_subsampling():
    # plain subsampling of a checkerboard keeps one colour (aliasing); phi_N must not
    i = torch.arange(16.0)
    checker = ((i[:, None] + i[None, :]) % 2)[None, None]  # mean 0.5
    out = lowpass_filter(checker, 2)
    torch.testing.assert_close(out.mean(), torch.tensor(0.5), atol=1e-3, rtol=0)
    assert out.std() < 0.05


def test_dtype_and_class_form():
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    out = LowPassFilter(2)(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert "factor=2" in repr(LowPassFilter(2))


@pytest.mark.parametrize(
    "x,factor,match",
    [
        (torch.zeros(1, 1, 16, 16), 0, "positive integer"),
        (torch.zeros(1, 1, 16, 16), -2, "positive integer"),
        (torch.zeros(1, 1, 16, 16), 2.0, "positive integer"),
        (torch.zeros(1, 1, 16, 16), True, "positive integer"),
        (torch.zeros(1, 1, 16, 16), 3, "divide"),
        (torch.zeros(1, 1, 16, 16), 32, "divide"),
        (torch.zeros(16, 16), 2, "spatial"),
        (torch.zeros(1, 1, 4, 4, 4, 4), 2, "spatial"),
    ],
    ids=["zero", "negative", "float", "bool", "not_divisor", "too_large", "no_batch", "4d_spatial"],
)
def test_invalid_inputs(x, factor, match):
    with pytest.raises(ValueError, match=match):
        lowpass_filter(x, factor)


def test_class_rejects_bad_factor():
    with pytest.raises(ValueError, match="positive integer"):
        LowPassFilter(0)
