"""The one source of diffusion defaults: :class:`DiffusionRecipe`.

Every default of the diffusion trainer (:func:`monai_synth.engines.build_diffusion_trainer`), of dataset generation
(:func:`monai_synth.engines.generate_dataset`), of the augmentation pipeline and of the bundles comes from this
dataclass. Bundles instantiate it with their overrides and read fields with ``"$@recipe.<field>"``; library code uses
the class attributes (``DiffusionRecipe.lr``). Why each default was chosen, with the measurements behind it, is in
docs/diffusion.md and docs/synthetic_utility.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from monai_synth.networks.autoencoder import build_autoencoder, default_autoencoder_channels, downsample_factor
from monai_synth.networks.diffusion_unet import build_diffusion_unet
from monai_synth.networks.schedulers import (
    SamplerKind,
    build_scheduler,
    check_sampler_fits,
    check_shift_fits,
    is_multistep,
    sampler_from,
)

__all__ = [
    "AutoencoderRecipe",
    "DiffusionRecipe",
    "GeneratorKind",
    "KIND_DEFAULTS",
    "LATENT_FROM_SIZE",
    "default_loss",
    "default_sample_steps",
    "default_timestep_shift",
]

LATENT_FROM_SIZE = 128
"""From this image size up the generator is latent diffusion unless a recipe says otherwise (docs/latent.md)."""


LDM_BETAS = {"beta_start": 0.0015, "beta_end": 0.0195}
"""Betas of the ``scaled_linear_beta`` schedule of latent diffusion (Rombach et al. 2022, their configs)."""


class GeneratorKind:
    """``pixel``: the UNet denoises images; ``latent``: it denoises the latents of an autoencoder (Rombach 2022)."""

    PIXEL = "pixel"
    LATENT = "latent"


KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    GeneratorKind.PIXEL: {
        "prediction_type": "flow",
        "channels": (32, 32, 64),
        "batch_size": 32,
        "lr_anneal_fraction": 0.5,
    },
    GeneratorKind.LATENT: {
        "prediction_type": "epsilon",
        "channels": (32, 64, 64),
        "batch_size": 64,
        "lr_anneal_fraction": 0.0,
    },
}
"""Defaults that depend on the generator kind. Pixel: the rectified-flow recipe chosen on PneumoniaMNIST (10- and
30-minute runs, docs/performance.md); latent: the epsilon recipe it replaced, kept until measured on latents."""


def default_loss(prediction_type: str) -> str:
    """The default loss of an objective: ``l2`` for ``flow`` (measured best with it, docs/performance.md), ``l1``
    (seed 000) for the VP objectives ``epsilon`` / ``v_prediction``."""
    return "l2" if prediction_type == "flow" else "l1"


def default_sample_steps(sampler: str | Any) -> int:
    """The default step count of a sampler: 15 for the multistep solvers (DPM-Solver++ / UniPC reach DDIM-50's FID
    in 10-20 evaluations, Lu et al. 2022; measured in docs/performance.md), 50 for ``ddim``, ``ddpm`` and ``rflow``;
    ``sampler`` is a sampler name or a scheduler instance."""
    return 15 if is_multistep(sampler) else 50


def default_timestep_shift(sampler: str, prediction_type: str) -> float:
    """The default timestep shift: 0.5 for a multistep solver on a ``flow`` model (best of 0.33-2 on
    PneumoniaMNIST, docs/performance.md), 1 (the uniform grid) otherwise; the shift was not measured on VP models."""
    return 0.5 if is_multistep(sampler) and prediction_type == "flow" else 1.0


@dataclass
class AutoencoderRecipe:
    """Settings of the latent-diffusion first stage (MONAI ``AutoencoderKL`` + ``PatchDiscriminator``).

    Losses follow Rombach et al. 2022 (Sec. 3.1, App. G): L1 reconstruction + ``kl_weight`` * KL(q(z|x) || N(0, I))
    + ``adv_weight`` * least-squares patch-adversarial loss (Mao et al. 2017) from iteration ``adv_start_iters``.
    No perceptual (LPIPS) term: its weights are a download, and none ship in a package we depend on.

    Args:
        channels: channels per level; ``None``: :func:`~monai_synth.networks.autoencoder.default_autoencoder_channels`
            of the image size (factor 4 below 256 px, 8 from 256 px up).
        latent_channels: channels of the latent ``z``.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.
        lr: Adam learning rate of the autoencoder.
        disc_lr: Adam learning rate of the discriminator.
        batch_size: images per step.
        epochs: maximum epochs.
        budget_fraction: share of the generator's ``train_minutes`` given to the autoencoder (the rest trains the
            latent UNet); used only when the diffusion recipe has a time budget.
        kl_weight: weight of the KL term.
        adv_weight: weight of the generator's adversarial term (0: no discriminator is trained).
        adv_start_iters: iterations of reconstruction-only training before the adversarial terms start.
        ema_decay: EMA of the autoencoder weights (``None``: none).
    """

    channels: tuple[int, ...] | None = None
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    lr: float = 5e-4
    disc_lr: float = 5e-4
    batch_size: int = 16
    epochs: int = 50
    budget_fraction: float = 0.25
    kl_weight: float = 1e-6
    adv_weight: float = 0.01
    adv_start_iters: int = 300
    ema_decay: float | None = 0.999

    def __post_init__(self) -> None:
        if self.channels is not None:
            self.channels = tuple(int(c) for c in self.channels)
        for name in ("latent_channels", "batch_size", "epochs", "num_res_blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"AutoencoderRecipe.{name} must be an integer >= 1, got {v!r}.")
        for name in ("lr", "disc_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"AutoencoderRecipe.{name} must be a finite number > 0, got {v!r}.")
        if not 0.0 < self.budget_fraction < 1.0:
            raise ValueError(f"AutoencoderRecipe.budget_fraction must be in (0, 1), got {self.budget_fraction!r}.")
        for name in ("kl_weight", "adv_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"AutoencoderRecipe.{name} must be >= 0, got {getattr(self, name)!r}.")

    def channels_for(self, image_size: int) -> tuple[int, ...]:
        """``channels``, or the default levels for ``image_size``."""
        return self.channels if self.channels is not None else default_autoencoder_channels(image_size)

    def build_network(self, image_size: int, in_channels: int = 1) -> torch.nn.Module:
        """The recipe's ``AutoencoderKL`` for ``image_size`` images."""
        return build_autoencoder(
            in_channels=in_channels,
            channels=self.channels_for(image_size),
            latent_channels=self.latent_channels,
            num_res_blocks=self.num_res_blocks,
            norm_num_groups=self.norm_num_groups,
        )


@dataclass
class DiffusionRecipe:
    """Settings of the class-conditional diffusion generator.

    Args:
        image_size: training/sampling resolution (square).
        generator_kind: ``pixel`` or ``latent`` (:class:`GeneratorKind`); ``None``: ``latent`` from
            :data:`LATENT_FROM_SIZE` (128 px) up, ``pixel`` below.
        autoencoder: the first stage of a latent generator (:class:`AutoencoderRecipe`, or a mapping of its fields).
        channels: ``DiffusionModelUNet`` feature channels per level; ``None``: :data:`KIND_DEFAULTS` (32-32-64 pixel,
            32-64-64 latent).
        attention_levels: self-attention per level.
        num_res_blocks: residual blocks per level.
        num_head_channels: channels per attention head.
        norm_num_groups: GroupNorm groups (must divide every channel count).
        schedule: beta schedule; ``None``: ``cosine`` (Nichol & Dhariwal 2021, Eq. 17) for pixel models and
            ``scaled_linear_beta`` with betas 0.0015-0.0195 for latent models (Rombach et al. 2022; the cosine
            schedule's ``abar_T ~ 2e-9`` makes unclipped epsilon-prediction steps diverge on unbounded latents).
        prediction_type: what the network predicts: ``epsilon`` (Ho et al. 2020), ``v_prediction`` (Salimans & Ho
            2022) or ``flow`` (rectified flow, Liu et al. 2023, through MONAI's ``RFlowScheduler``: the network
            predicts the velocity ``x_0 - eps`` and samples with the ``rflow`` Euler sampler or a multistep solver);
            ``None``: ``flow`` for pixel generators, ``epsilon`` for latent ones (:data:`KIND_DEFAULTS`).
        flow_timesteps: training-time distribution of a ``flow`` model's t: ``uniform`` (MONAI's default) or
            ``logit_normal`` (t / T = sigmoid(n), n ~ N(0, 1): Esser et al. 2024, Eq. 19, their best "rf/lognorm(0, 1)",
            which trains the middle noise levels more often than the nearly clean and nearly pure-noise ends).
        snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper); ``None``: unweighted.
        loss: ``l1`` (seed 000), ``l2`` (seeds 001/003, Ho et al. 2020 Eq. 14) or ``huber`` (seed 002); ``None``:
            :func:`default_loss` of the objective (``l2`` for ``flow``, ``l1`` otherwise).
        num_train_timesteps: T of the forward process.
        lr: Adam learning rate after the linear warm-up.
        warmup_iters: learning-rate warm-up iterations (Goyal et al. 2017).
        lr_anneal_fraction: share of the run (of ``train_minutes``, or of ``epochs`` without a budget) at its end over
            which the learning rate cools down to 0 along a cosine (the warm-up / stable / decay schedule, Hu et al.
            2024; :class:`~monai_synth.handlers.WarmupLrHandler`); 0: constant after the warm-up; ``None``:
            :data:`KIND_DEFAULTS` (0.5 pixel, 0 latent).
        batch_size: images per step; ``None``: :data:`KIND_DEFAULTS` (32 pixel, 64 latent).
        epochs: maximum epochs.
        train_minutes: wall-clock budget (training stops at the first of ``epochs`` and this); ``None``: no budget.
        ema_decay: EMA decay (with warm-up: early weights are not frozen into the average).
        cond_drop_prob: classifier-free guidance label dropout (Ho & Salimans 2022).
        hflip: random horizontal flips during diffusion training.
        guidance_scale: CFG weight w at sampling; 1 samples the conditional model alone (one network pass per step).
        sampler: a :class:`~monai_synth.networks.schedulers.SamplerKind`: ``ddim``, ``dpmpp_2m``, ``dpmpp_3m``
            (DPM-Solver++, Lu et al. 2022), ``sde_dpmpp_2m`` (its stochastic variant), ``unipc_2``, ``unipc_3``
            (UniPC, Zhao et al. 2023), ``ddpm``, or ``rflow`` (the Euler sampler of ``prediction_type="flow"``,
            which also samples with the multistep solvers but not with ``ddim`` or ``ddpm``); ``None``:
            ``sde_dpmpp_2m`` for ``flow`` models, ``ddim`` for the VP objectives.
        sample_steps: sampler steps (network evaluations, twice that where CFG applies); ``None``:
            :func:`default_sample_steps` (15 for the multistep solvers, 50 otherwise).
        sample_eta: stochasticity of the ``ddim`` and ``sde_dpmpp_2m`` samplers, 1 = stochastic (DDPM-like steps,
            the reverse SDE), 0 = deterministic (the ODE): DDIM's eta (Song et al. 2021, Eq. 16), and the SDE
            solver's (:class:`~monai_synth.networks.schedulers.SDEDPMSolverMultistepScheduler`); unused by the
            other samplers.
        timestep_shift: shift ``s`` of the multistep solvers' timestep grid, ``u -> s u / (1 + (s - 1) u)`` on the
            uniform grid in [0, 1] (Esser et al. 2024, Eq. 23); ``s < 1`` puts more steps at low noise (measured on
            28 px images in docs/performance.md); 1: the uniform grid. Only for ``dpmpp_*``, ``sde_dpmpp_2m`` and
            ``unipc_*``; ``None``: :func:`default_timestep_shift` (0.5 for those solvers on ``flow`` models, else 1).
        guidance_interval: ``(sigma_lo, sigma_hi)``: CFG only at noise levels in that interval, one conditional
            pass elsewhere (Kynkaanniemi et al. 2024; :func:`monai_synth.inferers.sample`); ``None``: every step.
        grad_clip_norm: gradient-norm clipping (``None``: none).
        seed: training seed.
    """

    image_size: int = 28
    generator_kind: str | None = None
    autoencoder: AutoencoderRecipe = field(default_factory=AutoencoderRecipe)
    channels: tuple[int, ...] | None = None
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 32
    schedule: str | None = None
    prediction_type: str | None = None
    flow_timesteps: str = "uniform"
    snr_gamma: float | None = None
    loss: str | None = None
    num_train_timesteps: int = 1000
    lr: float = 1e-3
    warmup_iters: int = 200
    lr_anneal_fraction: float | None = None
    batch_size: int | None = None
    epochs: int = 10
    train_minutes: float | None = None
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1
    hflip: bool = False
    guidance_scale: float = 1.0
    sampler: str | None = None
    sample_steps: int | None = None
    sample_eta: float = 1.0
    timestep_shift: float | None = None
    guidance_interval: tuple[float, float] | None = None
    grad_clip_norm: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self._resolve_defaults()
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        for name in ("image_size", "batch_size", "epochs", "sample_steps", "num_train_timesteps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DiffusionRecipe.{name} must be an integer >= 1, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"DiffusionRecipe.lr must be a finite number > 0, got {self.lr!r}.")
        if not 0.0 <= self.lr_anneal_fraction <= 1.0:
            raise ValueError(f"DiffusionRecipe.lr_anneal_fraction must be in [0, 1], got {self.lr_anneal_fraction!r}.")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"DiffusionRecipe.cond_drop_prob must be in [0, 1], got {self.cond_drop_prob!r}.")
        if not 0.0 <= self.sample_eta <= 1.0:
            raise ValueError(f"DiffusionRecipe.sample_eta must be in [0, 1], got {self.sample_eta!r}.")
        if not math.isfinite(self.guidance_scale):
            raise ValueError(f"DiffusionRecipe.guidance_scale must be finite, got {self.guidance_scale!r}.")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(
                f"DiffusionRecipe.sample_steps ({self.sample_steps}) cannot exceed num_train_timesteps "
                f"({self.num_train_timesteps})."
            )
        self._check_objective_and_sampler()
        if isinstance(self.autoencoder, Mapping):
            self.autoencoder = AutoencoderRecipe(**self.autoencoder)
        if not isinstance(self.autoencoder, AutoencoderRecipe):
            raise ValueError(f"DiffusionRecipe.autoencoder must be an AutoencoderRecipe, got {self.autoencoder!r}.")
        if self.schedule is None:
            self.schedule = "scaled_linear_beta" if self.generator_kind == GeneratorKind.LATENT else "cosine"
        if self.is_latent and self.image_size % downsample_factor(self.autoencoder.channels_for(self.image_size)):
            raise ValueError(
                f"DiffusionRecipe.image_size {self.image_size} is not divisible by the autoencoder's downsampling "
                f"factor {downsample_factor(self.autoencoder.channels_for(self.image_size))}."
            )
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise ValueError(f"DiffusionRecipe.train_minutes must be > 0 or None, got {self.train_minutes!r}.")

    def _resolve_defaults(self) -> None:
        """Fill the ``None`` fields: the generator kind from the image size, then :data:`KIND_DEFAULTS`, then the
        loss, sampler, steps and shift that go with the objective and sampler."""
        if self.generator_kind is None:
            size_ok = isinstance(self.image_size, int) and self.image_size >= LATENT_FROM_SIZE
            self.generator_kind = GeneratorKind.LATENT if size_ok else GeneratorKind.PIXEL
        if self.generator_kind not in KIND_DEFAULTS:
            raise ValueError(
                f"DiffusionRecipe.generator_kind must be 'pixel' or 'latent', got {self.generator_kind!r}."
            )
        for name, value in KIND_DEFAULTS[self.generator_kind].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.loss is None:
            self.loss = default_loss(self.prediction_type)
        if self.sampler is None:
            self.sampler = "sde_dpmpp_2m" if self.prediction_type == "flow" else "ddim"
        if self.sample_steps is None:
            self.sample_steps = default_sample_steps(self.sampler)
        if self.timestep_shift is None:
            self.timestep_shift = default_timestep_shift(self.sampler, self.prediction_type)

    def _check_objective_and_sampler(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction", "flow"):
            raise ValueError(
                "DiffusionRecipe.prediction_type must be 'epsilon', 'v_prediction' or 'flow', "
                f"got {self.prediction_type!r}."
            )
        check_sampler_fits(self.sampler, self.prediction_type == "flow",
                           where=f"DiffusionRecipe(prediction_type={self.prediction_type!r})")  # fmt: skip
        check_shift_fits(self.sampler, self.timestep_shift, where="DiffusionRecipe.timestep_shift")
        if self.flow_timesteps not in ("uniform", "logit_normal"):
            raise ValueError(
                f"DiffusionRecipe.flow_timesteps must be 'uniform' or 'logit_normal', got {self.flow_timesteps!r}."
            )
        if self.flow_timesteps != "uniform" and self.prediction_type != "flow":
            raise ValueError(
                f"DiffusionRecipe.flow_timesteps={self.flow_timesteps!r} needs prediction_type='flow' (the VP "
                "objectives sample t uniformly); set flow_timesteps='uniform' or prediction_type='flow'."
            )
        if self.snr_gamma is not None and (self.prediction_type == "flow" or not self.snr_gamma > 0):
            raise ValueError(
                f"DiffusionRecipe.snr_gamma must be > 0 and needs a VP objective, got {self.snr_gamma!r} with "
                f"prediction_type {self.prediction_type!r}; set prediction_type='epsilon' or 'v_prediction' (the "
                "pixel default is 'flow'), or snr_gamma=None."
            )
        if self.guidance_interval is not None:
            self.guidance_interval = tuple(float(v) for v in self.guidance_interval)
            if len(self.guidance_interval) != 2 or not self.guidance_interval[0] < self.guidance_interval[1]:
                raise ValueError(
                    f"DiffusionRecipe.guidance_interval must be (lo, hi) with lo < hi, got {self.guidance_interval!r}."
                )

    @property
    def is_latent(self) -> bool:
        """Whether the generator is latent diffusion."""
        return self.generator_kind == GeneratorKind.LATENT

    @property
    def latent_size(self) -> int:
        """Spatial size the UNet works at: ``image_size``, divided by the autoencoder's factor for latent models."""
        if not self.is_latent:
            return self.image_size
        return self.image_size // downsample_factor(self.autoencoder.channels_for(self.image_size))

    def build_network(self, num_classes: int | None, in_channels: int = 1) -> torch.nn.Module:
        """The recipe's ``DiffusionModelUNet`` (class-conditional with ``num_classes + 1`` embeddings); for a latent
        generator ``in_channels`` are the latent channels."""
        return build_diffusion_unet(
            num_classes=num_classes,
            in_channels=in_channels,
            channels=self.channels,
            attention_levels=self.attention_levels,
            num_res_blocks=self.num_res_blocks,
            num_head_channels=self.num_head_channels,
            norm_num_groups=self.norm_num_groups,
        )

    def build_scheduler(self) -> Any:
        """The recipe's training scheduler: MONAI's ``DDPMScheduler``, or ``RFlowScheduler`` for ``flow``."""
        if self.prediction_type == "flow":
            method = "logit-normal" if self.flow_timesteps == "logit_normal" else "uniform"
            return build_scheduler("rflow", num_train_timesteps=self.num_train_timesteps, sample_method=method)
        return build_scheduler(
            "ddpm",
            num_train_timesteps=self.num_train_timesteps,
            schedule=self.schedule,
            prediction_type=self.prediction_type,
            clip_sample=not self.is_latent,  # latents are not bounded to [-1, 1]
            **(LDM_BETAS if self.schedule == "scaled_linear_beta" else {}),
        )

    def sampling_scheduler(self, trained: Any | None = None) -> Any:
        """The recipe's sampler on the schedule of ``trained`` (default: :meth:`build_scheduler`), with
        ``sample_steps`` set."""
        trained = trained if trained is not None else self.build_scheduler()
        sched = sampler_from(
            trained,
            self.sampler,
            clip_sample=not self.is_latent,
            timestep_shift=self.timestep_shift,
            eta=self.sample_eta if self.sampler == SamplerKind.SDE_DPMPP_2M else 1.0,
        )
        sched.set_timesteps(self.sample_steps)
        return sched

    @property
    def sampler_eta(self) -> float:
        """The eta the sampling loop passes at each step: ``sample_eta`` for ``ddim``, else 0 (``sde_dpmpp_2m``
        gets ``sample_eta`` when it is built, :meth:`sampling_scheduler`)."""
        return self.sample_eta if self.sampler == "ddim" else 0.0
