"""Train and load the class-conditional diffusion generator of the augmentation study under a recipe's budget."""

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

from monai_synth.apps.augmentation.autoencoder import (
    AUTOENCODER_DONE,
    AutoencoderResult,
    load_autoencoder,
    train_autoencoder,
)
from monai_synth.apps.augmentation.items import DiffusionItemsDataset
from monai_synth.data.ranges import from_unit_range
from monai_synth.engines.diffusion import build_diffusion_trainer
from monai_synth.engines.recipe import DiffusionRecipe, GeneratorKind
from monai_synth.handlers.checkpoint import latest_checkpoint, load_weights_for_sampling
from monai_synth.handlers.ema import unwrap_model
from monai_synth.handlers.sample_grid import SampleGridHandler
from monai_synth.handlers.training import LossHistoryHandler, TimeBudgetHandler, WarmupLrHandler
from monai_synth.networks.autoencoder import encode_latents
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = ["DiffusionItemsDataset", "GeneratorResult", "load_generator", "train_generator"]

GENERATOR_DONE = "generator_done.json"


@dataclass
class GeneratorResult:
    """A trained generator: the EMA network, the training scheduler and what training measured.

    For a latent generator ``autoencoder`` and ``scale_factor`` decode its samples (``D(z / s)``),
    ``autoencoder_stats`` holds the first stage's training figures, and ``wall_s`` covers both stages.
    """

    model: torch.nn.Module
    scheduler: Any
    num_classes: int
    epochs: int
    iterations: int
    wall_s: float
    img_per_s: float
    checkpoint_dir: str
    final_loss: float = float("nan")
    history: dict[str, list] = field(default_factory=dict)
    generator_kind: str = GeneratorKind.PIXEL
    autoencoder: torch.nn.Module | None = None
    scale_factor: float = 1.0
    autoencoder_stats: dict[str, Any] = field(default_factory=dict)


def train_generator(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe | None = None,
    out_dir: str | os.PathLike = "./outputs/generator",
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    sample_every: int = 0,
    progress: bool = False,
    train_handlers: Sequence | None = None,
    autoencoder_handlers: Sequence | None = None,
    amp: bool = True,
    compile: bool = False,
) -> GeneratorResult:
    """Train the class-conditional diffusion generator on in-memory items under the recipe's budget.

    Checkpoints (model, EMA, optimizer, epoch) are written atomically to ``out_dir/checkpoints`` every epoch; a
    second call with the same ``out_dir`` resumes from the latest one.

    A latent recipe (``recipe.is_latent``, the default from 128 px) first trains the autoencoder in
    ``out_dir/autoencoder`` (``recipe.autoencoder.budget_fraction`` of ``train_minutes``; reused when finished), encodes
    the training images once (with their mirror images when ``recipe.hflip``), and trains the UNet on the scaled
    latents for the rest of the budget.

    Args:
        train_items: ``{"image": (1, H, W) in [0, 1], "label": int}`` at ``recipe.image_size``.
        recipe: settings (default :class:`DiffusionRecipe`).
        out_dir: checkpoints and sample grids.
        num_classes: number of classes (default: ``max(label) + 1``).
        device: torch device.
        sample_every: write a sample grid every this many epochs (0: never).
        progress: show a progress bar.
        train_handlers: extra handlers (e.g. MONAI's ``MLFlowHandler``).
        autoencoder_handlers: extra handlers of the autoencoder's trainer (latent recipes).
        amp: mixed precision of the UNet's training on CUDA (bf16 where supported, else fp16; ignored on CPU).
        compile: ``torch.compile`` the UNet.

    Returns:
        :class:`GeneratorResult` with the EMA network in eval mode.
    """
    recipe = recipe or DiffusionRecipe()
    if not train_items:
        raise ValueError("`train_items` is empty: the generator needs labelled training images.")
    shape = tuple(np.asarray(train_items[0]["image"]).shape)
    if shape[-2:] != (recipe.image_size, recipe.image_size):
        raise ValueError(
            f"training images are {shape[-2:]} but recipe.image_size is {recipe.image_size}; "
            "load the data at the recipe's size (load_labelled_splits(image_size=...))."
        )
    labels = [int(it["label"]) for it in train_items]
    num_classes = int(num_classes if num_classes is not None else max(labels) + 1)
    out_dir = ensure_writable_dir(out_dir)
    budget = None if recipe.train_minutes is None else recipe.train_minutes * 60.0
    if not recipe.is_latent:
        return _train_diffusion(
            train_items, recipe, out_dir, num_classes, device, budget, sample_every, progress, train_handlers,
            speed=(amp, compile),
        )  # fmt: skip
    ae = _first_stage(train_items, recipe, out_dir, device, progress, autoencoder_handlers)
    t0 = time.perf_counter()
    latents = _latent_items(ae.model, ae.scale_factor, train_items, recipe.hflip)
    # the budget covers both stages: the autoencoder's training and the encoding count against it
    left = None if budget is None else max(budget - ae.wall_s - (time.perf_counter() - t0), 1.0)
    for h in train_handlers or []:  # grids of a latent model are drawn in latent space and decoded
        if isinstance(h, SampleGridHandler):
            h.decode_with(ae.model, ae.scale_factor, tuple(latents[0]["image"].shape))
    gen = _train_diffusion(
        latents, recipe, out_dir, num_classes, device, left, sample_every, progress, train_handlers,
        decode=(ae.model, ae.scale_factor), speed=(amp, compile),
    )  # fmt: skip
    gen.generator_kind, gen.autoencoder, gen.scale_factor = GeneratorKind.LATENT, ae.model, ae.scale_factor
    gen.autoencoder_stats = {k: getattr(ae, k) for k in ("epochs", "iterations", "wall_s", "img_per_s", "final_loss")}
    gen.wall_s += ae.wall_s
    return gen


def _first_stage(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe,
    out_dir: Path,
    device: Any,
    progress: bool,
    handlers: Sequence | None,
) -> AutoencoderResult:
    """The finished autoencoder in ``out_dir/autoencoder``, else train (or resume) it with its budget share."""
    ae_dir = out_dir / "autoencoder"
    if (ae_dir / AUTOENCODER_DONE).is_file():
        return load_autoencoder(ae_dir, recipe, device=device)
    minutes = None if recipe.train_minutes is None else recipe.train_minutes * recipe.autoencoder.budget_fraction
    return train_autoencoder(
        train_items, recipe, ae_dir, minutes=minutes, device=device, progress=progress, train_handlers=handlers
    )


def _latent_items(
    autoencoder: torch.nn.Module, scale_factor: float, items: Sequence[Mapping[str, Any]], hflip: bool
) -> list[dict[str, Any]]:
    """``{"image": s * mu(x), "label"}`` per item, and of its mirror image when ``hflip`` (encoded once: a flipped
    latent is not the latent of the flipped image)."""
    images = from_unit_range(
        torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])
    )
    labels = [int(it["label"]) for it in items]
    if hflip:
        images, labels = torch.cat([images, images.flip(-1)]), labels + labels
    z = encode_latents(autoencoder, images, scale_factor).cpu()
    return [{"image": z[i], "label": c} for i, c in enumerate(labels)]


def _train_diffusion(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe,
    out_dir: Path,
    num_classes: int,
    device: str | torch.device,
    budget_s: float | None,
    sample_every: int,
    progress: bool,
    train_handlers: Sequence | None,
    decode: tuple[torch.nn.Module, float] | None = None,
    speed: tuple[bool, bool] = (True, False),
) -> GeneratorResult:
    """Train the UNet on ``train_items`` (images in [0, 1], or latents when ``decode`` is given); ``speed`` is
    ``(amp, compile)``."""
    shape = tuple(np.asarray(train_items[0]["image"]).shape)
    torch.manual_seed(recipe.seed)
    device = torch.device(device)
    network, scheduler = recipe.build_network(num_classes, in_channels=shape[0]), recipe.build_scheduler()
    network = network.to(device)
    loader = _loader(train_items, recipe, unit_range=decode is None)
    losses = LossHistoryHandler()
    handlers: list = [losses]
    budget = TimeBudgetHandler(budget_s) if budget_s is not None else None
    if budget is not None:
        handlers.append(budget)
    handlers.extend(train_handlers or [])
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8)
    handlers.insert(
        0, WarmupLrHandler(optimizer, recipe.lr, recipe.warmup_iters, anneal_fraction=recipe.lr_anneal_fraction,
                           budget=budget),
    )  # fmt: skip
    trainer = build_diffusion_trainer(
        network,
        scheduler,
        loader,
        max_epochs=recipe.epochs,
        device=device,
        num_classes=num_classes,
        cond_drop_prob=recipe.cond_drop_prob,
        loss=recipe.loss,
        snr_gamma=recipe.snr_gamma,
        optimizer=optimizer,
        ema_decay=recipe.ema_decay,
        ema_warmup=True,
        grad_clip_norm=recipe.grad_clip_norm,
        checkpoint_dir=out_dir / "checkpoints",
        checkpoint_every=1,
        sample_dir=(out_dir / "samples") if sample_every else None,
        sample_every=max(1, sample_every),
        sample_shape=shape,
        sample_scheduler=recipe.sampling_scheduler(scheduler) if sample_every else None,
        sample_decode=decode,
        amp=speed[0],
        compile=speed[1],
        guidance_scale=recipe.guidance_scale,
        sample_steps=recipe.sample_steps,
        progress=progress,
        train_handlers=handlers,
    )
    t0 = time.perf_counter()
    trainer.run()
    stats = _training_stats(trainer, losses, time.perf_counter() - t0, recipe.batch_size, int(shape[0]))
    model = unwrap_model(trainer.ema_model if trainer.ema_model is not None else network).eval()
    with atomic_path(out_dir / GENERATOR_DONE) as tmp:
        tmp.write_text(json.dumps({**stats, "generator_kind": recipe.generator_kind}))
    return GeneratorResult(
        model=model,
        scheduler=scheduler,
        num_classes=num_classes,
        checkpoint_dir=str(out_dir / "checkpoints"),
        **{k: v for k, v in stats.items() if k != "in_channels"},
    )


def _loader(
    items: Sequence[Mapping[str, Any]], recipe: DiffusionRecipe, unit_range: bool = True
) -> torch.utils.data.DataLoader:
    # latents were encoded with their mirror images already (_latent_items): no flips in latent space
    ds = DiffusionItemsDataset(items, recipe.hflip and unit_range, recipe.seed, unit_range=unit_range)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=len(ds) > recipe.batch_size,
        generator=torch.Generator().manual_seed(recipe.seed),
    )


def _training_stats(
    trainer: Any, losses: LossHistoryHandler, wall: float, batch_size: int, in_channels: int
) -> dict[str, Any]:
    """What :data:`GENERATOR_DONE` records: epochs, iterations, seconds, img/s, losses, input channels."""
    iters = int(trainer.state.iteration)
    img_per_s = float(trainer.state.metrics.get("img_per_s", float("nan")))
    if not math.isfinite(img_per_s):  # the throughput handler reports at epoch end only
        img_per_s = (iters - losses.start_iteration) * batch_size / max(wall, 1e-9)
    return {
        "epochs": int(trainer.state.epoch),
        "iterations": iters,
        "wall_s": wall,
        "img_per_s": img_per_s,
        "final_loss": losses.history["loss"][-1] if losses.history["loss"] else float("nan"),
        "history": losses.history,
        "in_channels": in_channels,
    }


def load_generator(
    out_dir: str | os.PathLike, recipe: DiffusionRecipe, num_classes: int, device: str | torch.device = "cpu"
) -> GeneratorResult:
    """Load the EMA generator that :func:`train_generator` finished in ``out_dir`` (its latest checkpoint).

    Raises:
        FileNotFoundError: when ``out_dir`` holds no finished training (no ``generator_done.json``).
    """
    out_dir = Path(out_dir)
    done = out_dir / GENERATOR_DONE
    if not done.is_file():
        raise FileNotFoundError(f"{str(out_dir)!r} holds no finished generator training ({GENERATOR_DONE} is missing).")
    stats = json.loads(done.read_text())
    ckpt = latest_checkpoint(out_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {str(out_dir / 'checkpoints')!r}.")
    kind = stats.get("generator_kind", GeneratorKind.PIXEL)
    if kind != recipe.generator_kind:
        raise ValueError(
            f"{str(out_dir)!r} holds a {kind} generator but the recipe asks for {recipe.generator_kind!r}: set "
            f"generator_kind={kind!r} or train into a new folder."
        )
    network = recipe.build_network(num_classes, in_channels=int(stats.get("in_channels", 1)))
    model = load_weights_for_sampling(network, ckpt, use_ema=True).to(device)
    scheduler = recipe.build_scheduler()
    gen = GeneratorResult(
        model=model,
        scheduler=scheduler,
        num_classes=num_classes,
        checkpoint_dir=str(out_dir / "checkpoints"),
        generator_kind=kind,
        **{k: stats[k] for k in ("epochs", "iterations", "wall_s", "img_per_s", "final_loss", "history")},
    )
    if kind == GeneratorKind.LATENT:
        ae = load_autoencoder(out_dir / "autoencoder", recipe, device=device)
        gen.autoencoder, gen.scale_factor = ae.model, ae.scale_factor
        gen.autoencoder_stats = {
            k: getattr(ae, k) for k in ("epochs", "iterations", "wall_s", "img_per_s", "final_loss")
        }
        gen.wall_s += ae.wall_s
    return gen
