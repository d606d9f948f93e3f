"""Tests for diffusion training pieces: losses, targets, prepare-batch, builders, and a toy CFG overfit."""

from __future__ import annotations

import inspect

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_synth.engines import (
    ClassConditionedPrepareBatch,
    DiffusionRecipe,
    build_diffusion_trainer,
    build_diffusion_unet,
    build_scheduler,
    ddim_from,
    diffusion_target,
    generate_dataset,
    get_loss_function,
)
from monai_synth.inferers import sample
from monai_synth.networks.schedulers import BoundedDDIMScheduler

PRED = torch.tensor([0.0, 0.5, 3.0, -2.0])
TARGET = torch.tensor([0.2, 0.5, 0.0, 0.0])
# diffs: -0.2, 0, 3, -2
L1 = (0.2 + 0 + 3 + 2) / 4
L2 = (0.04 + 0 + 9 + 4) / 4
HUBER_1 = (0.5 * 0.04 + 0 + (3 - 0.5) + (2 - 0.5)) / 4
HUBER_05 = (0.5 * 0.04 + 0 + 0.5 * (3 - 0.25) + 0.5 * (2 - 0.25)) / 4


@pytest.mark.parametrize(
    "name,delta,expected",
    [("l1", 1.0, L1), ("L2", 1.0, L2), ("huber", 1.0, HUBER_1), ("Huber", 0.5, HUBER_05)],
)
def test_loss_values(name, delta, expected):
    assert get_loss_function(name, huber_delta=delta)(PRED, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_loss_unknown():
    with pytest.raises(ValueError, match=r"`loss` must be one of \['huber', 'l1', 'l2'\]"):
        get_loss_function("l3")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_diffusion_target(prediction_type):
    sched = DDPMScheduler(num_train_timesteps=10, prediction_type=prediction_type)
    x0, eps, t = torch.rand(3, 1, 2, 2), torch.randn(3, 1, 2, 2), torch.tensor([0, 4, 9])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[prediction_type]
    torch.testing.assert_close(diffusion_target(sched, x0, eps, t), expected)


def test_prepare_batch():
    sched = DDPMScheduler(num_train_timesteps=10)
    batch = {"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 1, 0])}
    pb = ClassConditionedPrepareBatch(sched, generator=torch.Generator().manual_seed(0))
    images, target, args, kwargs = pb(batch, device="cpu")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 1, 4, 4, generator=g)
    t = torch.randint(0, 10, (4,), generator=g)
    assert torch.equal(images, batch["image"]) and args == ()
    assert torch.equal(kwargs["noise"], noise) and torch.equal(target, noise)
    assert torch.equal(kwargs["timesteps"], t)
    assert torch.equal(kwargs["class_labels"], batch["label"])
    _, _, _, kwargs = ClassConditionedPrepareBatch(sched, label_key=None)(batch)
    assert "class_labels" not in kwargs


@pytest.mark.parametrize("key,match", [("image", "'image'"), ("label", "'label'")])
def test_prepare_batch_missing_key(key, match):
    batch = {"image": torch.rand(2, 1, 4, 4), "label": torch.tensor([0, 1])}
    del batch[key]
    with pytest.raises(ValueError, match=match):
        ClassConditionedPrepareBatch(DDPMScheduler(num_train_timesteps=10))(batch)


@pytest.mark.parametrize(
    "kind,schedule,prediction_type,cls",
    [
        ("ddpm", "linear_beta", "epsilon", DDPMScheduler),
        ("DDIM", "scaled_linear_beta", "v_prediction", BoundedDDIMScheduler),
        ("ddim", "cosine", "epsilon", BoundedDDIMScheduler),
    ],
)
def test_build_scheduler(kind, schedule, prediction_type, cls):
    s = build_scheduler(
        kind, num_train_timesteps=100, schedule=schedule, prediction_type=prediction_type, num_inference_steps=10
    )
    assert type(s) is cls and s.prediction_type == prediction_type and len(s.timesteps) == 10


def test_build_scheduler_unknown():
    with pytest.raises(ValueError, match="scheduler"):
        build_scheduler("pndm")


@pytest.mark.parametrize(
    "schedule, prediction_type, clip", [("cosine", "v_prediction", False), ("linear_beta", "epsilon", True)]
)
def test_ddim_from_copies_the_training_schedule(schedule, prediction_type, clip):
    src = build_scheduler("ddpm", num_train_timesteps=40, schedule=schedule, prediction_type=prediction_type,
                          clip_sample=clip)  # fmt: skip
    ddim = ddim_from(src)
    assert isinstance(ddim, DDIMScheduler) and ddim.num_train_timesteps == 40
    assert ddim.prediction_type == prediction_type and ddim.clip_sample is clip
    for name in ("betas", "alphas", "alphas_cumprod"):
        torch.testing.assert_close(getattr(ddim, name), getattr(src, name), rtol=0, atol=0, msg=name)
    assert ddim_from(src, clip_sample=not clip).clip_sample is (not clip)
    # a deterministic DDIM step (Song et al. 2021, Eq. 12, eta = 0) uses the source's cumulative alphas
    ddim = ddim_from(src, clip_sample=False)
    ddim.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    t = int(ddim.timesteps[0])
    ab_t, ab_prev = src.alphas_cumprod[t], src.alphas_cumprod[t - 4]
    if prediction_type == "epsilon":
        x0, eps = (x - (1 - ab_t).sqrt() * out) / ab_t.sqrt(), out
    else:  # v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022)
        x0 = ab_t.sqrt() * x - (1 - ab_t).sqrt() * out
        eps = ab_t.sqrt() * out + (1 - ab_t).sqrt() * x
    expected = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    torch.testing.assert_close(ddim.step(out, t, x, eta=0.0)[0], expected, atol=1e-5, rtol=1e-5)


def test_trainer_and_generation_defaults_come_from_the_recipe():
    trainer = inspect.signature(build_diffusion_trainer).parameters
    for arg, field in [("lr", "lr"), ("ema_decay", "ema_decay"), ("grad_clip_norm", "grad_clip_norm"),
                       ("cond_drop_prob", "cond_drop_prob")]:  # fmt: skip
        assert trainer[arg].default == getattr(DiffusionRecipe, field), arg
    assert trainer["loss"].default is None and trainer["sample_steps"].default is None  # resolved like the recipe
    gen = inspect.signature(generate_dataset).parameters
    for arg, field in [("guidance_scale", "guidance_scale"), ("eta", "sample_eta")]:
        assert gen[arg].default == getattr(DiffusionRecipe, field), arg
    assert gen["num_inference_steps"].default is None  # the sampler's own set_timesteps (the recipe sets it)
    recipe = DiffusionRecipe
    assert (recipe.lr, recipe.ema_decay, recipe.grad_clip_norm) == (1e-3, 0.999, 1.0)
    assert (recipe.guidance_scale, recipe.sample_eta) == (1.0, 1.0)


@pytest.mark.parametrize(
    "scheduler,expected",
    [("ddpm", torch.nn.L1Loss), ("rflow", torch.nn.MSELoss)],
)
def test_trainer_default_loss_follows_the_objective(scheduler, expected):
    net = build_diffusion_unet(num_classes=None, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8,
                              num_head_channels=8)  # fmt: skip
    sched = build_scheduler(scheduler, num_train_timesteps=10)
    trainer = build_diffusion_trainer(net, sched, [], max_epochs=1, ema_decay=None)
    assert type(trainer.loss_function) is expected


def test_default_unet_28x28():
    net = build_diffusion_unet(num_classes=2)
    assert net.num_class_embeds == 3
    y = net(torch.randn(2, 1, 28, 28), timesteps=torch.tensor([0, 999]), class_labels=torch.tensor([0, 2]))
    assert y.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="norm_num_groups"):
        build_diffusion_unet(channels=(24, 48))


def test_default_unet_uses_fused_attention_with_unchanged_outputs():
    torch.manual_seed(0)
    fused = build_diffusion_unet(num_classes=2)
    explicit = build_diffusion_unet(num_classes=2, use_flash_attention=False)
    explicit.load_state_dict(fused.state_dict())  # same parameters: checkpoints load either way
    blocks = [m for m in fused.modules() if hasattr(m, "use_flash_attention")]
    assert blocks and all(m.use_flash_attention for m in blocks)
    assert not any(m.use_flash_attention for m in explicit.modules() if hasattr(m, "use_flash_attention"))
    for m in (fused, explicit):  # make the attention blocks matter: the zero-initialised output convs are not
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.sin(torch.arange(p.numel(), dtype=p.dtype)).reshape(p.shape))
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 500, 999]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        a, b = fused(x, timesteps=t, class_labels=y), explicit(x, timesteps=t, class_labels=y)
    assert a.abs().mean() > 1e-3
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


S = 8


def toy_set(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """class 0: bright square top-left on a dark background; class 1: bright square bottom-right."""
    labels = torch.arange(n) % 2
    images = torch.full((n, 1, S, S), -1.0)
    images[labels == 0, :, : S // 2, : S // 2] = 1.0
    images[labels == 1, :, S // 2 :, S // 2 :] = 1.0
    return images, labels


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    x, y = toy_set(64)
    loader = torch.utils.data.DataLoader([{"image": x[i], "label": y[i]} for i in range(64)], batch_size=64)
    net = build_diffusion_unet(
        num_classes=2, channels=(16, 16), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    sched = build_scheduler("ddpm", num_train_timesteps=50, schedule="linear_beta", beta_start=1e-3, beta_end=0.2)
    trainer = build_diffusion_trainer(
        net, sched, loader, max_epochs=220, num_classes=2, loss="l2", lr=3e-3, ema_decay=None, cond_drop_prob=0.2
    )
    trainer.run()
    return net, x, y


@pytest.mark.parametrize(
    "kind,steps,w",
    [("ddpm", 50, 1.0), ("ddpm", 50, 3.0), ("ddim", 10, 3.0)],
)
def test_toy_overfit_guided_samples_match_class(toy_model, kind, steps, w):
    net, x, y = toy_model
    sched = build_scheduler(
        kind, num_train_timesteps=50, schedule="linear_beta", beta_start=1e-3, beta_end=0.2, num_inference_steps=steps
    )
    labels = torch.tensor([0] * 6 + [1] * 6)
    out = sample(
        net,
        sched,
        shape=(12, 1, S, S),
        class_labels=labels,
        guidance_scale=w,
        generator=torch.Generator().manual_seed(1),
    )
    d = torch.stack([((out - x[y == c].mean(0)) ** 2).flatten(1).mean(1) for c in (0, 1)], 1)
    assert torch.equal(d.argmin(1), labels), d
    assert d.min(1).values.max() < 0.3  # close to the class template, not just nearer


def test_unconditional_training_and_sampling():
    torch.manual_seed(0)
    x, _ = toy_set(8)
    loader = torch.utils.data.DataLoader([{"image": x[i]} for i in range(8)], batch_size=4)
    net = build_diffusion_unet(
        num_classes=None, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    sched = build_scheduler("ddpm", num_train_timesteps=20)
    trainer = build_diffusion_trainer(net, sched, loader, max_epochs=1, num_classes=None, loss="huber", ema_decay=0.9)
    trainer.run()
    assert trainer.state.iteration == 2 and trainer.state.metrics["img_per_s"] > 0
    out = sample(
        trainer.ema_model,
        build_scheduler("ddim", num_train_timesteps=20, num_inference_steps=3),
        shape=(2, 1, S, S),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2, 1, S, S) and torch.isfinite(out).all()
