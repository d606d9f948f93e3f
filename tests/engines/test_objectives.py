"""Training objectives of the recipe: epsilon, v-prediction, min-SNR-gamma weighting, rectified flow."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_items
from monai.networks.schedulers import RFlowScheduler

from monai_synth.apps.augmentation import DiffusionRecipe, synthesize, train_generator
from monai_synth.engines.diffusion import (
    ClassConditionedPrepareBatch,
    MinSNRWeightedLoss,
    build_diffusion_trainer,
    diffusion_target,
)
from monai_synth.inferers.sampling import previous_timestep
from monai_synth.networks.schedulers import build_scheduler, sampler_from

TINY = {"image_size": 8, "channels": (8, 8), "attention_levels": (False, False), "num_head_channels": 8,
        "norm_num_groups": 8, "epochs": 1, "batch_size": 4, "num_train_timesteps": 20, "sample_steps": 3}  # fmt: skip


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_hang_et_al(prediction):
    sched = build_scheduler("ddpm", num_train_timesteps=100, schedule="cosine", prediction_type=prediction)
    prepare = ClassConditionedPrepareBatch(sched, label_key=None)
    loss = MinSNRWeightedLoss("l2", prepare, gamma=5.0)
    t = torch.tensor([0, 10, 50, 99])
    abar = sched.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1 if prediction == "v_prediction" else snr)
    torch.testing.assert_close(loss.weights(t).double(), expected, rtol=1e-5, atol=1e-7)
    # the loss is the weighted mean of the per-sample mean squared errors
    pred, target = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    prepare.last_timesteps = t
    per_sample = ((pred - target) ** 2).flatten(1).mean(1)
    assert float(loss(pred, target)) == pytest.approx(float((expected.float() * per_sample).mean()), rel=1e-5)


def test_min_snr_errors():
    sched = build_scheduler("ddpm", num_train_timesteps=10)
    with pytest.raises(ValueError, match="snr_gamma"):
        MinSNRWeightedLoss("l1", ClassConditionedPrepareBatch(sched), gamma=0)
    with pytest.raises(ValueError, match="variance-preserving"):
        MinSNRWeightedLoss("l1", ClassConditionedPrepareBatch(build_scheduler("rflow", num_train_timesteps=10)))


def test_rectified_flow_target_timesteps_and_sampler():
    sched = build_scheduler("rflow", num_train_timesteps=100)
    assert isinstance(sched, RFlowScheduler)
    images, noise = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(diffusion_target(sched, images, noise, torch.tensor([1, 2, 3])), images - noise)
    prepare = ClassConditionedPrepareBatch(sched, generator=torch.Generator().manual_seed(0))
    t = prepare.get_timesteps(torch.zeros(1000, 1, 1, 1))
    assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < 100 and 40 < float(t.float().mean()) < 60
    sampler = sampler_from(sched, "rflow")
    sampler.set_timesteps(4)
    ts = [int(s) for s in sampler.timesteps]
    assert [previous_timestep(sampler, s) for s in ts] == ts[1:] + [-1]
    # an exact velocity field moves noise to data along straight lines: Euler is exact
    x0, eps = torch.rand(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x = eps.clone()  # x at t = T
    for s in ts:
        nxt = previous_timestep(sampler, s)
        x, _ = sampler.step(x0 - eps, s, x, next_timestep=max(nxt, 0))
    torch.testing.assert_close(x, x0, rtol=1e-5, atol=1e-5)


def _logit_normal_cdf(u: torch.Tensor, loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """P(sigmoid(n) <= u) for n ~ N(loc, scale): Phi((logit(u) - loc) / scale), written out."""
    z = (torch.log(u / (1 - u)) - loc) / scale
    return 0.5 * (1 + torch.erf(z / 2**0.5))


def test_logit_normal_flow_timesteps_follow_esser_et_al():
    """``flow_timesteps="logit_normal"``: t / T = sigmoid(n), n ~ N(0, 1) (SD3, Eq. 19). The prepared timesteps match
    the closed-form CDF and MONAI's own ``RFlowScheduler.sample_timesteps``; ``uniform`` stays uniform."""
    T, n = 1000, 40000
    sched = DiffusionRecipe(prediction_type="flow", sampler="rflow", flow_timesteps="logit_normal").build_scheduler()
    assert sched.sample_method == "logit-normal"
    prepare = ClassConditionedPrepareBatch(sched, generator=torch.Generator().manual_seed(0))
    raw = prepare.get_timesteps(torch.zeros(n, 1, 1, 1))
    assert raw.dtype == torch.long and 0 <= int(raw.min()) and int(raw.max()) <= T - 1
    t = raw.double()
    grid = torch.tensor([100.0, 250.0, 400.0, 500.0, 650.0, 900.0], dtype=torch.float64)
    empirical = torch.stack([(t < g).double().mean() for g in grid])  # t = floor(T u) < g  <=>  u < g / T
    torch.testing.assert_close(empirical, _logit_normal_cdf(grid / T), atol=0.01, rtol=0)
    torch.manual_seed(0)
    monai_t = sched.sample_timesteps(torch.zeros(n, 1, 1, 1)).double()
    assert abs(float(monai_t.mean() - t.mean())) < 5 and abs(float(monai_t.std() - t.std())) < 5
    # the middle is sampled far more often than with the uniform default
    uniform = DiffusionRecipe(prediction_type="flow", sampler="rflow").build_scheduler()
    u = ClassConditionedPrepareBatch(uniform, generator=torch.Generator().manual_seed(0)).get_timesteps(
        torch.zeros(n, 1, 1, 1)
    )
    middle = lambda x: float(((x >= 250) & (x < 750)).double().mean())  # noqa: E731
    assert middle(u.double()) == pytest.approx(0.5, abs=0.01) and middle(t) == pytest.approx(0.7281, abs=0.01)


def test_flow_timesteps_refused_for_other_objectives_and_unknown_names():
    with pytest.raises(ValueError, match="needs prediction_type='flow'"):
        DiffusionRecipe(prediction_type="epsilon", flow_timesteps="logit_normal")
    with pytest.raises(ValueError, match="'uniform' or 'logit_normal'"):
        DiffusionRecipe(prediction_type="flow", sampler="rflow", flow_timesteps="lognorm")


def test_recipe_validates_objectives():
    with pytest.raises(ValueError, match="rflow"):
        DiffusionRecipe(prediction_type="flow", sampler="ddim")
    with pytest.raises(ValueError, match="rflow"):
        DiffusionRecipe(prediction_type="epsilon", sampler="rflow")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionRecipe(prediction_type="sample")
    with pytest.raises(ValueError, match="snr_gamma"):
        DiffusionRecipe(prediction_type="epsilon", snr_gamma=-1)
    with pytest.raises(ValueError, match="snr_gamma"):
        DiffusionRecipe(prediction_type="flow", sampler="rflow", snr_gamma=5)
    with pytest.raises(ValueError, match="guidance_interval"):
        DiffusionRecipe(guidance_interval=(3.0, 1.0))
    r = DiffusionRecipe(prediction_type="epsilon", sampler="dpmpp_2m", sample_steps=7)
    assert r.sampler_eta == 0.0 and DiffusionRecipe(prediction_type="epsilon").sampler_eta == DiffusionRecipe.sample_eta
    s = r.sampling_scheduler()
    assert type(s).__name__ == "DPMSolverMultistepScheduler" and len(s.timesteps) == 7
    with pytest.raises(ValueError, match="multistep solver"):
        DiffusionRecipe(prediction_type="flow", sampler="ddpm")
    s = DiffusionRecipe(prediction_type="flow", sampler="dpmpp_2m", sample_steps=5).sampling_scheduler()
    assert s.prediction_type == "flow" and len(s.timesteps) == 5  # the solver on the flow path


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, ("pixel", "flow", "l2", "sde_dpmpp_2m", 15, 0.5, (32, 32, 64), 32, 0.5)),
        ({"image_size": 128}, ("latent", "epsilon", "l1", "ddim", 50, 1.0, (32, 64, 64), 64, 0.0)),
        ({"generator_kind": "latent"}, ("latent", "epsilon", "l1", "ddim", 50, 1.0, (32, 64, 64), 64, 0.0)),
        ({"image_size": 128, "generator_kind": "pixel"},
         ("pixel", "flow", "l2", "sde_dpmpp_2m", 15, 0.5, (32, 32, 64), 32, 0.5)),
        ({"prediction_type": "epsilon"}, ("pixel", "epsilon", "l1", "ddim", 50, 1.0, (32, 32, 64), 32, 0.5)),
        ({"prediction_type": "v_prediction", "sampler": "unipc_2"},
         ("pixel", "v_prediction", "l1", "unipc_2", 15, 1.0, (32, 32, 64), 32, 0.5)),
        ({"sampler": "rflow"}, ("pixel", "flow", "l2", "rflow", 50, 1.0, (32, 32, 64), 32, 0.5)),
        ({"sampler": "dpmpp_3m", "timestep_shift": 1.0, "loss": "huber", "batch_size": 8, "channels": [16, 16]},
         ("pixel", "flow", "huber", "dpmpp_3m", 15, 1.0, (16, 16), 8, 0.5)),
        ({"image_size": 128, "prediction_type": "flow"},
         ("latent", "flow", "l2", "sde_dpmpp_2m", 15, 0.5, (32, 64, 64), 64, 0.0)),
    ],
)  # fmt: skip
def test_recipe_defaults_follow_kind_objective_and_sampler(options, expected):
    r = DiffusionRecipe(**options)
    got = (r.generator_kind, r.prediction_type, r.loss, r.sampler, r.sample_steps, r.timestep_shift, r.channels,
           r.batch_size, r.lr_anneal_fraction)  # fmt: skip
    assert got == expected
    again = DiffusionRecipe(**dataclasses.asdict(r))  # a saved, resolved recipe rebuilds unchanged
    assert again == r


def test_recipe_default_with_a_misfitting_explicit_field_names_the_fix():
    with pytest.raises(ValueError, match="timestep_shift=1"):  # an explicit shift on a sampler without a grid to shift
        DiffusionRecipe(prediction_type="epsilon", timestep_shift=0.5)
    with pytest.raises(ValueError, match="generator_kind must be 'pixel' or 'latent'"):
        DiffusionRecipe(generator_kind="voxel")


@pytest.mark.parametrize(
    "options",
    [
        {"prediction_type": "v_prediction", "snr_gamma": 5.0, "sampler": "unipc_2"},
        {"prediction_type": "epsilon", "snr_gamma": 5.0, "sampler": "dpmpp_2m", "guidance_scale": 2.0,
         "guidance_interval": (0.1, 50.0)},
        {"prediction_type": "flow", "sampler": "rflow"},
        {"prediction_type": "flow", "sampler": "dpmpp_2m", "guidance_scale": 2.0},
        {"prediction_type": "flow", "sampler": "sde_dpmpp_2m", "flow_timesteps": "logit_normal",
         "lr_anneal_fraction": 0.5},
    ],
)  # fmt: skip
def test_objectives_train_and_sample_end_to_end(tmp_path, options):
    recipe = DiffusionRecipe(**TINY, **options)
    items = tiny_items(8, size=8)
    gen = train_generator(items, recipe, tmp_path / "gen", num_classes=2, sample_every=1)
    assert gen.iterations == 2 and torch.isfinite(torch.tensor(gen.final_loss))
    assert list((tmp_path / "gen" / "samples").glob("*.png"))
    synthetic, _ = synthesize(gen, 2, tmp_path / "syn", recipe)
    assert len(synthetic) == 4 and {it["label"] for it in synthetic} == {0, 1}


def test_trainer_uses_the_weighted_loss():
    sched = build_scheduler("ddpm", num_train_timesteps=10)
    net = torch.nn.Conv2d(1, 1, 1)
    trainer = build_diffusion_trainer(net, sched, [], max_epochs=1, num_classes=None, snr_gamma=5.0, ema_decay=None)
    assert isinstance(trainer.loss_function, MinSNRWeightedLoss)
    assert trainer.loss_function.prepare_batch is trainer.prepare_batch
