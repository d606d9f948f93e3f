"""DPM-Solver++ and UniPC against independent references: the exact probability-flow ODE of Gaussian data
(closed-form score), the measured convergence order as steps double, and diffusers' implementation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_unet

from monai_synth.inferers import sample
from monai_synth.inferers.guidance import ilvr_guidance
from monai_synth.inferers.sampling import noise_level, previous_timestep
from monai_synth.networks.schedulers import (
    DPMSolverMultistepScheduler,
    SDEDPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
    build_scheduler,
    sampler_from,
)

MU, S = 0.3, 0.5  # data x_0 ~ N(MU, S^2) per pixel


def _alpha_sigma(sched, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(sched, "prediction_type", None) == "flow":  # rectified flow: x_t = (1 - t/T) x_0 + (t/T) eps
        s = torch.tensor(t / sched.num_train_timesteps, dtype=torch.float64)
        return 1 - s, s
    abar = sched.alphas_cumprod[t].double()
    return abar.sqrt(), (1 - abar).sqrt()


def exact_state(sched, t: int, z: torch.Tensor) -> torch.Tensor:
    """The PF-ODE is linear for Gaussian data: ``x_t = a MU + sqrt(a^2 S^2 + s^2) z`` with ``z`` fixed along it."""
    a, s = _alpha_sigma(sched, t)
    return a * MU + (a * a * S * S + s * s).sqrt() * z


def exact_eps(sched, x: torch.Tensor, t: int) -> torch.Tensor:
    """``E[eps | x_t]`` for Gaussian data (the optimal epsilon network)."""
    a, s = _alpha_sigma(sched, t)
    return s * (x - a * MU) / (a * a * S * S + s * s)


def exact_v(sched, x: torch.Tensor, t: int) -> torch.Tensor:
    """``E[v | x_t] = a E[eps|x_t] - s E[x_0|x_t]`` (Salimans & Ho 2022)."""
    a, s = _alpha_sigma(sched, t)
    eps = exact_eps(sched, x, t)
    return a * eps - s * (x - s * eps) / a


def exact_velocity(sched, x: torch.Tensor, t: int) -> torch.Tensor:
    """``E[x_0 - eps | x_t]`` on the rectified-flow path (the optimal velocity network, MONAI's sign)."""
    a, s = _alpha_sigma(sched, t)
    eps = exact_eps(sched, x, t)
    return (x - s * eps) / a - eps


MODELS = {"epsilon": exact_eps, "v_prediction": exact_v, "flow": exact_velocity}


def solve_on_grid(cls, n: int, order: int, prediction: str = "epsilon", **kw) -> float:
    """Integrate from t = 900 to t = 100 (of T = 1000) in ``n`` steps; max error against the exact ODE state."""
    sched = cls(num_train_timesteps=1000, schedule="cosine", solver_order=order, clip_sample=False,
                prediction_type=prediction, **kw)  # fmt: skip
    sched.set_timesteps(10)
    sched.timesteps = torch.linspace(900, 100, n + 1).round().long()  # the last entry is the target, not stepped
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    ts = [int(t) for t in sched.timesteps]
    x = exact_state(sched, ts[0], z)
    model = MODELS[prediction]
    for t in ts[:-1]:
        x, _ = sched.step(model(sched, x, t), t, x)
    return float((x - exact_state(sched, ts[-1], z)).abs().max())


def orders(cls, order: int, **kw) -> tuple[list[float], list[float]]:
    errs = [solve_on_grid(cls, n, order, **kw) for n in (8, 16, 32, 64)]
    return errs, [math.log2(errs[i] / errs[i + 1]) for i in range(3)]


@pytest.mark.parametrize(
    "cls, order, kw, lo, hi",
    [
        (DPMSolverMultistepScheduler, 1, {}, 0.9, 1.1),  # DPM-Solver++ 1 = DDIM in data form: first order
        (DPMSolverMultistepScheduler, 2, {}, 1.7, 2.3),  # 2M: second order
        (DPMSolverMultistepScheduler, 2, {"prediction": "v_prediction"}, 1.7, 2.3),
        (UniPCMultistepScheduler, 1, {}, 1.7, 2.3),  # UniPC-p has order p + 1 (Zhao et al. 2023, Thm 3.2)
        (UniPCMultistepScheduler, 2, {}, 2.4, 3.3),
        (UniPCMultistepScheduler, 2, {"use_corrector": False}, 1.7, 2.3),  # UniP-2 alone: DPM-Solver++ 2M
        (DPMSolverMultistepScheduler, 1, {"prediction": "flow"}, 0.9, 1.1),  # the flow's Euler step
        (DPMSolverMultistepScheduler, 2, {"prediction": "flow"}, 1.7, 2.3),
        (UniPCMultistepScheduler, 2, {"prediction": "flow"}, 2.4, 3.3),
    ],
)
def test_convergence_order_on_the_gaussian_ode(cls, order, kw, lo, hi):
    errs, measured = orders(cls, order, **kw)
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    assert lo <= measured[-1] <= hi, (errs, measured)


@pytest.mark.parametrize("prediction", ["epsilon", "flow"])
def test_higher_orders_beat_second_order(prediction):
    for n in (16, 32, 64):
        dpm2 = solve_on_grid(DPMSolverMultistepScheduler, n, 2, prediction)
        assert solve_on_grid(DPMSolverMultistepScheduler, n, 3, prediction) < dpm2
        if n >= 32:  # UniPC-2 is third order: ahead once the steps are small enough
            assert solve_on_grid(UniPCMultistepScheduler, n, 2, prediction) < dpm2


@pytest.mark.parametrize("kind", ["dpmpp_2m", "dpmpp_3m", "unipc_2", "unipc_3"])
def test_full_sampling_reaches_the_exact_ode_solution(kind):
    """``set_timesteps(n)`` from T - 1 to noise level 0: 15 steps land near the exact ``x_0 = MU + S z``."""
    train = build_scheduler("ddpm", num_train_timesteps=1000, schedule="cosine")
    errors = []
    for n in (5, 15):
        sched = sampler_from(train, kind, clip_sample=False)
        sched.set_timesteps(n)
        z = torch.linspace(-2, 2, 9, dtype=torch.float64)
        x = exact_state(sched, int(sched.timesteps[0]), z)
        for t in sched.timesteps:
            x, _ = sched.step(exact_eps(sched, x, int(t)), int(t), x)
        # the last step returns E[x_0 | x_t] at the smallest t, which the ODE solution approaches as t -> 0
        errors.append(float((x - (MU + S * z)).abs().max()))
    assert errors[1] < errors[0] / 4 and errors[1] < 0.05, errors


@pytest.mark.parametrize("kind", ["dpmpp_2m", "dpmpp_3m", "unipc_2"])
def test_flow_sampling_from_a_rflow_model_reaches_the_exact_solution(kind):
    """``sampler_from`` an ``RFlowScheduler`` gives the solver on the flow path; from ``T - 1`` to the end, 15 steps
    land near ``x_0 = MU + S z`` and far nearer than MONAI's Euler sampler with the same 15 steps."""
    from monai.networks.schedulers import RFlowScheduler

    train = build_scheduler("rflow", num_train_timesteps=1000)
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    errors = []
    for n in (5, 15):
        sched = sampler_from(train, kind, clip_sample=False)
        assert sched.prediction_type == "flow"
        sched.set_timesteps(n)
        x = exact_state(sched, int(sched.timesteps[0]), z)
        for t in sched.timesteps:
            x, _ = sched.step(exact_velocity(sched, x, int(t)), int(t), x)
        errors.append(float((x - (MU + S * z)).abs().max()))
    assert errors[1] < errors[0] / 4 and errors[1] < 0.02, errors
    euler = RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=True, spatial_dim=2)
    euler.set_timesteps(15)
    ts = [int(t) for t in euler.timesteps] + [0]  # 1000, 933, ..., 67, then the clean sample
    x = exact_state(sched, 999, z)  # the exact velocity is undefined at pure noise (t = T): both start at t = 999
    for t, t_next in zip(ts[:-1], ts[1:]):
        t_in = min(t, 999)
        x, _ = euler.step(exact_velocity(sched, x, t_in), t_in, x, t_next)
    assert errors[1] < float((x - (MU + S * z)).abs().max()) / 4


def test_flow_first_order_step_is_monai_rflow_euler_and_add_noise_agrees():
    """The first-order solver on the flow path is MONAI's ``RFlowScheduler.step`` (an independent code) step for
    step on the same grid, with the same ``x_0`` estimate; ``add_noise`` is the same forward path."""
    from monai.networks.schedulers import RFlowScheduler

    from monai_synth.inferers import output_from_x0, predicted_x0

    euler = RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=True, spatial_dim=2)
    euler.set_timesteps(8)
    ours = DPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="flow", solver_order=1,
                                       clip_sample=False)  # fmt: skip
    ours.set_timesteps(8)
    grid = torch.tensor([999, 875, 750, 625, 500, 375, 250, 125])
    ours.timesteps = grid
    x_ours = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x_monai = x_ours.clone()
    for t, t_next in zip(grid.tolist(), grid.tolist()[1:]):
        out = torch.tanh(x_ours) * 0.4
        x_ours, x0_ours = ours.step(out, t, x_ours)
        x_monai, x0_monai = euler.step(torch.tanh(x_monai) * 0.4, t, x_monai, t_next)
        torch.testing.assert_close(x_ours, x_monai, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x0_ours, x0_monai, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(predicted_x0(euler, out, x_ours, t_next), x_ours + t_next / 1000 * out)
    x0, noise, ts = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.tensor([0, 400, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, ts), euler.add_noise(x0, noise, ts))
    v = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(output_from_x0(euler, predicted_x0(euler, v, x0, 300), x0, 300), v)
    with pytest.raises(ValueError, match="t > 0"):
        predicted_x0(euler, v, x0, 0)


def test_flow_models_refuse_the_variance_preserving_samplers():
    flow = build_scheduler("rflow", num_train_timesteps=100)
    for kind in ("ddim", "ddpm"):
        with pytest.raises(ValueError, match="rectified-flow models sample with 'rflow' or the multistep"):
            sampler_from(flow, kind)
    assert sampler_from(flow, "rflow") is flow
    assert noise_level(sampler_from(flow, "sde_dpmpp_2m"), 25) == pytest.approx(noise_level(flow, 25))


def test_epsilon_and_v_prediction_solve_the_same_ode():
    for cls in (DPMSolverMultistepScheduler, UniPCMultistepScheduler):
        e = solve_on_grid(cls, 16, 2)
        v = solve_on_grid(cls, 16, 2, prediction="v_prediction")
        assert e == pytest.approx(v, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    "kind, order, prediction",
    [("dpm", 2, "epsilon"), ("dpm", 3, "v_prediction"), ("unipc", 2, "v_prediction"), ("unipc", 3, "epsilon")],
)
def test_matches_diffusers(kind, order, prediction):
    """Step for step equal (float64) to diffusers' DPMSolverMultistepScheduler / UniPCMultistepScheduler."""
    diffusers = pytest.importorskip("diffusers")
    ours_cls = DPMSolverMultistepScheduler if kind == "dpm" else UniPCMultistepScheduler
    ours = ours_cls(num_train_timesteps=1000, schedule="cosine", prediction_type=prediction, solver_order=order,
                    clip_sample=False)  # fmt: skip
    common = {"num_train_timesteps": 1000, "trained_betas": ours.betas.numpy(), "solver_order": order,
              "prediction_type": prediction, "timestep_spacing": "linspace", "final_sigmas_type": "zero",
              "lower_order_final": True}  # fmt: skip
    if kind == "dpm":
        theirs = diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_type="midpoint")
    else:
        theirs = diffusers.UniPCMultistepScheduler(**common, predict_x0=True, solver_type="bh2")
    for n in (4, 12, 20):
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        assert [int(t) for t in ours.timesteps] == [int(t) for t in theirs.timesteps]
        g = torch.Generator().manual_seed(n)
        x_ours = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
        x_theirs = x_ours.clone()
        w = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)

        def f(x, t, w=w):
            return torch.tanh(0.7 * x + w) * (0.5 + t / 2000)

        for t in ours.timesteps:
            x_ours, _ = ours.step(f(x_ours, int(t)), int(t), x_ours)
            x_theirs = theirs.step(f(x_theirs, int(t)), t, x_theirs).prev_sample
            # diffusers keeps its sigmas in float32: agreement to float32 precision of values up to ~10
            torch.testing.assert_close(x_ours, x_theirs, rtol=1e-5, atol=1e-5)


def test_previous_timestep_and_history_restart():
    sched = sampler_from(build_scheduler("ddpm", num_train_timesteps=100), "dpmpp_2m")
    sched.set_timesteps(4)
    ts = [int(t) for t in sched.timesteps]
    assert ts == [99, 74, 50, 25]
    assert [previous_timestep(sched, t) for t in ts] == [74, 50, 25, -1]
    x = torch.zeros(1, 1, 2, 2)
    first = [sched.step(torch.ones_like(x), t, x)[0] for t in ts]
    second = [sched.step(torch.ones_like(x), t, x)[0] for t in ts]  # a new chain restarts the history
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="solver_order"):
        DPMSolverMultistepScheduler(solver_order=4)
    with pytest.raises(ValueError, match="prediction_type"):
        UniPCMultistepScheduler(prediction_type="sample")
    sched = DPMSolverMultistepScheduler(num_train_timesteps=10)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(torch.zeros(1), 9, torch.zeros(1))
    sched.set_timesteps(3)
    with pytest.raises(ValueError, match="not in `timesteps`"):
        sched.step(torch.zeros(1), 8, torch.zeros(1))
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.set_timesteps(11)
    with pytest.raises(ValueError, match="sampler"):
        sampler_from(build_scheduler("ddpm"), "euler")
    with pytest.raises(ValueError, match="rflow"):
        sampler_from(build_scheduler("ddpm"), "rflow")


class _Counting(torch.nn.Module):
    """Counts network passes and the batch size of each."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.module, self.batches = net, []  # `module`: unwrapped like DDP to find the null class

    def forward(self, x, timesteps, class_labels=None):
        self.batches.append(int(x.shape[0]))
        return self.module(x, timesteps=timesteps, class_labels=class_labels)


@pytest.mark.parametrize("kind, training", [("dpmpp_2m", "ddpm"), ("unipc_2", "ddpm"), ("dpmpp_2m", "rflow"),
                                            ("sde_dpmpp_2m", "rflow")])  # fmt: skip
def test_in_the_sampling_loop_with_cfg_interval_and_ilvr(kind, training):
    """The solvers run in the one loop with class labels, CFG, interval guidance and ILVR guidance, on a
    variance-preserving and on a rectified-flow model."""
    net = _Counting(tiny_unet(num_classes=2))
    train = build_scheduler(training, num_train_timesteps=50)
    sched = sampler_from(train, kind)
    labels = torch.tensor([0, 1])

    def run(**kw):
        return sample(net, sched, shape=(2, 1, 8, 8), class_labels=labels, num_inference_steps=6,
                      generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip

    a, b = run(guidance_scale=2.0), run(guidance_scale=2.0)
    torch.testing.assert_close(a, b)  # seeded: the same samples
    assert a.shape == (2, 1, 8, 8) and torch.isfinite(a).all()
    net.batches = []
    sigmas = [noise_level(sched, int(t)) for t in sched.timesteps]
    lo, hi = sorted(sigmas)[1], sorted(sigmas)[-2]
    run(guidance_scale=2.0, guidance_interval=(lo, hi))
    inside = sum(lo < s <= hi for s in sigmas)
    assert net.batches == [4 if lo < s <= hi else 2 for s in sigmas] and 0 < inside < len(sigmas)
    ref = torch.zeros(2, 1, 8, 8)
    guided = run(guidance_scale=1.0, guidance=ilvr_guidance(ref, factor=2))
    assert torch.isfinite(guided).all()


def test_interval_guidance_errors_and_noise_level():
    train = build_scheduler("ddpm", num_train_timesteps=50)
    abar = float(train.alphas_cumprod[10])
    assert noise_level(train, 10) == pytest.approx(math.sqrt((1 - abar) / abar))
    net = tiny_unet(num_classes=2)
    with pytest.raises(ValueError, match="guidance_interval"):
        sample(net, sampler_from(train, "ddim"), shape=(1, 1, 8, 8), class_labels=torch.tensor([0]),
               guidance_scale=2.0, num_inference_steps=3, guidance_interval=(2.0, 1.0))  # fmt: skip


@pytest.mark.parametrize("steps", [2, 3, 7])
def test_bounded_ddim_has_no_nan_at_eta_one_on_the_cosine_schedule(steps):
    """MONAI's DDIM at eta = 1 took sqrt of a negative rounding residue on the cosine schedule (alpha_bar_T ~ 2e-9):
    2 steps returned NaN. The bounded variance keeps every step finite and equal to the DDIM update otherwise."""
    from monai.networks.schedulers import DDIMScheduler

    from monai_synth.networks.schedulers import BoundedDDIMScheduler, build_scheduler, ddim_from

    ddim = ddim_from(build_scheduler("ddpm", schedule="cosine"))
    assert isinstance(ddim, BoundedDDIMScheduler)
    plain = DDIMScheduler(num_train_timesteps=1000, schedule="cosine")
    ddim.set_timesteps(steps)
    plain.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g)
    eps = torch.randn(2, 1, 4, 4, generator=g)
    for t in ddim.timesteps:
        a = ddim.step(eps, int(t), x, eta=1.0, generator=torch.Generator().manual_seed(1))[0]
        b = plain.step(eps, int(t), x, eta=1.0, generator=torch.Generator().manual_seed(1))[0]
        assert torch.isfinite(a).all()
        if torch.isfinite(b).all():  # where MONAI's step is finite the two agree to 1e-3 |eps|
            assert (a - b).abs().max() <= 1e-3 * eps.abs().max() + 1e-5
        x = a
    if steps == 2:
        plain.set_timesteps(2)
        assert not torch.isfinite(plain.step(eps, 999, torch.randn(2, 1, 4, 4), eta=1.0)[0]).all()


def test_sde_dpmpp_first_order_is_ddim_with_eta_one():
    """SDE-DPM-Solver++ 1 with the same noise draws equals MONAI's own DDIM step at eta = 1 (an independent code)."""
    from monai.networks.schedulers import DDIMScheduler

    ddim = DDIMScheduler(num_train_timesteps=1000, schedule="linear_beta", clip_sample=False)
    ddim.set_timesteps(10)  # MONAI's DDIM steps t -> t - 100 whatever its timestep list holds
    ours = SDEDPMSolverMultistepScheduler(num_train_timesteps=1000, schedule="linear_beta", solver_order=1,
                                          clip_sample=False)  # fmt: skip
    ours.set_timesteps(10)
    grid = torch.arange(900, -1, -100)  # 900, 800, ..., 0: the steps both take
    ours.timesteps = grid
    x0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x_ours, x_ddim = x0.clone(), x0.clone()
    g_ours, g_ddim = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for t in grid:
        out = torch.tanh(x_ours) * 0.3  # any network output, the same function for both
        x_ours, _ = ours.step(out, int(t), x_ours, generator=g_ours)
        out = torch.tanh(x_ddim) * 0.3
        x_ddim, _ = ddim.step(out, int(t), x_ddim, eta=1.0, generator=g_ddim)
        torch.testing.assert_close(x_ours, x_ddim, rtol=1e-4, atol=1e-5)


def _sde_moments(order: int, n: int, eta: float = 1.0) -> tuple[float, float]:
    """Mean and std of 40,000 scalar samples drawn with the exact epsilon of Gaussian data (N(MU, S^2))."""
    train = build_scheduler("ddpm", num_train_timesteps=1000, schedule="cosine")
    sched = sampler_from(train, "sde_dpmpp_2m", clip_sample=False, eta=eta)
    sched.solver_order = order
    sched.set_timesteps(n)
    g = torch.Generator().manual_seed(0)
    x = exact_state(sched, int(sched.timesteps[0]), torch.randn(40_000, generator=g, dtype=torch.float64))
    for t in sched.timesteps:
        x, _ = sched.step(exact_eps(sched, x, int(t)), int(t), x, generator=g)
    return float(x.mean()), float(x.std())


def test_sde_dpmpp_2m_samples_the_data_distribution():
    """The stochastic solver samples N(MU, S^2) from the exact score: its moments land within sampling error at 20
    steps, and its second-order term brings a 10-step chain closer than the first-order (DDIM eta = 1) chain."""
    mean, std = _sde_moments(2, 20)
    assert mean == pytest.approx(MU, abs=0.015) and std == pytest.approx(S, abs=0.015)
    err2 = abs(_sde_moments(2, 10)[1] - S)
    err1 = abs(_sde_moments(1, 10)[1] - S)
    assert err2 < err1, (err2, err1)


@pytest.mark.parametrize("eta", [0.3, 0.6])
def test_sde_dpmpp_partial_eta_samples_the_data_distribution(eta):
    """Any stochasticity between the ODE and the SDE samples N(MU, S^2) from the exact score (moments within
    sampling error at 20 steps)."""
    mean, std = _sde_moments(2, 20, eta)
    assert mean == pytest.approx(MU, abs=0.015) and std == pytest.approx(S, abs=0.015)


@pytest.mark.parametrize("prediction", ["epsilon", "flow"])
def test_sde_dpmpp_eta_zero_is_the_dpmpp_2m_ode(prediction):
    """At eta = 0 the stochastic solver is DPM-Solver++ 2M step for step (the noise it still draws is unused), and
    eta in between lands between the two."""
    kw = {"num_train_timesteps": 1000, "schedule": "cosine", "prediction_type": prediction, "solver_order": 2,
          "clip_sample": False}  # fmt: skip
    ode, sde0, sde1 = (DPMSolverMultistepScheduler(**kw), SDEDPMSolverMultistepScheduler(eta=0.0, **kw),
                       SDEDPMSolverMultistepScheduler(**kw))  # fmt: skip
    for sched in (ode, sde0, sde1):
        sched.set_timesteps(8)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    x_ode, x_sde, x_one = x.clone(), x.clone(), x.clone()
    g, g1 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t in ode.timesteps:
        x_ode, _ = ode.step(torch.tanh(x_ode) * 0.4, int(t), x_ode)
        x_sde, _ = sde0.step(torch.tanh(x_sde) * 0.4, int(t), x_sde, generator=g)
        x_one, _ = sde1.step(torch.tanh(x_one) * 0.4, int(t), x_one, generator=g1)
        torch.testing.assert_close(x_sde, x_ode, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(x_one, x_ode, atol=1e-3)


def test_sde_dpmpp_eta_errors_and_recipe():
    train = build_scheduler("ddpm", num_train_timesteps=50)
    with pytest.raises(ValueError, match=r"`eta` must be a number in \[0, 1\]"):
        SDEDPMSolverMultistepScheduler(eta=1.5)
    with pytest.raises(ValueError, match=r"sample\(\.\.\., eta=\.\.\.\)"):
        sampler_from(train, "ddim", eta=0.5)
    with pytest.raises(ValueError, match="stochasticity of 'sde_dpmpp_2m', not of 'dpmpp_2m'"):
        sampler_from(train, "dpmpp_2m", eta=0.0)
    from monai_synth.engines import DiffusionRecipe

    assert DiffusionRecipe(prediction_type="flow").sampling_scheduler().eta == 1.0
    half = DiffusionRecipe(prediction_type="flow", sample_eta=0.5)
    assert half.sampling_scheduler().eta == 0.5 and half.sampler_eta == 0.0  # built in, not passed at each step


def test_sde_dpmpp_matches_diffusers():
    """Step for step equal to diffusers' DPMSolverMultistepScheduler with algorithm_type='sde-dpmsolver++' (same
    noise: both draw one Gaussian tensor per step from the generator they are given)."""
    diffusers = pytest.importorskip("diffusers")
    for prediction in ("epsilon", "v_prediction"):
        ours = SDEDPMSolverMultistepScheduler(num_train_timesteps=1000, schedule="cosine", prediction_type=prediction,
                                              solver_order=2, clip_sample=False)  # fmt: skip
        theirs = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, trained_betas=ours.betas.numpy(), solver_order=2, prediction_type=prediction,
            timestep_spacing="linspace", final_sigmas_type="zero", lower_order_final=True,
            algorithm_type="sde-dpmsolver++", solver_type="midpoint",
        )  # fmt: skip
        for n in (4, 12):
            ours.set_timesteps(n)
            theirs.set_timesteps(n)
            assert [int(t) for t in ours.timesteps] == [int(t) for t in theirs.timesteps]
            # float32: diffusers draws its noise in float32 whatever the sample's dtype
            x_ours = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(n))
            x_theirs = x_ours.clone()
            g_ours, g_theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            for t in ours.timesteps:
                x_ours, _ = ours.step(torch.tanh(0.7 * x_ours) * 0.5, int(t), x_ours, generator=g_ours)
                x_theirs = theirs.step(torch.tanh(0.7 * x_theirs) * 0.5, t, x_theirs, generator=g_theirs).prev_sample
                torch.testing.assert_close(x_ours, x_theirs, rtol=1e-4, atol=1e-5)


def test_sde_dpmpp_in_the_loop_is_seeded_and_rejects_order_three():
    net = tiny_unet(num_classes=2)
    sched = sampler_from(build_scheduler("ddpm", num_train_timesteps=50), "sde_dpmpp_2m")

    def run(seed):
        return sample(net, sched, shape=(2, 1, 8, 8), class_labels=torch.tensor([0, 1]), num_inference_steps=5,
                      guidance_scale=2.0, generator=torch.Generator().manual_seed(seed))  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    torch.testing.assert_close(a, b)  # every draw comes from the loop's generator
    assert not torch.allclose(a, c) and torch.isfinite(a).all()
    with pytest.raises(ValueError, match="orders 1 and 2"):
        SDEDPMSolverMultistepScheduler(solver_order=3)


@pytest.mark.parametrize("shift", [0.5, 3.0])
@pytest.mark.parametrize("n", [10, 15])
def test_timestep_shift_grid_scales_the_noise_to_signal_ratio(shift, n):
    """Esser et al. 2024, Eq. 23: on the flow path the shifted grid multiplies sigma / alpha = u / (1 - u) by the
    shift (checked up to the rounding to integer timesteps, from that ratio rather than from Eq. 23); it starts at
    T - 1, decreases, and shift 1 keeps the uniform grid."""
    import numpy as np

    T = 1000
    sched = DPMSolverMultistepScheduler(num_train_timesteps=T, prediction_type="flow", timestep_shift=shift)
    sched.set_timesteps(n)
    grid = sched.timesteps.numpy()
    u = np.linspace(1.0, 0.0, n + 1)[:-1]
    assert len(grid) == n and grid[0] == T - 1 and (np.diff(grid) < 0).all()
    inside = u < 1  # the ratio is infinite at u = 1
    ratio = shift * u[inside] / (1 - u[inside])  # sigma / alpha of the shifted point
    exact = (T - 1) * ratio / (1 + ratio)  # t / (T - 1) = sigma = ratio / (1 + ratio) on the flow path
    assert np.all(np.abs(grid[inside] - exact) <= 0.5 + 1e-9), (grid, exact)
    plain = DPMSolverMultistepScheduler(num_train_timesteps=T, prediction_type="flow")
    plain.set_timesteps(n)
    ref = DPMSolverMultistepScheduler(num_train_timesteps=T, prediction_type="flow", timestep_shift=1.0)
    ref.set_timesteps(n)
    assert torch.equal(plain.timesteps, ref.timesteps)
    below_half = int((grid < T / 2).sum()), int((plain.timesteps < T / 2).sum())
    assert below_half[0] > below_half[1] if shift < 1 else below_half[0] < below_half[1]


@pytest.mark.parametrize("shift", [0.5, 2.0])
@pytest.mark.parametrize("kind", ["dpmpp_2m", "unipc_2"])
def test_shifted_grid_still_reaches_the_exact_flow_solution(kind, shift):
    """A shifted grid is still a grid from T - 1 to 0: 15 steps with the exact velocity land near x_0 = MU + S z, at
    most half as far as 5 steps."""
    train = build_scheduler("rflow", num_train_timesteps=1000)
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    errors = []
    for n in (5, 15):
        sched = sampler_from(train, kind, clip_sample=False, timestep_shift=shift)
        sched.set_timesteps(n)
        x = exact_state(sched, int(sched.timesteps[0]), z)
        for t in sched.timesteps:
            x, _ = sched.step(exact_velocity(sched, x, int(t)), int(t), x)
        errors.append(float((x - (MU + S * z)).abs().max()))
    assert errors[1] < errors[0] / 2 and errors[1] < 0.03, errors


def test_timestep_shift_reaches_the_recipe_sampler_and_errors_name_the_fix():
    """``DiffusionRecipe.timestep_shift`` reaches the sampling scheduler (and survives a second ``set_timesteps``);
    bad shifts, shifts on samplers without a shiftable grid and over-fine shifted grids are refused."""
    from monai_synth.engines import DiffusionRecipe

    recipe = DiffusionRecipe(prediction_type="flow", sampler="sde_dpmpp_2m", sample_steps=15, timestep_shift=0.5)
    sched = recipe.sampling_scheduler()
    direct = SDEDPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="flow", timestep_shift=0.5)
    direct.set_timesteps(15)
    assert torch.equal(sched.timesteps, direct.timesteps) and int(sched.timesteps[-1]) == 34
    sched.set_timesteps(15)
    assert torch.equal(sched.timesteps, direct.timesteps)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timestep_shift"):
            DPMSolverMultistepScheduler(timestep_shift=bad)
    train = build_scheduler("ddpm", num_train_timesteps=1000, schedule="cosine")
    with pytest.raises(ValueError, match="multistep solver.*'ddim'"):
        sampler_from(train, "ddim", timestep_shift=0.5)
    with pytest.raises(ValueError, match="DiffusionRecipe.timestep_shift.*'rflow'"):
        DiffusionRecipe(prediction_type="flow", sampler="rflow", timestep_shift=0.5)
    with pytest.raises(ValueError, match="same training timestep"):
        DPMSolverMultistepScheduler(timestep_shift=0.05).set_timesteps(900)
