"""Scheduler factory over MONAI's ``monai.networks.schedulers`` and the one DDPM -> DDIM derivation."""

from __future__ import annotations

from typing import Any

from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler
from monai.utils import StrEnum

__all__ = ["SchedulerKind", "build_scheduler", "ddim_from"]


class SchedulerKind(StrEnum):
    """Noise schedulers from MONAI."""

    DDPM = "ddpm"
    DDIM = "ddim"


def build_scheduler(
    kind: str | SchedulerKind = "ddpm",
    num_train_timesteps: int = 1000,
    schedule: str = "cosine",
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
    num_inference_steps: int | None = None,
    **schedule_args: Any,
) -> Scheduler:
    """A MONAI ``DDPMScheduler`` or ``DDIMScheduler``.

    Args:
        kind: ``"ddpm"`` or ``"ddim"``.
        num_train_timesteps: T.
        schedule: ``"linear_beta"``, ``"scaled_linear_beta"``, ``"sigmoid_beta"`` or ``"cosine"`` (Nichol & Dhariwal
            2021, Eq. 17).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        clip_sample: clip the predicted ``x_0`` to [-1, 1] in each step.
        num_inference_steps: when given, ``set_timesteps`` is called.
        schedule_args: e.g. ``beta_start``, ``beta_end``.
    """
    key = str(kind).lower()
    options = {m.value for m in SchedulerKind}
    if key not in options:
        raise ValueError(f"`scheduler` kind must be one of {sorted(options)}, got {kind!r}.")
    cls = DDPMScheduler if key == SchedulerKind.DDPM else DDIMScheduler
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
    """A MONAI ``DDIMScheduler`` (Song et al. 2021) on the noise schedule of a trained ``scheduler``.

    The betas, alphas and cumulative alphas are copied, so sampling uses exactly the training schedule whatever
    ``schedule`` name produced it; ``prediction_type`` is copied too. Call ``set_timesteps`` before sampling.

    Args:
        scheduler: the training scheduler (e.g. a ``DDPMScheduler``).
        clip_sample: clip the predicted ``x_0`` to [-1, 1]; default: the training scheduler's setting (True if absent).
    """
    ddim = DDIMScheduler(
        num_train_timesteps=scheduler.num_train_timesteps,
        prediction_type=scheduler.prediction_type,
        clip_sample=getattr(scheduler, "clip_sample", True) if clip_sample is None else bool(clip_sample),
    )
    ddim.betas, ddim.alphas = scheduler.betas, scheduler.alphas
    ddim.alphas_cumprod = scheduler.alphas_cumprod.cpu()
    return ddim
