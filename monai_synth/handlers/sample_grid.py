"""Sample-grid PNGs during training (rows = classes), as in seed 000 Figs. 4-7, also logged to MLflow.

Every ``every_n_epochs`` epochs (and at the last epoch, and when a time budget stops training early) the handler
samples ``n_per_class`` images per class from the (EMA) model with a fixed seed (so grids of successive epochs are
comparable) and writes ``<out_dir>/samples_epoch{epoch:05d}.png``. It logs the grid as the MLflow artifact
``sample_grids/sample_grid_epoch{epoch:05d}.png`` into, in this order of preference: the run given by
``mlflow_client`` + ``mlflow_run_id``; the run of an MLflow handler attached to the same engine (MONAI's
``MLFlowHandler``, which a bundle's ``--tracking mlflow`` adds to ``train#handlers``, see :func:`engine_mlflow_run`);
the fluent ``mlflow.active_run()``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import Scheduler
from monai.utils import min_version, optional_import

from monai_synth.data.writers import write_png_uint8
from monai_synth.inferers.sampling import sample
from monai_synth.networks.autoencoder import decode_latents
from monai_synth.utils.io import ensure_writable_dir

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["GRID_ARTIFACT_DIR", "engine_mlflow_run", "log_grid_to_mlflow", "make_grid", "save_grid_png",
           "SampleGridHandler"]  # fmt: skip

logger = logging.getLogger(__name__)

GRID_ARTIFACT_DIR = "sample_grids"


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


def engine_mlflow_run(engine: Any) -> tuple[Any, str] | None:
    """``(client, run id)`` of an MLflow handler attached to ``engine`` whose run has started, else ``None``.

    Found by duck typing: a handler bound to an object with a ``client`` (an ``MlflowClient``) and a ``cur_run``, as
    MONAI's ``MLFlowHandler`` has once ``Events.STARTED`` created or picked its run. Ignite keeps the registered
    handlers in ``Engine._event_handlers`` (no public listing exists); filtered events wrap them (``__wrapped__``).
    """
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            fn = entry[0]
            owner = getattr(getattr(fn, "__wrapped__", fn), "__self__", None)
            run, client = getattr(owner, "cur_run", None), getattr(owner, "client", None)
            if run is not None and callable(getattr(client, "log_artifact", None)):
                return client, run.info.run_id
    return None


def log_grid_to_mlflow(client: Any, run_id: str, grid: np.ndarray, epoch: int) -> str:
    """Log a uint8 grid as ``sample_grids/sample_grid_epoch{epoch:05d}.png``; returns the artifact path."""
    name = f"sample_grid_epoch{int(epoch):05d}.png"
    with tempfile.TemporaryDirectory(prefix="sample_grid_") as tmp:
        client.log_artifact(run_id, str(save_grid_png(grid, Path(tmp) / name)), GRID_ARTIFACT_DIR)
    return f"{GRID_ARTIFACT_DIR}/{name}"


class SampleGridHandler:
    """Write a grid of samples (one row per class) every ``every_n_epochs`` epochs and at the last epoch.

    Args:
        model: network to sample from (typically the EMA ``AveragedModel``); ``None``: the engine's, read when a grid
            is drawn (``engine.ema_model`` when set, as :func:`monai_synth.engines.build_diffusion_trainer` sets it,
            else ``engine.network``), so the handler can be made before the trainer.
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
        eta: DDIM stochasticity passed to :func:`monai_synth.inferers.sample` (the recipe's ``sampler_eta``).
        log_mlflow: log the grid to MLflow (see the module docstring for which run).
        mlflow_client: an ``MlflowClient`` to log with (with ``mlflow_run_id``).
        mlflow_run_id: the run to log into.
        decode: ``(autoencoder, scale_factor)`` of a latent model: ``image_shape`` is the latent shape and the
            samples are decoded (:func:`monai_synth.networks.decode_latents`) before the grid is drawn.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
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
        mlflow_client: Any = None,
        mlflow_run_id: str | None = None,
        eta: float = 0.0,
        decode: tuple[torch.nn.Module, float] | None = None,
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
        self.eta = float(eta)
        self.log_mlflow = log_mlflow
        self.mlflow_client = mlflow_client
        self.mlflow_run_id = mlflow_run_id
        self.last_epoch: int | None = None
        self.decode = decode

    def decode_with(self, autoencoder: torch.nn.Module, scale_factor: float, latent_shape: tuple[int, ...]) -> None:
        """Sample ``latent_shape`` latents and decode them with ``autoencoder`` (a latent generator's grids)."""
        self.image_shape = tuple(int(s) for s in latent_shape)
        self.decode = (autoencoder, float(scale_factor))

    def attach(self, engine) -> None:
        """Register on ``Events.EPOCH_COMPLETED`` and ``Events.COMPLETED`` (a grid of a run stopped early)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine) -> None:
        """After ``engine.terminate()`` (e.g. a time budget) the last epoch had no grid: write one now."""
        if engine.should_terminate and self.last_epoch != engine.state.epoch:
            self.write(engine)

    def model_of(self, engine: Any) -> torch.nn.Module:
        """The network to sample: ``model`` when given, else the engine's EMA model, else its network."""
        if self.model is not None:
            return self.model
        ema = getattr(engine, "ema_model", None)
        return ema if ema is not None else engine.network

    def generate(self, device: torch.device | str = "cpu", model: torch.nn.Module | None = None) -> torch.Tensor:
        """Sample the grid images ``(rows * n_per_class, C, *spatial)``, rows ordered by class, from ``model``
        (default: the ``model`` given at construction)."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("SampleGridHandler(model=None) samples the engine's model: pass `model` to generate().")
        device = torch.device(device)
        rows = 1 if self.num_classes is None else self.num_classes
        n = rows * self.n_per_class
        generator = torch.Generator(device=device).manual_seed(self.seed)
        labels = None
        if self.num_classes is not None:
            labels = torch.arange(self.num_classes, device=device).repeat_interleave(self.n_per_class)
        x = sample(
            model,
            self.scheduler,
            shape=(n, *self.image_shape),
            class_labels=labels,
            guidance_scale=self.guidance_scale,
            generator=generator,
            num_inference_steps=self.num_inference_steps,
            eta=self.eta,
            device=device,
        )
        return x if self.decode is None else decode_latents(self.decode[0], x, self.decode[1])

    def __call__(self, engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.every_n_epochs != 0 and epoch != engine.state.max_epochs:
            return
        self.write(engine)

    def write(self, engine) -> Path:
        """Sample, write ``samples_epoch{epoch:05d}.png`` and log it to MLflow; returns the local file."""
        epoch = engine.state.epoch
        model = self.model_of(engine)
        device = getattr(engine.state, "device", None) or next(model.parameters()).device
        images = self.generate(device, model)
        ensure_writable_dir(self.out_dir)
        grid = make_grid(images, nrow=self.n_per_class)
        path = save_grid_png(grid, self.out_dir / f"samples_epoch{epoch:05d}.png")
        self.last_epoch = epoch
        logger.info("wrote sample grid %s", path)
        if self.log_mlflow:
            self._log(engine, grid, epoch)
        return path

    def _log(self, engine, grid: np.ndarray, epoch: int) -> None:
        target = (self.mlflow_client, self.mlflow_run_id) if self.mlflow_client and self.mlflow_run_id else None
        target = target or engine_mlflow_run(engine)
        if target is None:
            mlflow, has_mlflow = optional_import("mlflow")
            if has_mlflow and mlflow.active_run() is not None:
                target = (mlflow.MlflowClient(), mlflow.active_run().info.run_id)
        if target is None:
            return
        try:
            log_grid_to_mlflow(*target, grid, epoch)
        except Exception as e:  # a tracking failure must not stop training; the grid is on disk
            logger.warning("could not log the sample grid of epoch %d to MLflow run %s: %s", epoch, target[1], e)
