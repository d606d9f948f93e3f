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

from monai_synth.data.ranges import from_unit_range
from monai_synth.engines.diffusion import build_diffusion_trainer
from monai_synth.engines.recipe import DiffusionRecipe
from monai_synth.handlers.checkpoint import latest_checkpoint, load_weights_for_sampling
from monai_synth.handlers.ema import unwrap_model
from monai_synth.handlers.training import LossHistoryHandler, TimeBudgetHandler, WarmupLrHandler
from monai_synth.utils.io import atomic_path, ensure_writable_dir

__all__ = ["DiffusionItemsDataset", "GeneratorResult", "load_generator", "train_generator"]

GENERATOR_DONE = "generator_done.json"


@dataclass
class GeneratorResult:
    """A trained generator: the EMA network, the training scheduler and what training measured."""

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


class DiffusionItemsDataset(torch.utils.data.Dataset):
    """In-memory items ``{"image": (C, H, W) in [0, 1], "label"}`` -> the model's [-1, 1], optionally flipped.

    Args:
        items: the training items.
        hflip: random horizontal flips (probability 0.5).
        seed: seed of the flips.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], hflip: bool, seed: int) -> None:
        self.images = torch.stack([torch.as_tensor(np.asarray(it["image"]), dtype=torch.float32) for it in items])
        self.images = from_unit_range(self.images)
        self.labels = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
        self.hflip = hflip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i]
        if self.hflip and self.rng.random() < 0.5:
            x = x.flip(-1)
        return {"image": x, "label": self.labels[i]}


def train_generator(
    train_items: Sequence[Mapping[str, Any]],
    recipe: DiffusionRecipe | None = None,
    out_dir: str | os.PathLike = "./outputs/generator",
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    sample_every: int = 0,
    progress: bool = False,
    train_handlers: Sequence | None = None,
) -> GeneratorResult:
    """Train the class-conditional diffusion generator on in-memory items under the recipe's budget.

    Checkpoints (model, EMA, optimizer, epoch) are written atomically to ``out_dir/checkpoints`` every epoch; a
    second call with the same ``out_dir`` resumes from the latest one.

    Args:
        train_items: ``{"image": (1, H, W) in [0, 1], "label": int}`` at ``recipe.image_size``.
        recipe: settings (default :class:`DiffusionRecipe`).
        out_dir: checkpoints and sample grids.
        num_classes: number of classes (default: ``max(label) + 1``).
        device: torch device.
        sample_every: write a sample grid every this many epochs (0: never).
        progress: show a progress bar.
        train_handlers: extra handlers (e.g. MONAI's ``MLFlowHandler``).

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
    torch.manual_seed(recipe.seed)
    device = torch.device(device)
    network, scheduler = recipe.build_network(num_classes, in_channels=shape[0]), recipe.build_scheduler()
    network = network.to(device)
    loader = _loader(train_items, recipe)
    out_dir = ensure_writable_dir(out_dir)
    losses = LossHistoryHandler()
    handlers: list = [losses]
    if recipe.train_minutes is not None:
        handlers.append(TimeBudgetHandler(recipe.train_minutes * 60.0))
    handlers.extend(train_handlers or [])
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8)
    handlers.insert(0, WarmupLrHandler(optimizer, recipe.lr, recipe.warmup_iters))
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
        tmp.write_text(json.dumps(stats))
    return GeneratorResult(
        model=model,
        scheduler=scheduler,
        num_classes=num_classes,
        checkpoint_dir=str(out_dir / "checkpoints"),
        **{k: v for k, v in stats.items() if k != "in_channels"},
    )


def _loader(items: Sequence[Mapping[str, Any]], recipe: DiffusionRecipe) -> torch.utils.data.DataLoader:
    ds = DiffusionItemsDataset(items, recipe.hflip, recipe.seed)
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
    network = recipe.build_network(num_classes, in_channels=int(stats.get("in_channels", 1)))
    model = load_weights_for_sampling(network, ckpt, use_ema=True).to(device)
    scheduler = recipe.build_scheduler()
    return GeneratorResult(
        model=model,
        scheduler=scheduler,
        num_classes=num_classes,
        checkpoint_dir=str(out_dir / "checkpoints"),
        **{k: stats[k] for k in ("epochs", "iterations", "wall_s", "img_per_s", "final_loss", "history")},
    )
