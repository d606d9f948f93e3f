"""Ignite handlers: EMA, atomic checkpoints and resume, sample grids, training statistics, image metrics, MLflow."""

from __future__ import annotations

from .checkpoint import (
    AtomicCheckpointSaver,
    CheckpointResumer,
    MinuteSnapshotSaver,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_weights_for_sampling,
    save_checkpoint,
)
from .classification import EpochStatsHandler, HistoryRecorderHandler, KeepBestHandler
from .ema import EMAHandler, create_ema_model, ema_decay_at, ema_multi_avg_fn, unwrap_model
from .image_metrics import ImageMetricsHandler
from .mlflow_extras import TrackingUnavailableError, check_tracking_uri, resolve_tracking_uri
from .sample_grid import SampleGridHandler, make_grid, save_grid_png
from .training import (
    GradientClipHandler,
    LossHistoryHandler,
    NonFiniteLossHandler,
    ProgressBarHandler,
    ThroughputHandler,
    TimeBudgetHandler,
    WarmupLrHandler,
)
