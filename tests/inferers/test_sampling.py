"""Tests for the shared sampling loop: determinism, CFG batching, guidance hook protocol, clipping, errors."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_scheduler, tiny_unet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_synth.inferers import (
    add_noise_to_timestep,
    classifier_free_guidance,
    clip_model_output,
    previous_timestep,
    sample,
)


def ddim(steps: int = 5, **kw) -> DDIMScheduler:
    return tiny_scheduler("ddim", 50, steps, **kw)


LABELS = torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize(
    "name,make_sched,eta",
    [
        ("ddim_eta0", lambda: ddim(5), 0.0),
        ("ddim_eta1", lambda: ddim(5), 1.0),
        ("ddpm_full", lambda: DDPMScheduler(num_train_timesteps=10), 0.0),
    ],
)
def test_seeded_determinism(name, make_sched, eta):
    model = tiny_unet()
    outs = []
    for seed in (3, 3, 4):
        g = torch.Generator().manual_seed(seed)
        rng_before = torch.get_rng_state()
        x = sample(
            model, make_sched(), shape=(4, 1, 8, 8), class_labels=LABELS, guidance_scale=2.0, generator=g, eta=eta
        )
        assert torch.equal(torch.get_rng_state(), rng_before), f"{name}: global RNG was used"
        outs.append(x)
    assert torch.equal(outs[0], outs[1]), f"{name}: same seed gave different samples"
    assert not torch.allclose(outs[0], outs[2]), f"{name}: different seeds gave the same samples"


def test_ddim_eta_changes_result():
    model = tiny_unet()
    kw = dict(shape=(4, 1, 8, 8), class_labels=LABELS, guidance_scale=2.0)
    a = sample(model, ddim(5), generator=torch.Generator().manual_seed(0), eta=0.0, **kw)
    b = sample(model, ddim(5), generator=torch.Generator().manual_seed(0), eta=1.0, **kw)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_cfg_batching_matches_two_forwards(w, prediction_type):
    """Independent reference: a hand-written DDIM loop with separate conditional and unconditional passes."""
    model = tiny_unet().eval()
    sched = ddim(5, prediction_type=prediction_type, clip_sample=False)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = sample(model, sched, noise=noise, class_labels=LABELS, guidance_scale=w)

    x = noise.clone()
    null = torch.full_like(LABELS, 2)
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.full((4,), int(t), dtype=torch.long)
            e_c = model(x, timesteps=tt, class_labels=LABELS)
            e_u = model(x, timesteps=tt, class_labels=null)
            x, _ = sched.step(e_u + w * (e_c - e_u), int(t), x)
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-5)


def test_guidance_scale_one_is_conditional_only():
    model = tiny_unet().eval()
    sched = ddim(5)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    calls = []
    orig_forward = model.forward

    def spy(x, timesteps, class_labels=None, **kw):
        calls.append(x.shape[0])
        return orig_forward(x, timesteps=timesteps, class_labels=class_labels, **kw)

    model.forward = spy
    sample(model, sched, noise=noise, class_labels=LABELS, guidance_scale=1.0)
    assert calls == [4] * 5
    calls.clear()
    sample(model, sched, noise=noise, class_labels=LABELS, guidance_scale=2.0)
    assert calls == [8] * 5  # one batched forward per step


def test_classifier_free_guidance_closed_form():
    c, u = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(classifier_free_guidance(c, u, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(c, u, 1.0), c)
    torch.testing.assert_close(classifier_free_guidance(c, u, 3.0), torch.tensor([4.0, -5.0]))


class Recorder:
    def __init__(self, replace: torch.Tensor | None = None):
        self.calls: list[tuple[int, int]] = []
        self.replace = replace

    def __call__(self, x_prev, t, prev_t, scheduler, generator):
        self.calls.append((t, prev_t))
        return x_prev if self.replace is None else self.replace.expand_as(x_prev).clone()


@pytest.mark.parametrize(
    "name,make_sched,expected",
    [
        ("ddim_5_of_50", lambda: ddim(5), [(49, 39), (37, 27), (24, 14), (12, 2), (0, -1)]),
        ("ddpm_5", lambda: DDPMScheduler(num_train_timesteps=5), [(4, 3), (3, 2), (2, 1), (1, 0), (0, -1)]),
    ],
)
def test_guidance_hook_timesteps(name, make_sched, expected):
    rec = Recorder()
    sample(tiny_unet(None), make_sched(), shape=(2, 1, 8, 8), generator=torch.Generator().manual_seed(0), guidance=rec)
    assert rec.calls == expected, name


def test_guidance_output_is_used():
    out = sample(tiny_unet(None), ddim(3), shape=(2, 1, 8, 8), guidance=Recorder(replace=torch.tensor(0.25)))
    assert torch.equal(out, torch.full((2, 1, 8, 8), 0.25))


def test_previous_timestep_matches_ddim_step():
    """prev_t is the timestep whose alpha_bar the DDIM step uses: check through the deterministic closed form."""
    sched = ddim(5, clip_sample=False)
    x, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    t = int(sched.timesteps[1])
    prev = previous_timestep(sched, t)
    x_prev, x0 = sched.step(eps, t, x)
    a_prev = sched.alphas_cumprod[prev]
    torch.testing.assert_close(x_prev, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps)


def test_add_noise_to_timestep():
    sched = DDPMScheduler(num_train_timesteps=20)
    y = torch.rand(3, 1, 4, 4)
    assert add_noise_to_timestep(sched, y, -1, torch.Generator().manual_seed(0)) is y
    got = add_noise_to_timestep(sched, y, 7, torch.Generator().manual_seed(5))
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
    a = sched.alphas_cumprod[7]
    torch.testing.assert_close(got, a.sqrt() * y + (1 - a).sqrt() * noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_clip_model_output(prediction_type):
    sched = DDIMScheduler(num_train_timesteps=50, prediction_type=prediction_type)
    t = 30
    a = sched.alphas_cumprod[t]
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x0 = 3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # partly outside [-1, 1]
    eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    out = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[prediction_type]
    new = clip_model_output(sched, out, x_t, t)
    sched.clip_sample = False
    _, x0_new = sched.step(new, t, x_t)
    torch.testing.assert_close(x0_new, x0.clamp(-1, 1), rtol=1e-4, atol=1e-4)
    inside = x0.abs() <= 1
    torch.testing.assert_close(new[inside], out[inside], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("no_shape", dict(), "shape"),
        ("labels_count", dict(shape=(2, 1, 8, 8), class_labels=torch.tensor([0, 1, 0])), "class_labels"),
        ("ddpm_eta", dict(shape=(2, 1, 8, 8), scheduler=DDPMScheduler(num_train_timesteps=5), eta=0.5), "eta"),
        (
            "ddpm_skip",
            dict(shape=(2, 1, 8, 8), scheduler=DDPMScheduler(num_train_timesteps=50), num_inference_steps=5),
            "DDIMScheduler",
        ),
    ],
)
def test_errors(name, kwargs, match):
    kwargs.setdefault("scheduler", ddim(3))
    with pytest.raises(ValueError, match=match):
        sample(tiny_unet(), **kwargs)


def test_null_class_required_for_unconditional_network():
    model = tiny_unet(None)
    with pytest.raises(ValueError, match="null_class"):
        sample(model, ddim(2), shape=(2, 1, 8, 8), class_labels=torch.tensor([0, 1]), guidance_scale=2.0)


def test_restores_training_mode():
    model = tiny_unet().train()
    sample(model, ddim(2), shape=(1, 1, 8, 8), class_labels=torch.tensor([0]))
    assert model.training
