"""Diffusion training on MONAI's ``SupervisedTrainer``: losses, prepare-batch strategy, default network, builder.

Intensity convention: the model works on images in [-1, 1] (Ho et al. 2020, Sec. 3.3); datasets in [0, 1] are mapped
with ``x * 2 - 1`` (``ScaleIntensityRanged(a_min=0, a_max=1, b_min=-1, b_max=1)``) before batching, and generated
images are mapped back with ``(x + 1) / 2`` by the writers.

Batch dictionaries carry ``"image"`` (float tensor ``(B, C, *spatial)`` in [-1, 1]) and, for class-conditional
models, ``"label"`` (integer class in ``[0, num_classes)``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import DiffusionPrepareBatch
from monai.networks.schedulers import RFlowScheduler, Scheduler
from monai.utils import StrEnum

from monai_synth.engines.recipe import DiffusionRecipe, default_loss, default_sample_steps
from monai_synth.handlers.checkpoint import AtomicCheckpointSaver, CheckpointResumer
from monai_synth.handlers.ema import EMAHandler, create_ema_model
from monai_synth.handlers.sample_grid import SampleGridHandler
from monai_synth.handlers.training import (
    GradientClipHandler,
    NonFiniteLossHandler,
    ProgressBarHandler,
    ThroughputHandler,
)
from monai_synth.inferers.class_conditioned import ClassConditionedDiffusionInferer
from monai_synth.inferers.sampling import is_flow
from monai_synth.networks.diffusion_unet import build_diffusion_unet
from monai_synth.networks.schedulers import SchedulerKind, build_scheduler, ddim_from, sampler_from

__all__ = [
    "DiffusionLoss",
    "SchedulerKind",
    "get_loss_function",
    "diffusion_target",
    "ClassConditionedPrepareBatch",
    "build_diffusion_unet",
    "build_scheduler",
    "ddim_from",
    "build_diffusion_trainer",
    "MinSNRWeightedLoss",
    "is_rank0",
    "amp_dtype_for",
]

logger = logging.getLogger(__name__)


class DiffusionLoss(StrEnum):
    """Denoising losses: L1 (seed 000), L2 (seeds 001/003, Ho et al. 2020 Eq. 14), Huber (seed 002)."""

    L1 = "l1"
    L2 = "l2"
    HUBER = "huber"


def get_loss_function(name: str | DiffusionLoss, huber_delta: float = 1.0) -> torch.nn.Module:
    """The element-wise-mean loss module for ``name``.

    Args:
        name: one of :class:`DiffusionLoss` (``"l1"``, ``"l2"``, ``"huber"``; case-insensitive).
        huber_delta: Huber transition point ``delta`` (quadratic below, linear above).

    Returns:
        ``nn.L1Loss()``, ``nn.MSELoss()`` or ``nn.HuberLoss(delta=huber_delta)``.

    Raises:
        ValueError: for an unknown name.
    """
    key = str(name).lower()
    options = {m.value for m in DiffusionLoss}
    if key not in options:
        raise ValueError(f"`loss` must be one of {sorted(options)}, got {name!r}.")
    if key == DiffusionLoss.L1:
        return torch.nn.L1Loss()
    if key == DiffusionLoss.L2:
        return torch.nn.MSELoss()
    return torch.nn.HuberLoss(delta=float(huber_delta))


def diffusion_target(
    scheduler: Scheduler, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Regression target for the scheduler's ``prediction_type``.

    ``epsilon`` -> ``noise`` (Ho et al. 2020, Eq. 14); ``v_prediction`` -> ``v = sqrt(abar_t) eps - sqrt(1-abar_t) x_0``
    (Salimans & Ho 2022, Sec. 4) via ``scheduler.get_velocity``; ``sample`` -> ``images``; MONAI's ``RFlowScheduler``
    (``x_t = (1 - t/T) x_0 + (t/T) eps``) -> ``x_0 - eps``, the velocity its Euler ``step`` integrates.
    """
    if isinstance(scheduler, RFlowScheduler):  # rectified flow: the velocity from noise to data (Liu et al. 2023)
        return images - noise
    kind = getattr(scheduler, "prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)
    if kind == "sample":
        return images
    raise ValueError(f"`prediction_type` must be one of ['epsilon', 'sample', 'v_prediction'], got {kind!r}.")


class ClassConditionedPrepareBatch(DiffusionPrepareBatch):
    """Prepare-batch strategy: draw ``t ~ U{0..T-1}`` and ``eps ~ N(0, I)``, pass class labels to the inferer.

    Returns ``(images, target, (), {"noise", "timesteps", "class_labels"?})`` for
    :class:`~monai_synth.inferers.ClassConditionedDiffusionInferer`, with the target from :func:`diffusion_target`.

    Args:
        scheduler: the training scheduler (for ``num_train_timesteps``, ``prediction_type`` and velocities).
        image_key: batch key of the images (in [-1, 1]).
        label_key: batch key of the integer labels; ``None`` for unconditional training.
        generator: optional CPU generator for timesteps and noise (the global RNG when ``None``).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        image_key: str = "image",
        label_key: str | None = "label",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_train_timesteps=scheduler.num_train_timesteps, condition_name=None)
        self.scheduler = scheduler
        self.image_key = image_key
        self.label_key = label_key
        self.generator = generator

    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            return torch.randn_like(images)
        return torch.randn(images.shape, generator=self.generator, dtype=images.dtype).to(images.device)

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scheduler, RFlowScheduler):  # as RFlowScheduler.sample_timesteps, with our generator
            if getattr(self.scheduler, "sample_method", "uniform") == "logit-normal":
                # t / T = sigmoid(n), n ~ N(loc, scale): Esser et al. 2024 (SD3), Sec. 3.1, Eq. 19
                base = self.scheduler.distribution.base_dist  # LogisticNormal -> Independent -> Normal(loc, scale)
                base = getattr(base, "base_dist", base)
                n = torch.randn(images.shape[0], generator=self.generator)
                u = torch.sigmoid(float(base.loc.reshape(-1)[0]) + float(base.scale.reshape(-1)[0]) * n)
            else:  # uniform in [0, T)
                u = torch.rand(images.shape[0], generator=self.generator)
            return (u * self.num_train_timesteps).long().clamp_max(self.num_train_timesteps - 1).to(images.device)
        if self.generator is None:
            return super().get_timesteps(images)
        t = torch.randint(0, self.num_train_timesteps, (images.shape[0],), generator=self.generator)
        return t.to(images.device)

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return diffusion_target(self.scheduler, images, noise, timesteps)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        if self.image_key not in batchdata:
            raise ValueError(f"batch has no {self.image_key!r} key (keys: {sorted(batchdata)}); set `image_key`.")
        images = torch.as_tensor(batchdata[self.image_key]).float().to(device, non_blocking=non_blocking, **kwargs)
        noise = self.get_noise(images)
        timesteps = self.get_timesteps(images)
        self.last_timesteps = timesteps  # read by MinSNRWeightedLoss
        target = self.get_target(images, noise, timesteps)
        infer_kwargs: dict = {"noise": noise, "timesteps": timesteps}
        if self.label_key is not None:
            if self.label_key not in batchdata:
                raise ValueError(
                    f"batch has no {self.label_key!r} key (keys: {sorted(batchdata)}); set `label_key=None` for "
                    "unconditional training."
                )
            labels = torch.as_tensor(batchdata[self.label_key]).long().reshape(-1)
            infer_kwargs["class_labels"] = labels.to(device, non_blocking=non_blocking)
        return images, target, (), infer_kwargs


class MinSNRWeightedLoss(torch.nn.Module):
    """Min-SNR-gamma loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    Strategy", Eq. 3 and Sec. 3.4): per sample, the element-wise loss is weighted by ``min(SNR_t, gamma) / SNR_t``
    for epsilon prediction and ``min(SNR_t, gamma) / (SNR_t + 1)`` for v prediction, ``SNR_t = abar_t / (1 - abar_t)``.

    The timesteps of the batch are read from the prepare-batch strategy of the same iteration
    (:class:`ClassConditionedPrepareBatch` records them as ``last_timesteps``).

    Args:
        loss: :class:`DiffusionLoss` name of the element-wise loss.
        prepare_batch: the trainer's :class:`ClassConditionedPrepareBatch`.
        gamma: the SNR clamp (the paper's default 5).
        huber_delta: delta of the Huber loss.

    Raises:
        ValueError: ``gamma <= 0``, or a scheduler without ``alphas_cumprod`` (rectified flow).
    """

    def __init__(
        self, loss: str, prepare_batch: ClassConditionedPrepareBatch, gamma: float = 5.0, huber_delta: float = 1.0
    ) -> None:
        super().__init__()
        if not float(gamma) > 0:
            raise ValueError(f"`snr_gamma` must be > 0, got {gamma!r}.")
        if not hasattr(prepare_batch.scheduler, "alphas_cumprod"):
            raise ValueError("min-SNR weighting needs a variance-preserving scheduler (not rectified flow).")
        self.elementwise = get_loss_function(loss, huber_delta)
        self.elementwise.reduction = "none"
        self.prepare_batch, self.gamma = prepare_batch, float(gamma)

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The per-sample weights at ``timesteps``."""
        sched = self.prepare_batch.scheduler
        abar = sched.alphas_cumprod.to(timesteps.device)[timesteps].float()
        snr = abar / (1 - abar).clamp_min(1e-12)
        denom = snr + 1 if getattr(sched, "prediction_type", "epsilon") == "v_prediction" else snr
        return snr.clamp(max=self.gamma) / denom.clamp_min(1e-12)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = self.elementwise(pred, target).flatten(1).mean(1)
        return (self.weights(self.prepare_batch.last_timesteps.to(pred.device)) * per_sample).mean()


def amp_dtype_for(device: str | torch.device, name: str | None = None) -> torch.dtype:
    """The autocast dtype: ``name`` (``"bf16"`` / ``"fp16"``), or bf16 where the CUDA device supports it, else fp16
    (MONAI's trainer keeps its ``GradScaler`` either way; with bf16 it is not needed and does no harm)."""
    if name is not None:
        table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if str(name).lower() not in table:
            raise ValueError(f"`amp_dtype` must be 'bf16' or 'fp16', got {name!r}.")
        return table[str(name).lower()]
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def is_rank0() -> bool:
    """True unless running under an initialised ``torch.distributed`` group with rank > 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)


def build_diffusion_trainer(
    network: torch.nn.Module,
    scheduler: Scheduler,
    train_data_loader: Any,
    max_epochs: int,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    cond_drop_prob: float = DiffusionRecipe.cond_drop_prob,
    loss: str | DiffusionLoss | None = None,
    huber_delta: float = 1.0,
    snr_gamma: float | None = DiffusionRecipe.snr_gamma,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = DiffusionRecipe.lr,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    ema_model: torch.nn.Module | None = None,
    ema_decay: float | None = DiffusionRecipe.ema_decay,
    ema_warmup: bool = True,
    grad_clip_norm: float | None = DiffusionRecipe.grad_clip_norm,
    amp: bool = False,
    amp_dtype: str | None = None,
    compile: bool = False,
    channels_last: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep_last: int | None = 2,
    resume: bool = True,
    sample_dir: str | os.PathLike | None = None,
    sample_every: int = 5,
    sample_scheduler: Scheduler | None = None,
    sample_shape: tuple[int, ...] | None = None,
    sample_n_per_class: int = 8,
    sample_decode: tuple[torch.nn.Module, float] | None = None,
    guidance_scale: float = DiffusionRecipe.guidance_scale,
    sample_steps: int | None = None,
    image_key: str = "image",
    label_key: str | None = "label",
    progress: bool = False,
    train_handlers: Sequence | None = None,
    generator: torch.Generator | None = None,
    decollate: bool = True,
) -> SupervisedTrainer:
    """Wire a class-conditional (or unconditional) diffusion ``SupervisedTrainer``.

    Handlers, in order: resume (``resume``), gradient clipping, EMA, throughput, checkpoints every
    ``checkpoint_every`` epochs and at the end, a sample grid every ``sample_every`` epochs, a progress bar, then
    ``train_handlers``; checkpoints and grids on rank 0 only. The EMA model is ``trainer.ema_model`` (``None``
    without EMA); the loss is against the scheduler's target (:func:`diffusion_target`); defaults: the recipe's.

    Args:
        network: the denoiser (``num_class_embeds = num_classes + 1`` when conditional), already on ``device``.
        scheduler, train_data_loader: training scheduler; a loader of dicts with ``image_key`` (and ``label_key``).
        max_epochs, device: total epochs (a resumed run stops at the same total); the device (AMP only on CUDA).
        num_classes, cond_drop_prob: real classes (``None``: unconditional, no labels); CFG label dropout.
        loss, huber_delta, snr_gamma: :class:`DiffusionLoss` name (``None``: the objective's,
            :func:`~monai_synth.engines.recipe.default_loss`), Huber delta, min-SNR-gamma weighting (``None``: none).
        optimizer, lr, betas, eps, weight_decay: a custom optimizer, otherwise Adam(lr, betas, eps, weight_decay).
        ema_model, ema_decay, ema_warmup: a custom EMA model, otherwise one created from ``ema_decay`` /
            ``ema_warmup`` (:mod:`monai_synth.handlers.ema`); ``ema_decay=None`` disables EMA.
        grad_clip_norm, amp, amp_dtype: clip the gradient norm (``None``: no clipping); mixed precision (CUDA only;
            MONAI's autocast + ``GradScaler``) in ``"bf16"`` or ``"fp16"`` (``None``: bf16 where the GPU supports it,
            else fp16, :func:`amp_dtype_for`).
        compile, channels_last: ``torch.compile`` inside MONAI's trainer (helps after a long first step); the
            channels-last memory format (faster convolutions on tensor cores).
        checkpoint_dir, checkpoint_every, keep_last, resume: checkpointing.
        sample_dir, sample_every, sample_scheduler, sample_shape, sample_n_per_class, guidance_scale, sample_steps:
            sample grids (``sample_dir=None``: none); default sampler DDIM / Euler (flow), :func:`default_sample_steps`.
        sample_decode: ``(autoencoder, scale_factor)`` when the network is a latent model: grids are decoded.
        image_key, label_key, progress: batch keys; attach an Ignite ``ProgressBar``.
        train_handlers, generator: more handlers (e.g. MONAI's ``MLFlowHandler``); a generator for noise / t / dropout.
        decollate: decollate ``engine.state.output`` (MONAI's default; the MLflow handler expects a list).

    Returns:
        the trainer; call ``trainer.run()``.
    """
    device = torch.device(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(network.parameters(), lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if ema_model is None and ema_decay is not None:
        ema_model = create_ema_model(network, decay=ema_decay, warmup=ema_warmup).to(device)
    handlers = _trainer_handlers(
        network, scheduler, ema_model, grad_clip_norm, checkpoint_dir, checkpoint_every, keep_last, resume,
        sample_dir, sample_every, sample_scheduler, sample_shape, sample_n_per_class, guidance_scale, sample_steps,
        num_classes, progress, sample_decode,
    )  # fmt: skip
    labels = None if num_classes is None else label_key  # unconditional training reads no labels
    prepare = ClassConditionedPrepareBatch(scheduler, image_key, labels, generator=generator)
    loss_fn = _loss_function(loss, prepare, snr_gamma, huber_delta)
    use_amp = bool(amp) and device.type == "cuda"
    network = network.to(memory_format=torch.channels_last) if channels_last else network
    trainer = SupervisedTrainer(
        device=device, max_epochs=int(max_epochs), train_data_loader=train_data_loader, network=network,
        optimizer=optimizer, loss_function=loss_fn, prepare_batch=prepare, decollate=decollate,
        inferer=ClassConditionedDiffusionInferer(scheduler, num_classes, cond_drop_prob, generator=generator),
        train_handlers=handlers + list(train_handlers or []), amp=use_amp, compile=bool(compile),
        amp_kwargs={"dtype": amp_dtype_for(device, amp_dtype)} if use_amp else None,
    )  # fmt: skip
    trainer.ema_model = ema_model
    return trainer


def _loss_function(
    loss: str | DiffusionLoss | None,
    prepare: ClassConditionedPrepareBatch,
    snr_gamma: float | None = None,
    huber_delta: float = 1.0,
) -> torch.nn.Module:
    """The loss module of :func:`build_diffusion_trainer`.

    Args:
        loss: :class:`DiffusionLoss` name; ``None``: :func:`~monai_synth.engines.recipe.default_loss` of the
            objective of ``prepare.scheduler`` (``l2`` for rectified flow, ``l1`` for epsilon / v-prediction).
        prepare: the trainer's prepare-batch (its scheduler, and the timesteps min-SNR weighting reads).
        snr_gamma: min-SNR-gamma weighting (:class:`MinSNRWeightedLoss`; Huber uses delta 1); ``None``: none.
        huber_delta: delta of the Huber loss.
    """
    if loss is None:
        loss = default_loss("flow" if is_flow(prepare.scheduler) else prepare.scheduler.prediction_type)
    if snr_gamma is not None:
        return MinSNRWeightedLoss(loss, prepare, snr_gamma)
    return get_loss_function(loss, huber_delta)


def _trainer_handlers(
    network: torch.nn.Module,
    scheduler: Scheduler,
    ema_model: torch.nn.Module | None,
    grad_clip_norm: float | None,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int,
    keep_last: int | None,
    resume: bool,
    sample_dir: str | os.PathLike | None,
    sample_every: int,
    sample_scheduler: Scheduler | None,
    sample_shape: tuple[int, ...] | None,
    sample_n_per_class: int,
    guidance_scale: float,
    sample_steps: int,
    num_classes: int | None,
    progress: bool,
    sample_decode: tuple[torch.nn.Module, float] | None = None,
) -> list:
    """The handlers of :func:`build_diffusion_trainer`, in order (see its docstring)."""
    rank0 = is_rank0()
    handlers: list = []
    if checkpoint_dir is not None and resume:
        handlers.append(CheckpointResumer(checkpoint_dir, ema_model=ema_model))
    handlers.append(NonFiniteLossHandler(checkpoint_dir))  # before EMA and savers: a NaN step is never kept
    if grad_clip_norm is not None:
        handlers.append(GradientClipHandler(grad_clip_norm))
    if ema_model is not None:
        handlers.append(EMAHandler(ema_model))
    handlers.append(ThroughputHandler())
    if checkpoint_dir is not None and rank0:
        handlers.append(
            AtomicCheckpointSaver(checkpoint_dir, ema_model=ema_model, save_every=checkpoint_every, keep_last=keep_last)
        )
    if sample_dir is not None and rank0:
        if sample_shape is None:
            raise ValueError("`sample_shape` (C, *spatial) is required when `sample_dir` is set.")
        if sample_scheduler is None:
            sample_scheduler = sampler_from(scheduler, "rflow" if isinstance(scheduler, RFlowScheduler) else "ddim")
        if sample_steps is None:
            sample_steps = default_sample_steps(sample_scheduler)
        handlers.append(
            SampleGridHandler(
                ema_model if ema_model is not None else network,
                sample_scheduler,
                sample_dir,
                image_shape=tuple(sample_shape),
                num_classes=num_classes,
                n_per_class=sample_n_per_class,
                every_n_epochs=sample_every,
                guidance_scale=guidance_scale,
                num_inference_steps=sample_steps,
                decode=sample_decode,
            )
        )
    if progress and rank0:
        from ignite.handlers import ProgressBar

        handlers.append(ProgressBarHandler(ProgressBar(persist=False)))
    return handlers
