"""Train and load the first stage of a latent generator: the KL autoencoder, with its latent scale factor."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_synth.apps.augmentation.items import DiffusionItemsDataset
from monai_synth.data.ranges import from_unit_range, to_unit_range
from monai_synth.engines.autoencoder import build_autoencoder_trainer, latent_scale_factor
from monai_synth.engines.recipe import DiffusionRecipe
from monai_synth.handlers.checkpoint import latest_checkpoint, load_weights_for_sampling
from monai_synth.handlers.training import LossHistoryHandler, TimeBudgetHandler
from monai_synth.metrics.similarity import reconstruction_quality
from monai_synth.networks.autoencoder import build_patch_discriminator, decode_latents, encode_latents
from monai_synth.utils.io import atomic_path, ensure_writable_dir
from monai_synth.utils.module import unwrap_model

__all__ = ["AUTOENCODER_DONE", "AutoencoderResult", "load_autoencoder", "reconstruction_report", "train_autoencoder"]

AUTOENCODER_DONE = "autoencoder_done.json"
_SCALE_IMAGES = 1000  # images whose latents set the scale factor


@dataclass
class AutoencoderResult:
    """A trained autoencoder (EMA weights, eval mode), its latent scale factor and what training measured."""

    model: torch.nn.Module
    scale_factor: float
    epochs: int
    iterations: int
    wall_s: float
    img_per_s: float
    checkpoint_dir: str
    final_loss: float = float("nan")
    history: dict[str, list] = field(default_factory=dict)


def _images(items: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])


def train_autoencoder(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe,
    out_dir: str | os.PathLike,
    minutes: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    train_handlers: Sequence | None = None,
) -> AutoencoderResult:
    """Train ``recipe.autoencoder`` on the images of ``train_items`` (``(C, S, S)`` in [0, 1], ``S = image_size``).

    Checkpoints (autoencoder, EMA, discriminator, both optimizers) go to ``out_dir/checkpoints`` every epoch and when
    the budget stops training; a second call resumes. When training ends the scale factor ``1 / std(z)`` is computed
    on up to 1000 training images and stored with the statistics in ``out_dir/autoencoder_done.json``.

    Args:
        train_items: training items (labels are not used).
        recipe: the generator recipe (its ``autoencoder``, ``image_size``, ``hflip``, ``seed``).
        out_dir: output folder.
        minutes: wall-clock budget (``None``: ``recipe.autoencoder.epochs`` only).
        device: torch device.
        progress: progress bar.
        train_handlers: more handlers (e.g. MONAI's ``MLFlowHandler``).
    """
    ae = recipe.autoencoder
    images = _images(train_items)
    torch.manual_seed(recipe.seed)
    device = torch.device(device)
    network = ae.build_network(recipe.image_size, in_channels=int(images.shape[1])).to(device)
    # PatchGAN depth: 3 strided layers (70 px receptive field) from 64 px, fewer below (InstanceNorm needs 2x2 maps)
    layers = max(1, min(3, int(math.log2(recipe.image_size)) - 3))
    disc = (
        build_patch_discriminator(int(images.shape[1]), num_layers_d=layers).to(device) if ae.adv_weight > 0 else None
    )
    ds = DiffusionItemsDataset(train_items, recipe.hflip, recipe.seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=ae.batch_size, shuffle=True, drop_last=len(ds) > ae.batch_size,
        generator=torch.Generator().manual_seed(recipe.seed),
    )  # fmt: skip
    out_dir = ensure_writable_dir(out_dir)
    losses = LossHistoryHandler()
    handlers: list = [losses]
    if minutes is not None:
        handlers.append(TimeBudgetHandler(float(minutes) * 60.0))
    trainer = build_autoencoder_trainer(
        network, loader, max_epochs=ae.epochs, device=device, discriminator=disc, lr=ae.lr, disc_lr=ae.disc_lr,
        kl_weight=ae.kl_weight, adv_weight=ae.adv_weight, adv_start_iters=ae.adv_start_iters,
        ema_decay=ae.ema_decay, checkpoint_dir=out_dir / "checkpoints", progress=progress,
        train_handlers=handlers + list(train_handlers or []),
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - t0
    model = unwrap_model(trainer.ema_model if trainer.ema_model is not None else network).eval()
    scale = latent_scale_factor(model, from_unit_range(images[:_SCALE_IMAGES]))
    iters = int(trainer.state.iteration)
    img_per_s = float(trainer.state.metrics.get("img_per_s", float("nan")))
    if not math.isfinite(img_per_s):
        img_per_s = (iters - losses.start_iteration) * ae.batch_size / max(wall, 1e-9)
    stats = {
        "scale_factor": scale, "epochs": int(trainer.state.epoch), "iterations": iters, "wall_s": wall,
        "img_per_s": img_per_s, "final_loss": losses.history["loss"][-1] if losses.history["loss"] else float("nan"),
        "history": losses.history, "in_channels": int(images.shape[1]),
    }  # fmt: skip
    with atomic_path(out_dir / AUTOENCODER_DONE) as tmp:
        tmp.write_text(json.dumps(stats))
    return AutoencoderResult(model=model, checkpoint_dir=str(out_dir / "checkpoints"), **_fields(stats))


def _fields(stats: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("scale_factor", "epochs", "iterations", "wall_s", "img_per_s", "final_loss", "history")
    return {k: stats[k] for k in keys}


def load_autoencoder(
    out_dir: str | os.PathLike, recipe: DiffusionRecipe, device: str | torch.device = "cpu"
) -> AutoencoderResult:
    """The autoencoder :func:`train_autoencoder` finished in ``out_dir`` (EMA weights of its latest checkpoint).

    Raises:
        FileNotFoundError: when ``out_dir`` holds no finished training (no ``autoencoder_done.json``) or no checkpoint.
    """
    out_dir = Path(out_dir)
    done = out_dir / AUTOENCODER_DONE
    if not done.is_file():
        raise FileNotFoundError(
            f"{str(out_dir)!r} holds no finished autoencoder training ({AUTOENCODER_DONE} is missing)."
        )
    stats = json.loads(done.read_text())
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {str(out_dir / 'checkpoints')!r}.")
    network = recipe.autoencoder.build_network(recipe.image_size, in_channels=int(stats.get("in_channels", 1)))
    model = load_weights_for_sampling(network, ckpt, use_ema=True).to(device)
    return AutoencoderResult(model=model, checkpoint_dir=str(out_dir / "checkpoints"), **_fields(stats))


def reconstruction_report(
    autoencoder: torch.nn.Module, items: Sequence[Mapping[str, Any]], batch_size: int = 64
) -> dict[str, float]:
    """PSNR / SSIM / MS-SSIM of ``items`` (images in [0, 1]) against their reconstructions ``D(mu(x))``."""
    images = _images(items)
    latents = encode_latents(autoencoder, from_unit_range(images), 1.0, batch_size)
    recon = to_unit_range(decode_latents(autoencoder, latents, 1.0, batch_size).cpu())
    return reconstruction_quality(images, recon)
