"""Small Ignite handlers for diffusion training: gradient clipping and throughput (images per second)."""

from __future__ import annotations

import logging
import time

import torch
from monai.engines.utils import IterationEvents
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["GradientClipHandler", "ThroughputHandler"]

logger = logging.getLogger(__name__)


class GradientClipHandler:
    """Clip the global gradient norm to ``max_norm`` after the backward pass (``IterationEvents.BACKWARD_COMPLETED``).

    With AMP the gradients are unscaled first (``engine.scaler.unscale_``), as recommended by the PyTorch AMP docs;
    the following ``scaler.step`` then skips its own unscaling.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        if float(max_norm) <= 0:
            raise ValueError(f"`grad_clip_norm` must be > 0, got {max_norm!r}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def attach(self, engine) -> None:
        """Register on ``IterationEvents.BACKWARD_COMPLETED``."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm, norm_type=self.norm_type)


class ThroughputHandler:
    """Store training throughput of each epoch in ``engine.state.metrics["img_per_s"]`` and log it.

    Counts the images of every batch (``engine.state.output["image"]``) between ``EPOCH_STARTED`` and
    ``EPOCH_COMPLETED``; wall time includes data loading (what a user waits for).
    """

    def __init__(self, metric_name: str = "img_per_s") -> None:
        self.metric_name = metric_name
        self._t0 = 0.0
        self._count = 0

    def attach(self, engine) -> None:
        """Register on epoch start/end and iteration end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)

    def _start(self, engine) -> None:
        self._t0, self._count = time.perf_counter(), 0

    def _count_batch(self, engine) -> None:
        out = engine.state.output
        if isinstance(out, list):  # decollated batch
            self._count += len(out)
        elif isinstance(out, dict) and out.get("image") is not None:
            self._count += int(out["image"].shape[0])

    def _end(self, engine) -> None:
        rate = self._count / max(time.perf_counter() - self._t0, 1e-9)
        engine.state.metrics[self.metric_name] = rate
        logger.info("epoch %d: %.1f img/s", engine.state.epoch, rate)
