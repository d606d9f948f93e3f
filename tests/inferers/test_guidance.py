"""Tests for multi-condition low-pass guidance (ILVR; seed 001, Eqs. 3-5) through the shared sampling loop."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_scheduler, tiny_unet

from monai_synth.inferers.guidance import (
    Condition,
    MultiConditionGuidance,
    anatomy_pathology_guidance,
    ilvr_guidance,
)
from monai_synth.inferers.lowpass import lowpass_filter
from monai_synth.inferers.sampling import sample
from monai_synth.transforms import patch_weight_map

T_TRAIN = 50


def _scheduler(kind: str):
    return tiny_scheduler(kind, T_TRAIN, T_TRAIN if kind == "ddpm" else 10)


def _smooth_images(n: int, size: int, seed: int, factor: int = 2) -> torch.Tensor:
    """Random images with structure at ``factor``-pixel scale, in about [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = lowpass_filter(torch.randn(n, 1, size, size, generator=g), factor)
    return (y / y.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-sample Pearson correlation."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)).mean())


def _run(model, kind, guidance, seed=0, shape=(4, 1, 16, 16), **kw):
    return sample(model, _scheduler(kind), shape=shape, generator=torch.Generator().manual_seed(seed),
                  guidance=guidance, **kw)


# ----------------------------------------------------------------------------------------------- one step


def test_final_step_closed_form():
    # at prev_t = -1 the reference is clean: x_0 <- x_0 + W * (phi_N(y) - phi_N(x_0))   (Eq. 5, hand formula)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    w = torch.rand(1, 1, 8, 8, generator=g)
    out = MultiConditionGuidance([Condition(y, factor=2, weight=w)])(x, 0, -1, _scheduler("ddpm"), None)
    torch.testing.assert_close(out, x + w * (lowpass_filter(y, 2) - lowpass_filter(x, 2)))


def test_sum_over_conditions_uses_same_x():
    # Eq. 4: both corrections are computed from the same x_{t-1}, then summed
    g = torch.Generator().manual_seed(4)
    x, y1, y2 = (torch.randn(1, 1, 8, 8, generator=g) for _ in range(3))
    guid = MultiConditionGuidance([Condition(y1, factor=2), Condition(y2, factor=4)])
    out = guid(x, 0, -1, _scheduler("ddpm"), None)
    expected = x + (lowpass_filter(y1, 2) - lowpass_filter(x, 2)) + (lowpass_filter(y2, 4) - lowpass_filter(x, 4))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "t,last_step,active", [pytest.param(10, 10, True, id="t_eq_a"), pytest.param(9, 10, False, id="t_below_a")]
)
def test_last_step_range(t, last_step, active):
    x, y = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    out = ilvr_guidance(y, factor=2, last_step=last_step)(x, t, -1, _scheduler("ddpm"), None)
    torch.testing.assert_close(out, torch.ones_like(x) if active else x)


def test_reference_noised_to_prev_t():
    # constant reference c noised to step s, then low-passed, has mean ~ sqrt(abar_s) c (forward process mean)
    sched = _scheduler("ddpm")
    s = 30
    x, y = torch.zeros(64, 1, 16, 16), torch.full((1, 1, 16, 16), 0.8)
    out = ilvr_guidance(y, factor=16)(x, s + 1, s, sched, torch.Generator().manual_seed(0))
    abar = float(sched.alphas_cumprod[s])
    torch.testing.assert_close(out.mean(), torch.tensor(abar**0.5 * 0.8), atol=0.02, rtol=0)
    # noise std after phi_16 (one pixel average of 256): sqrt(1 - abar) / 16
    assert out.mean(dim=(1, 2, 3)).std() == pytest.approx((1 - abar) ** 0.5 / 16, rel=0.3)


# ------------------------------------------------------------------------------------------- full sampling


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_zero_weight_equals_unguided(kind):
    model = tiny_unet(num_classes=None)
    y = _smooth_images(4, 16, seed=1)
    zero = MultiConditionGuidance([Condition(y, factor=4, weight=torch.zeros(1, 1, 16, 16))])
    torch.testing.assert_close(_run(model, kind, zero), _run(model, kind, None), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_ilvr_matches_reference_low_frequencies(kind):
    model = tiny_unet(num_classes=None)
    y = _smooth_images(4, 16, seed=2, factor=4)
    guided = _run(model, kind, ilvr_guidance(y, factor=4))
    unguided = _run(model, kind, None)
    c_guided = _corr(lowpass_filter(guided, 4), lowpass_filter(y, 4))
    c_unguided = _corr(lowpass_filter(unguided, 4), lowpass_filter(y, 4))
    assert c_guided > 0.9
    assert c_guided > c_unguided + 0.4


def test_seeded_and_batched():
    model = tiny_unet(num_classes=None)
    y = _smooth_images(4, 16, seed=5)
    guid = ilvr_guidance(y, factor=2)
    a, b, c = _run(model, "ddpm", guid, seed=1), _run(model, "ddpm", guid, seed=1), _run(model, "ddpm", guid, seed=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    # batch of 4 different references: every sample follows its own reference, not the others
    lp = lowpass_filter(a, 4), lowpass_filter(y, 4)
    own = [_corr(lp[0][i : i + 1], lp[1][i : i + 1]) for i in range(4)]
    other = [_corr(lp[0][i : i + 1], lp[1][(i + 1) % 4 : (i + 1) % 4 + 1]) for i in range(4)]
    assert min(own) > 0.8 and max(other) < min(own) - 0.3


def test_pathology_region_follows_pathology_reference():
    model = tiny_unet(num_classes=None)
    size = 32
    anatomy = _smooth_images(4, size, seed=10)
    pathology = _smooth_images(4, size, seed=11)
    w = patch_weight_map((size, size), (16, 16), center=(16, 16))[None, None]
    guid = anatomy_pathology_guidance(anatomy, pathology, w, anatomy_factor=2, pathology_factor=2)
    x0 = _run(model, "ddim", guid, shape=(4, 1, size, size))
    lp_x, lp_a, lp_p = (lowpass_filter(v, 2) for v in (x0, anatomy, pathology))
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))  # W >= 0.8 here
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[8:24, 8:24] = False  # W == 0 outside the 16x16 box
    assert _corr(lp_x[centre], lp_p[centre]) > 0.85
    assert _corr(lp_x[centre], lp_p[centre]) > _corr(lp_x[centre], lp_a[centre]) + 0.4
    assert _corr(lp_x[..., outside], lp_a[..., outside]) > 0.95
    assert abs(_corr(lp_x[..., outside], lp_p[..., outside])) < 0.2
    # fixed point of Eq. 4 with weights (1 - W, W): low frequencies = (1 - W) phi(y_1) + W phi(y_2)
    assert _corr(lp_x, (1 - w) * lp_a + w * lp_p) > 0.95


def test_class_conditional_model_with_guidance():
    model = tiny_unet(num_classes=2)  # 2 classes + null class for CFG
    y = _smooth_images(4, 16, seed=6, factor=4)
    labels = torch.tensor([0, 1, 0, 1])
    out = _run(model, "ddim", ilvr_guidance(y, factor=4), class_labels=labels, guidance_scale=2.0)
    assert out.shape == (4, 1, 16, 16) and torch.isfinite(out).all()
    assert _corr(lowpass_filter(out, 4), lowpass_filter(y, 4)) > 0.9


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param({"reference": torch.zeros(8, 8)}, "batch, channels", id="ref_2d"),
        pytest.param({"reference": torch.zeros(1, 1, 8, 8), "factor": 0}, "factor", id="factor_0"),
        pytest.param({"reference": torch.zeros(1, 1, 8, 8), "last_step": -1}, "last_step", id="a_negative"),
        pytest.param({"reference": torch.zeros(1, 1, 8, 8), "weight": torch.zeros(8, 8)}, "weight", id="w_dims"),
        pytest.param({"reference": torch.zeros(1, 1, 8, 8), "weight": torch.zeros(1, 1, 4, 4)}, "broadcast",
                     id="w_shape"),
    ],
)
def test_condition_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Condition(**kwargs)


def test_strategy_errors():
    with pytest.raises(ValueError, match="at least one"):
        MultiConditionGuidance([])
    with pytest.raises(ValueError, match="must be a Condition"):
        MultiConditionGuidance([torch.zeros(1, 1, 8, 8)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        anatomy_pathology_guidance(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 2.0))
    guid = ilvr_guidance(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="sample shape"):
        guid(torch.zeros(2, 1, 8, 8), 0, -1, _scheduler("ddpm"), None)
    with pytest.raises(ValueError, match="divide"):
        ilvr_guidance(torch.zeros(1, 1, 6, 6), factor=4)(torch.zeros(1, 1, 6, 6), 0, -1, _scheduler("ddpm"), None)

