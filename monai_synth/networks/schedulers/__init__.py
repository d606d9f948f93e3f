"""Noise schedulers: factory over MONAI's schedulers (new samplers subclass ``monai.networks.schedulers.Scheduler``)."""

from __future__ import annotations

from .factory import (
    MULTISTEP_SAMPLERS,
    BoundedDDIMScheduler,
    SamplerKind,
    SchedulerKind,
    build_scheduler,
    check_sampler_fits,
    check_shift_fits,
    ddim_from,
    is_multistep,
    sampler_from,
)
from .multistep import DPMSolverMultistepScheduler, SDEDPMSolverMultistepScheduler, UniPCMultistepScheduler
