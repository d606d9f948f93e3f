"""Ignite handlers for diffusion training: EMA, atomic checkpoints and resume, sample grids, clipping, throughput."""

from __future__ import annotations

from .checkpoint import (
    CheckpointResumer,
    CheckpointSaver,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .ema import EMAHandler, create_ema_model, ema_decay_at, ema_multi_avg_fn, unwrap_model
from .image_metrics import ImageMetricsHandler
from .mlflow_extras import (
    MLflowFigureHandler,
    MLflowParamsHandler,
    TrackingUnavailableError,
    check_tracking_uri,
    resolve_tracking_uri,
)
from .sample_grid import SampleGridHandler, make_grid, save_grid_png
from .training import GradientClipHandler, ThroughputHandler

__all__ = [
    "CheckpointResumer",
    "CheckpointSaver",
    "checkpoint_path",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "EMAHandler",
    "create_ema_model",
    "ema_decay_at",
    "ema_multi_avg_fn",
    "unwrap_model",
    "SampleGridHandler",
    "make_grid",
    "save_grid_png",
    "GradientClipHandler",
    "ThroughputHandler",
    "ImageMetricsHandler",
]
__all__ += [
    "MLflowFigureHandler",
    "MLflowParamsHandler",
    "TrackingUnavailableError",
    "check_tracking_uri",
    "resolve_tracking_uri",
]
