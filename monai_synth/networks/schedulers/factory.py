"""Scheduler factory over MONAI's ``monai.networks.schedulers`` and the one DDPM -> DDIM derivation."""

from __future__ import annotations

import math
from typing import Any

from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler, Scheduler
from monai.utils import StrEnum

from monai_synth.networks.schedulers.multistep import (
    DPMSolverMultistepScheduler,
    SDEDPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)

__all__ = [
    "MULTISTEP_SAMPLERS",
    "BoundedDDIMScheduler",
    "SamplerKind",
    "SchedulerKind",
    "build_scheduler",
    "check_sampler_fits",
    "check_shift_fits",
    "ddim_from",
    "is_multistep",
    "sampler_from",
]


class BoundedDDIMScheduler(DDIMScheduler):
    """MONAI's ``DDIMScheduler`` with the step's noise variance bounded by ``1 - alpha_bar_prev``.

    DDIM's update (Song et al. 2021, Eq. 12) takes ``sqrt(1 - alpha_bar_prev - sigma_t^2)``; with ``eta = 1``
    ``sigma_t^2`` equals ``1 - alpha_bar_prev`` up to rounding, and on a cosine schedule (``alpha_bar_T`` about
    2e-9) float32 rounding made the difference negative: a 2-step DDIM returned NaN images. Bounding ``sigma_t^2``
    by ``(1 - alpha_bar_prev)(1 - 1e-6)`` leaves the other steps unchanged and, where the bound is active, moves
    the direction term's coefficient from its exact value (about ``sqrt(alpha_bar_t)``, below float32 resolution) to
    at most ``1e-3``: the sample changes by at most ``1e-3 |eps|``.
    """

    def _get_variance(self, timestep: int, prev_timestep: int):  # noqa: D102 (MONAI's private hook)
        variance = super()._get_variance(timestep, prev_timestep)
        prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        # a relative margin of 1e-6 keeps 1 - alpha_bar_prev - (eta * sqrt(variance))^2 >= 0 after float32 rounding
        return variance.clamp(min=0.0, max=float(1.0 - prev) * (1.0 - 1e-6))


class SchedulerKind(StrEnum):
    """Training / sampling schedulers from MONAI: DDPM (Ho et al. 2020), DDIM (Song et al. 2021), rectified flow."""

    DDPM = "ddpm"
    DDIM = "ddim"
    RFLOW = "rflow"


class SamplerKind(StrEnum):
    """Samplers for a trained model: the training DDPM chain, DDIM, DPM-Solver++ 2M / 3M, SDE-DPM-Solver++ 2M,
    UniPC 2 / 3, and the Euler sampler of a rectified-flow model (MONAI's ``RFlowScheduler``)."""

    DDPM = "ddpm"
    DDIM = "ddim"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_3M = "dpmpp_3m"
    SDE_DPMPP_2M = "sde_dpmpp_2m"
    UNIPC_2 = "unipc_2"
    UNIPC_3 = "unipc_3"
    RFLOW = "rflow"


def build_scheduler(
    kind: str | SchedulerKind = "ddpm",
    num_train_timesteps: int = 1000,
    schedule: str = "cosine",
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
    num_inference_steps: int | None = None,
    **schedule_args: Any,
) -> Scheduler:
    """A MONAI ``DDPMScheduler``, ``DDIMScheduler`` or ``RFlowScheduler``.

    Args:
        kind: ``"ddpm"``, ``"ddim"`` or ``"rflow"``.
        num_train_timesteps: T.
        schedule: ``"linear_beta"``, ``"scaled_linear_beta"``, ``"sigmoid_beta"`` or ``"cosine"`` (Nichol & Dhariwal
            2021, Eq. 17).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        clip_sample: clip the predicted ``x_0`` to [-1, 1] in each step.
        num_inference_steps: when given, ``set_timesteps`` is called.
        schedule_args: e.g. ``beta_start``, ``beta_end``; for ``"rflow"`` the ``RFlowScheduler`` arguments (e.g.
            ``sample_method="logit-normal"``, ``loc``, ``scale``).
    """
    key = str(kind).lower()
    options = {m.value for m in SchedulerKind}
    if key not in options:
        raise ValueError(f"`scheduler` kind must be one of {sorted(options)}, got {kind!r}.")
    if key == SchedulerKind.RFLOW:
        sched = RFlowScheduler(
            num_train_timesteps=num_train_timesteps, use_discrete_timesteps=True, spatial_dim=2, **schedule_args
        )
        if num_inference_steps is not None:
            sched.set_timesteps(int(num_inference_steps))
        return sched
    cls = DDPMScheduler if key == SchedulerKind.DDPM else BoundedDDIMScheduler
    sched = cls(
        num_train_timesteps=num_train_timesteps,
        schedule=schedule,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
        **schedule_args,
    )
    if num_inference_steps is not None:
        sched.set_timesteps(int(num_inference_steps))
    return sched


def ddim_from(scheduler: Scheduler, clip_sample: bool | None = None) -> DDIMScheduler:
    """A DDIM scheduler (Song et al. 2021; MONAI's, as :class:`BoundedDDIMScheduler`) on the noise schedule of a
    trained ``scheduler``.

    The betas, alphas and cumulative alphas are copied, so sampling uses exactly the training schedule whatever
    ``schedule`` name produced it; ``prediction_type`` is copied too. Call ``set_timesteps`` before sampling.

    Args:
        scheduler: the training scheduler (e.g. a ``DDPMScheduler``).
        clip_sample: clip the predicted ``x_0`` to [-1, 1]; default: the training scheduler's setting (True if absent).
    """
    ddim = BoundedDDIMScheduler(
        num_train_timesteps=scheduler.num_train_timesteps,
        prediction_type=scheduler.prediction_type,
        clip_sample=getattr(scheduler, "clip_sample", True) if clip_sample is None else bool(clip_sample),
    )
    ddim.betas, ddim.alphas = scheduler.betas, scheduler.alphas
    ddim.alphas_cumprod = scheduler.alphas_cumprod.cpu()
    return ddim


def check_sampler_fits(kind: str | SamplerKind, flow: bool, where: str = "this model") -> None:
    """Refuse a sampler that cannot sample the model's objective: ``rflow`` only samples a rectified-flow model, and a
    rectified-flow model samples with ``rflow`` or the multistep solvers (their flow path), not ``ddpm`` / ``ddim``.

    Args:
        kind: the sampler's :class:`SamplerKind` value.
        flow: whether the model is a rectified-flow model (``prediction_type="flow"``, ``RFlowScheduler``).
        where: what the error names as the model (a scheduler class, a recipe).

    Raises:
        ValueError: the sampler does not fit.
    """
    key = str(kind).lower()
    if (key == SamplerKind.RFLOW and not flow) or (flow and key in (SamplerKind.DDPM, SamplerKind.DDIM)):
        raise ValueError(
            f"sampler {key!r} does not fit {where}: rectified-flow models sample with 'rflow' or the multistep "
            "solvers (dpmpp_2m, dpmpp_3m, sde_dpmpp_2m, unipc_2, unipc_3), variance-preserving (DDPM-trained) "
            "models with every sampler but 'rflow'."
        )


#: the samplers with a shiftable timestep grid: the multistep solvers (:mod:`.multistep`)
MULTISTEP_SAMPLERS = tuple(
    k.value for k in SamplerKind if k not in (SamplerKind.DDPM, SamplerKind.DDIM, SamplerKind.RFLOW)
)


def is_multistep(sampler: str | SamplerKind | Scheduler) -> bool:
    """Whether ``sampler`` (a :class:`SamplerKind` name or a scheduler instance) is one of the multistep solvers."""
    if isinstance(sampler, Scheduler):
        return isinstance(sampler, (DPMSolverMultistepScheduler, UniPCMultistepScheduler))
    return str(sampler).lower() in MULTISTEP_SAMPLERS


def check_shift_fits(sampler: str, timestep_shift: float, where: str = "sampler_from") -> None:
    """Refuse a ``timestep_shift`` other than 1 for a sampler without a shiftable grid (only the multistep solvers).

    Raises:
        ValueError: naming ``where``, the sampler and what to change.
    """
    if not (isinstance(timestep_shift, (int, float)) and math.isfinite(timestep_shift) and timestep_shift > 0):
        raise ValueError(f"{where}: `timestep_shift` must be a finite number > 0, got {timestep_shift!r}.")
    if timestep_shift != 1 and not is_multistep(sampler):
        raise ValueError(
            f"{where}: `timestep_shift` {timestep_shift} needs a multistep solver ({', '.join(MULTISTEP_SAMPLERS)}), "
            f"got sampler {sampler!r}; set timestep_shift=1 or choose one of those samplers."
        )


def sampler_from(
    scheduler: Scheduler,
    kind: str | SamplerKind = "ddim",
    clip_sample: bool = True,
    timestep_shift: float = 1.0,
    eta: float = 1.0,
) -> Scheduler:
    """A sampling scheduler of ``kind`` on the noise schedule of a trained ``scheduler`` (betas copied).

    ``ddpm`` returns ``scheduler`` itself; ``ddim`` is :func:`ddim_from`; ``dpmpp_2m`` / ``dpmpp_3m``,
    ``sde_dpmpp_2m`` and ``unipc_2`` / ``unipc_3`` are the multistep solvers of
    :mod:`monai_synth.networks.schedulers.multistep` with the trained ``prediction_type`` (``"flow"`` for a
    rectified-flow ``scheduler``: the solvers then integrate the flow's ODE); ``rflow`` needs a rectified-flow
    ``scheduler`` (``RFlowScheduler``) and returns it (its Euler sampler). Call ``set_timesteps`` before sampling.
    ``timestep_shift`` shifts the multistep solvers' timestep grid (Esser et al. 2024, Eq. 23; see
    :class:`~monai_synth.networks.schedulers.multistep.DPMSolverMultistepScheduler`). ``eta`` is the stochasticity
    of ``sde_dpmpp_2m`` (1: the reverse SDE, 0: the ODE;
    :class:`~monai_synth.networks.schedulers.multistep.SDEDPMSolverMultistepScheduler`); DDIM takes its eta at each
    step instead (``eta`` of :func:`monai_synth.inferers.sample`).

    Raises:
        ValueError: unknown ``kind``; ``rflow`` for a variance-preserving model; ``ddpm`` or ``ddim`` for a
            rectified-flow model; ``timestep_shift != 1`` for a sampler other than the multistep solvers;
            ``eta != 1`` for a sampler other than ``sde_dpmpp_2m``.
    """
    key = str(kind).lower()
    options = [m.value for m in SamplerKind]
    if key not in options:
        raise ValueError(f"`sampler` must be one of {options}, got {kind!r}.")
    is_flow = isinstance(scheduler, RFlowScheduler)
    check_sampler_fits(key, is_flow, where=f"a {type(scheduler).__name__}")
    check_shift_fits(key, timestep_shift)
    if eta != 1.0 and key != SamplerKind.SDE_DPMPP_2M:
        raise ValueError(
            f"`eta` {eta} is the stochasticity of 'sde_dpmpp_2m', not of {key!r}"
            + (": pass DDIM's eta to the sampling loop (`sample(..., eta=...)`)." if key == SamplerKind.DDIM else ".")
        )
    if key in (SamplerKind.DDPM, SamplerKind.RFLOW):
        return scheduler
    if key == SamplerKind.DDIM:
        return ddim_from(scheduler, clip_sample=clip_sample)
    if key.startswith("unipc"):
        cls, order = UniPCMultistepScheduler, int(key[-1])
    else:  # dpmpp_2m, dpmpp_3m, sde_dpmpp_2m
        cls = SDEDPMSolverMultistepScheduler if key.startswith("sde") else DPMSolverMultistepScheduler
        order = int(key[-2])
    solver = cls(
        num_train_timesteps=scheduler.num_train_timesteps,
        prediction_type="flow" if is_flow else scheduler.prediction_type,
        solver_order=order,
        clip_sample=clip_sample,
        timestep_shift=timestep_shift,
        **({"eta": eta} if key == SamplerKind.SDE_DPMPP_2M else {}),
    )
    if not is_flow:
        solver.betas, solver.alphas = scheduler.betas, scheduler.alphas
        solver.alphas_cumprod = scheduler.alphas_cumprod.cpu()
    return solver
