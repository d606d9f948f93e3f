"""Sample-grid PNGs during training (rows = classes), as in seed 000 Figs. 4-7.

Every ``every_n_epochs`` epochs the handler samples ``n_per_class`` images per class from the (EMA) model with a
fixed seed (so grids of successive epochs are comparable), writes ``<out_dir>/samples_epoch{epoch:05d}.png`` and logs
it to MLflow when a run is active.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from monai.networks.schedulers import Scheduler
from monai.utils import min_version, optional_import

from monai_synth.data.writers import write_png_uint8
from monai_synth.inferers.sampling import sample
from monai_synth.utils.io import ensure_writable_dir

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["make_grid", "save_grid_png", "SampleGridHandler"]

logger = logging.getLogger(__name__)


def make_grid(
    images: torch.Tensor | np.ndarray, nrow: int, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images into a uint8 ``(rows*H + pad, nrow*W + pad)`` grid, row-major, 1-px padding.

    Intensities are mapped linearly from ``value_range`` to [0, 255] and clipped.
    """
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if arr.ndim != 4 or arr.shape[1] != 1:
        raise ValueError(f"`images` must have shape (N, 1, H, W), got {arr.shape}.")
    lo, hi = value_range
    arr = np.clip((arr[:, 0] - lo) / (hi - lo), 0.0, 1.0)
    n, h, w = arr.shape
    rows = int(np.ceil(n / nrow))
    grid = np.zeros((rows * (h + 1) + 1, nrow * (w + 1) + 1), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = np.round(arr[i] * 255)
    return grid


def save_grid_png(grid: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 grid to PNG atomically (:func:`monai_synth.data.writers.write_png_uint8`)."""
    return write_png_uint8(grid, path)


class SampleGridHandler:
    """Write a grid of samples (one row per class) every ``every_n_epochs`` epochs and at the last epoch.

    Args:
        model: network to sample from (typically the EMA ``AveragedModel``).
        scheduler: a scheduler for sampling (e.g. a ``DDIMScheduler``); ``set_timesteps(num_inference_steps)`` is
            called on it.
        out_dir: folder for ``samples_epoch{epoch:05d}.png``.
        image_shape: ``(C, *spatial)`` of one sample.
        num_classes: number of classes (rows); ``None`` for an unconditional model (one row).
        n_per_class: columns.
        every_n_epochs: period.
        guidance_scale: CFG weight.
        num_inference_steps: sampling steps.
        seed: generator seed (same noise every time).
        log_mlflow: log the PNG as an MLflow artifact when ``mlflow.active_run()``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        scheduler: Scheduler,
        out_dir: str | os.PathLike,
        image_shape: tuple[int, ...],
        num_classes: int | None = None,
        n_per_class: int = 8,
        every_n_epochs: int = 5,
        guidance_scale: float = 3.0,
        num_inference_steps: int = 50,
        seed: int = 0,
        log_mlflow: bool = True,
    ) -> None:
        if int(every_n_epochs) < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1, got {every_n_epochs!r}.")
        self.model = model
        self.scheduler = scheduler
        self.out_dir = Path(out_dir)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        self.n_per_class = int(n_per_class)
        self.every_n_epochs = int(every_n_epochs)
        self.guidance_scale = float(guidance_scale)
        self.num_inference_steps = int(num_inference_steps)
        self.seed = int(seed)
        self.log_mlflow = log_mlflow

    def attach(self, engine) -> None:
        """Register on ``Events.EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def generate(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Sample the grid images ``(rows * n_per_class, C, *spatial)``, rows ordered by class."""
        device = torch.device(device)
        rows = 1 if self.num_classes is None else self.num_classes
        n = rows * self.n_per_class
        generator = torch.Generator(device=device).manual_seed(self.seed)
        labels = None
        if self.num_classes is not None:
            labels = torch.arange(self.num_classes, device=device).repeat_interleave(self.n_per_class)
        return sample(
            self.model,
            self.scheduler,
            shape=(n, *self.image_shape),
            class_labels=labels,
            guidance_scale=self.guidance_scale,
            generator=generator,
            num_inference_steps=self.num_inference_steps,
            device=device,
        )

    def __call__(self, engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.every_n_epochs != 0 and epoch != engine.state.max_epochs:
            return
        device = getattr(engine.state, "device", None) or next(self.model.parameters()).device
        images = self.generate(device)
        ensure_writable_dir(self.out_dir)
        path = save_grid_png(make_grid(images, nrow=self.n_per_class), self.out_dir / f"samples_epoch{epoch:05d}.png")
        logger.info("wrote sample grid %s", path)
        if self.log_mlflow:
            mlflow, has_mlflow = optional_import("mlflow")
            if has_mlflow and mlflow.active_run() is not None:
                mlflow.log_artifact(str(path), artifact_path="samples")
