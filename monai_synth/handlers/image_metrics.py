"""Opt-in per-epoch FID/KID on a small sample during training (seed 000, Sec. 6: "compute the FID, etc. scores
every epoch to see how they trend over time").

The real-set features (and their mean/covariance) are computed once and cached, so each evaluation costs only
``n_samples`` generated images plus one feature pass over them. Small-sample FID is biased upwards; use the trend,
not the absolute value, and compare runs only at equal ``n_samples``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.utils import min_version, optional_import

from monai_synth.metrics.fid import FeatureStatistics, frechet_distance
from monai_synth.metrics.kid import compute_kid

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["ImageMetricsHandler"]

logger = logging.getLogger(__name__)

_METRICS = ("fid", "kid")


class ImageMetricsHandler:
    """Every ``every_n_epochs`` epochs, sample images and write FID/KID against cached real statistics.

    Values go to ``engine.state.metrics[f"{prefix}fid"]``, ``[f"{prefix}kid_mean"]``, ``[f"{prefix}kid_std"]``
    and, when an MLflow run is active, to MLflow with ``step=epoch``.

    Args:
        sample_fn: ``callable(n) -> images (n, C, *spatial)`` in ``[0, 1]`` (or uint8); it should use a fixed
            seed so successive epochs are comparable.
        extractor: ``callable(images) -> features (N, D)``, e.g. ``InceptionFeatureExtractor(dims=2048)``.
        real_images: real reference images; their features are extracted once, on first use.
        real_features: precomputed ``(N, D)`` real features (instead of ``real_images``).
        n_samples: generated images per evaluation.
        every_n_epochs: period (the last epoch is always evaluated).
        metrics: subset of ``("fid", "kid")``.
        kid_subset_size: KID subset size (capped at the sample sizes).
        kid_subsets: number of KID subsets.
        seed: KID subset seed.
        prefix: metric name prefix.
        log_mlflow: log to MLflow when ``mlflow.active_run()`` is not ``None``.

    Raises:
        ValueError: neither or both of ``real_images``/``real_features``; unknown metric; bad sizes.
    """

    def __init__(
        self,
        sample_fn: Callable[[int], torch.Tensor | np.ndarray],
        extractor: Callable[[torch.Tensor | np.ndarray], torch.Tensor],
        real_images: torch.Tensor | np.ndarray | None = None,
        real_features: torch.Tensor | np.ndarray | None = None,
        n_samples: int = 200,
        every_n_epochs: int = 5,
        metrics: Sequence[str] = _METRICS,
        kid_subset_size: int = 100,
        kid_subsets: int = 50,
        seed: int = 0,
        prefix: str = "",
        log_mlflow: bool = True,
    ) -> None:
        if (real_images is None) == (real_features is None):
            raise ValueError("give exactly one of `real_images` or `real_features`.")
        unknown = set(metrics) - set(_METRICS)
        if unknown or not metrics:
            raise ValueError(f"`metrics` must be a non-empty subset of {list(_METRICS)}, got {list(metrics)!r}.")
        if int(every_n_epochs) < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1, got {every_n_epochs!r}.")
        if int(n_samples) < 2:
            raise ValueError(f"`n_samples` must be >= 2 (a covariance needs 2 vectors), got {n_samples!r}.")
        self.sample_fn = sample_fn
        self.extractor = extractor
        self._real_images = real_images
        self._real_features = torch.as_tensor(real_features) if real_features is not None else None
        self._real_stats: FeatureStatistics | None = None
        self.n_samples = int(n_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.metrics = tuple(metrics)
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.seed = int(seed)
        self.prefix = prefix
        self.log_mlflow = log_mlflow

    def attach(self, engine) -> None:
        """Register on ``Events.EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @property
    def real_features(self) -> torch.Tensor:
        """Real features, extracted on first access and cached (the real images are then released)."""
        if self._real_features is None:
            self._real_features = self.extractor(self._real_images)
            self._real_images = None
        return self._real_features

    @property
    def real_statistics(self) -> FeatureStatistics:
        """Cached mean/covariance of the real features."""
        if self._real_stats is None:
            self._real_stats = FeatureStatistics.from_features(self.real_features)
        return self._real_stats

    def compute(self) -> dict[str, float]:
        """Sample ``n_samples`` images and return ``{name: value}`` for the configured metrics."""
        with torch.no_grad():
            images = self.sample_fn(self.n_samples)
        feats = self.extractor(images)
        out: dict[str, float] = {}
        if "fid" in self.metrics:
            out[f"{self.prefix}fid"] = frechet_distance(FeatureStatistics.from_features(feats), self.real_statistics)
        if "kid" in self.metrics:
            kid = compute_kid(feats, self.real_features, self.kid_subset_size, self.kid_subsets, self.seed)
            out[f"{self.prefix}kid_mean"] = kid.mean
            out[f"{self.prefix}kid_std"] = kid.std
        return out

    def __call__(self, engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.every_n_epochs != 0 and epoch != engine.state.max_epochs:
            return
        values = self.compute()
        engine.state.metrics.update(values)
        logger.info("epoch %d image metrics: %s", epoch, {k: round(v, 4) for k, v in values.items()})
        if self.log_mlflow:
            mlflow, has_mlflow = optional_import("mlflow")
            if has_mlflow and mlflow.active_run() is not None:
                mlflow.log_metrics(values, step=epoch)
