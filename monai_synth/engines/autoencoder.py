"""Training the latent-diffusion first stage on MONAI's ``SupervisedTrainer``: KL autoencoder + patch adversary.

One iteration (Rombach et al. 2022, Sec. 3.1 and App. G; Esser et al. 2021 for the adversarial part):

1. autoencoder step on ``L_G = |x - D(E(x))|_1 + kl_weight * KL(q(z|x) || N(0, I)) + adv_weight * L_adv``, where
   ``L_adv`` is the least-squares generator loss of MONAI's ``PatchAdversarialLoss`` on the discriminator's logits of
   the reconstruction (from iteration ``adv_start_iters`` on);
2. discriminator step on ``adv_weight * (L_D(real) + L_D(fake)) / 2`` with the reconstruction detached.

The engine is a ``SupervisedTrainer`` whose ``network``/``optimizer`` are the autoencoder's, so every handler of the
diffusion trainer (resume, atomic checkpoints, EMA, throughput, progress, MLflow) works unchanged; the discriminator
and its optimizer travel in the checkpoints as ``others``. Images are in [-1, 1] like the diffusion model's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import IterationEvents, SupervisedTrainer
from monai.losses import PatchAdversarialLoss

from monai_synth.engines.diffusion import is_rank0
from monai_synth.handlers.checkpoint import AtomicCheckpointSaver, CheckpointResumer
from monai_synth.handlers.ema import EMAHandler, create_ema_model
from monai_synth.handlers.training import (
    GradientClipHandler,
    NonFiniteLossHandler,
    ProgressBarHandler,
    ThroughputHandler,
)
from monai_synth.networks.autoencoder import encode_latents

__all__ = ["AutoencoderIteration", "build_autoencoder_trainer", "kl_divergence", "latent_scale_factor"]


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, 1))`` summed over latent elements, averaged over the batch (Kingma & Welling
    2014, App. B): ``0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)``."""
    var = z_sigma.pow(2)
    kl = 0.5 * (z_mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(dim=1).mean()


def latent_scale_factor(autoencoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> float:
    """``1 / std(z)`` over the posterior means of ``images`` (Rombach et al. 2022, Sec. 4.3.2 / App. G), so the
    diffusion model sees latents of unit variance like its Gaussian prior.

    Raises:
        ValueError: when the latents have no spread (an untrained or collapsed encoder).
    """
    z = encode_latents(autoencoder, images, 1.0, batch_size)
    std = float(z.float().std())
    if not (math.isfinite(std) and std > 1e-8):
        raise ValueError(f"the autoencoder's latents have standard deviation {std!r}: train the autoencoder first.")
    return 1.0 / std


class AutoencoderIteration:
    """``iteration_update`` of the autoencoder trainer (see the module docstring for the two steps).

    Args:
        discriminator: MONAI ``PatchDiscriminator`` (``None`` or ``adv_weight = 0``: no adversarial terms).
        disc_optimizer: its optimizer.
        kl_weight: weight of the KL term.
        adv_weight: weight of the adversarial terms.
        adv_start_iters: first iteration (1-based, as Ignite counts) with adversarial terms.
        image_key: batch key of the images.
    """

    def __init__(
        self,
        discriminator: torch.nn.Module | None,
        disc_optimizer: torch.optim.Optimizer | None,
        kl_weight: float = 1e-6,
        adv_weight: float = 0.01,
        adv_start_iters: int = 0,
        image_key: str = "image",
    ) -> None:
        if discriminator is not None and adv_weight > 0 and disc_optimizer is None:
            raise ValueError("`disc_optimizer` is required with a discriminator and adv_weight > 0.")
        self.discriminator, self.disc_optimizer = discriminator, disc_optimizer
        self.kl_weight, self.adv_weight = float(kl_weight), float(adv_weight)
        self.adv_start_iters = int(adv_start_iters)
        self.image_key = image_key
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")

    def adversarial_now(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` has adversarial terms."""
        return self.discriminator is not None and self.adv_weight > 0 and iteration >= self.adv_start_iters

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        images = batchdata[self.image_key].to(engine.state.device, non_blocking=engine.non_blocking)
        adversarial = self.adversarial_now(engine.state.iteration)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        recon, z_mu, z_sigma = engine.network(images)
        recon_loss = engine.loss_function(recon, images)
        kl = kl_divergence(z_mu, z_sigma)
        loss = recon_loss + self.kl_weight * kl
        g_adv = torch.zeros((), device=images.device)
        if adversarial:
            g_adv = self.adv_loss(self.discriminator(recon)[-1], target_is_real=True, for_discriminator=False)
            loss = loss + self.adv_weight * g_adv
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"autoencoder loss is {float(loss.detach())} at iteration {engine.state.iteration}: lower the learning "
                "rate or check the images for NaN/inf."
            )
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)  # gradient clipping
        engine.optimizer.step()
        d_loss = torch.zeros((), device=images.device)
        if adversarial:
            self.discriminator.train()
            self.disc_optimizer.zero_grad(set_to_none=True)
            fake = self.adv_loss(self.discriminator(recon.detach())[-1], target_is_real=False, for_discriminator=True)
            real = self.adv_loss(self.discriminator(images)[-1], target_is_real=True, for_discriminator=True)
            d_loss = self.adv_weight * 0.5 * (fake + real)
            d_loss.backward()
            self.disc_optimizer.step()
        return {
            "image": images,
            "pred": recon.detach(),
            "loss": loss.detach(),
            "recon_loss": recon_loss.detach(),
            "kl_loss": kl.detach(),
            "adv_loss": g_adv.detach(),
            "disc_loss": d_loss.detach(),
        }


def build_autoencoder_trainer(
    autoencoder: torch.nn.Module,
    train_data_loader: Any,
    max_epochs: int,
    device: str | torch.device = "cpu",
    discriminator: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
    lr: float = 5e-4,
    disc_lr: float = 5e-4,
    kl_weight: float = 1e-6,
    adv_weight: float = 0.01,
    adv_start_iters: int = 0,
    ema_decay: float | None = 0.999,
    grad_clip_norm: float | None = 1.0,
    checkpoint_dir: str | os.PathLike | None = None,
    keep_last: int | None = 2,
    resume: bool = True,
    progress: bool = False,
    train_handlers: Sequence | None = None,
    image_key: str = "image",
) -> SupervisedTrainer:
    """Wire the autoencoder ``SupervisedTrainer`` (handlers as in the diffusion trainer: resume, gradient clipping,
    EMA, throughput, checkpoints every epoch and when a budget stops the run, progress, then ``train_handlers``).

    Args:
        autoencoder: MONAI ``AutoencoderKL`` on ``device``.
        train_data_loader: yields dicts with ``image_key`` images in [-1, 1].
        max_epochs: total epochs (a resumed run stops at the same total).
        device: training device.
        discriminator: MONAI ``PatchDiscriminator`` on ``device`` (``None``: reconstruction + KL only).
        optimizer, disc_optimizer: custom optimizers; otherwise Adam(lr) / Adam(disc_lr), betas (0.5, 0.9) as in
            Esser et al. 2021.
        lr, disc_lr, kl_weight, adv_weight, adv_start_iters: see :class:`AutoencoderIteration`.
        ema_decay: EMA of the autoencoder (``trainer.ema_model``; ``None``: none).
        grad_clip_norm: autoencoder gradient-norm clipping.
        checkpoint_dir, keep_last, resume: checkpointing (the discriminator and its optimizer included).
        progress: attach an Ignite ``ProgressBar``.
        train_handlers: more handlers (e.g. MONAI's ``MLFlowHandler``).
        image_key: batch key.

    Returns:
        the trainer; call ``trainer.run()``.
    """
    device = torch.device(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(autoencoder.parameters(), lr=float(lr), betas=(0.5, 0.9))
    if discriminator is not None and disc_optimizer is None:
        disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=float(disc_lr), betas=(0.5, 0.9))
    ema_model = create_ema_model(autoencoder, decay=ema_decay).to(device) if ema_decay is not None else None
    if discriminator is not None and adv_weight <= 0:
        discriminator = None  # nothing would train it
    others = {"discriminator": discriminator, "disc_optimizer": disc_optimizer} if discriminator is not None else {}
    handlers: list = []
    if checkpoint_dir is not None and resume:
        handlers.append(CheckpointResumer(checkpoint_dir, ema_model=ema_model, others=others))
    handlers.append(NonFiniteLossHandler(checkpoint_dir))  # before EMA and savers: a NaN step is never kept
    if grad_clip_norm is not None:
        handlers.append(GradientClipHandler(grad_clip_norm))
    if ema_model is not None:
        handlers.append(EMAHandler(ema_model))
    handlers.append(ThroughputHandler())
    if checkpoint_dir is not None and is_rank0():
        handlers.append(AtomicCheckpointSaver(checkpoint_dir, ema_model=ema_model, keep_last=keep_last, others=others))
    if progress and is_rank0():
        from ignite.handlers import ProgressBar

        handlers.append(ProgressBarHandler(ProgressBar(persist=False)))
    iteration = AutoencoderIteration(discriminator, disc_optimizer, kl_weight, adv_weight, adv_start_iters, image_key)
    trainer = SupervisedTrainer(
        device=device, max_epochs=int(max_epochs), train_data_loader=train_data_loader, network=autoencoder,
        optimizer=optimizer, loss_function=torch.nn.L1Loss(), iteration_update=iteration,
        train_handlers=handlers + list(train_handlers or []), decollate=False,
    )  # fmt: skip
    trainer.ema_model = ema_model
    trainer.discriminator = discriminator
    return trainer
