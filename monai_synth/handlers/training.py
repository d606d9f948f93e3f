"""Ignite handlers of diffusion training: gradient clipping, throughput, lr warm-up, time budget, loss history."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents

__all__ = [
    "GradientClipHandler",
    "LossHistoryHandler",
    "NonFiniteLossHandler",
    "ProgressBarHandler",
    "ThroughputHandler",
    "TimeBudgetHandler",
    "WarmupLrHandler",
]

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


class TimeBudgetHandler:
    """Terminate training once ``seconds`` of wall-clock have passed (checked after every iteration)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = float(seconds), None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _start(self, engine) -> None:
        self.start = time.perf_counter()

    def fraction_used(self) -> float:
        """Share of the budget spent so far (0 before the run starts)."""
        if self.start is None:
            return 0.0
        return (time.perf_counter() - self.start) / self.seconds if self.seconds > 0 else 1.0

    def __call__(self, engine) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            logger.info("time budget of %.0f s reached at epoch %d", self.seconds, engine.state.epoch)
            engine.terminate()


class WarmupLrHandler:
    """Linear learning-rate warm-up over the first ``iters`` iterations (Goyal et al. 2017), then constant, and
    optionally a cosine cool-down over the last ``anneal_fraction`` of the training run.

    With ``anneal_fraction = f > 0`` this is the warm-up / stable / decay schedule (Hu et al. 2024, MiniCPM;
    Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", who find a
    short cool-down matches a full cosine schedule): with ``p`` the share of the run done, the rate is
    ``lr * warm(i) * c(p)`` where ``c(p) = 1`` for ``p <= 1 - f`` and
    ``c(p) = r + (1 - r) * (1 + cos(pi * (p - 1 + f) / f)) / 2`` after it (``r = final_ratio``). ``p`` is the larger of
    ``iteration / (max_epochs * epoch_length)`` and, when a :class:`TimeBudgetHandler` is given, the share of its
    wall-clock budget used: training stops at the first of the two, so the cool-down ends where training ends.

    The warm-up and the epoch share are read from ``engine.state``, so a run resumed from a checkpoint continues both
    where it stopped. Torch's ``LinearLR`` stepped by MONAI's ``LrScheduleHandler`` would restart at every resume
    (its step count is not in our checkpoints), which is why this handler exists. A wall-clock budget is a budget of
    the running process (:class:`TimeBudgetHandler` starts its clock at ``Events.STARTED``), so a resumed run with a
    time budget cools down again at the end of its own budget.

    Args:
        optimizer: the optimizer whose ``lr`` is set before every iteration.
        lr: the peak learning rate.
        iters: warm-up iterations (0: none).
        anneal_fraction: share of the run at the end over which the rate cools down (0: constant after warm-up).
        final_ratio: the rate at the end of the cool-down, as a share of ``lr``.
        budget: the run's wall-clock budget handler, if it has one.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr: float,
        iters: int,
        anneal_fraction: float = 0.0,
        final_ratio: float = 0.0,
        budget: TimeBudgetHandler | None = None,
    ) -> None:
        if not 0.0 <= float(anneal_fraction) <= 1.0:
            raise ValueError(f"`lr_anneal_fraction` must be in [0, 1], got {anneal_fraction!r}.")
        if not 0.0 <= float(final_ratio) <= 1.0:
            raise ValueError(f"`final_ratio` must be in [0, 1], got {final_ratio!r}.")
        self.optimizer, self.lr, self.iters = optimizer, lr, max(0, int(iters))
        self.anneal_fraction, self.final_ratio, self.budget = float(anneal_fraction), float(final_ratio), budget

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def progress(self, engine) -> float:
        """Share of the run done before the coming iteration: the larger of the iteration and time shares."""
        state = engine.state
        total = (state.max_epochs or 0) * (state.epoch_length or 0)
        done = (state.iteration - 1) / total if total else 0.0
        if self.budget is not None:
            done = max(done, self.budget.fraction_used())
        return min(max(done, 0.0), 1.0)

    def __call__(self, engine) -> None:
        scale = 1.0 if self.iters == 0 else min(1.0, engine.state.iteration / self.iters)
        f = self.anneal_fraction
        if f > 0.0:
            p = self.progress(engine)
            if p > 1.0 - f:
                r = self.final_ratio
                scale *= r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * (p - 1.0 + f) / f))
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * scale


class LossHistoryHandler:
    """Mean loss and wall-clock seconds since the start of this process's training, per epoch."""

    def __init__(self) -> None:
        self.history: dict[str, list] = {"epoch": [], "loss": [], "elapsed_s": []}
        self._sum, self._n = 0.0, 0
        self.start_iteration = 0
        self._t0 = time.perf_counter()

    def attach(self, engine) -> None:
        # attached after the checkpoint resumer, so this sees the resumed iteration
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iter)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _start(self, engine) -> None:
        self.start_iteration = int(engine.state.iteration)
        self._t0 = time.perf_counter()

    def _iter(self, engine) -> None:
        out = engine.state.output
        out = out[0] if isinstance(out, (list, tuple)) else out  # decollated batch: the loss is on every item
        self._sum += float(torch.as_tensor(out["loss"]).detach())
        self._n += 1

    def _epoch(self, engine) -> None:
        self.history["epoch"].append(engine.state.epoch)
        self.history["loss"].append(self._sum / max(1, self._n))
        self.history["elapsed_s"].append(time.perf_counter() - self._t0)
        self._sum, self._n = 0.0, 0


class NonFiniteLossHandler:
    """Stop training with :class:`FloatingPointError` as soon as the loss is NaN or infinite.

    Ignite's ``TerminateOnNan`` ends the run *gracefully*, which fires ``Events.TERMINATE``: the checkpoint saver
    would then write the broken weights and, with ``keep_last``, prune the good checkpoints. Raising instead skips
    every saver, so the folder keeps the last good checkpoint to resume from. Attach it before the EMA handler, so
    the EMA weights never take the broken step either.

    Args:
        checkpoint_dir: named in the message (where the last good checkpoint is).
    """

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        loss = _loss_of(engine.state.output)["loss"]
        if math.isfinite(loss):
            return
        where = f" the checkpoints in {str(self.checkpoint_dir)!r} are untouched;" if self.checkpoint_dir else ""
        raise FloatingPointError(
            f"the training loss is {loss} at iteration {engine.state.iteration} (epoch {engine.state.epoch}): "
            f"training stopped without saving;{where} resume with a lower learning rate or gradient clipping."
        )


class ProgressBarHandler:
    """Adapter so an Ignite ``ProgressBar`` can sit in MONAI's ``train_handlers`` list (which calls ``attach``)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def attach(self, engine) -> None:
        self.bar.attach(engine, output_transform=_loss_of)


def _loss_of(output: Any) -> dict:
    """``{"loss": float}`` from a collated (dict) or decollated (list of dicts) trainer output."""
    item = output[0] if isinstance(output, list) else output
    loss = item["loss"]
    return {"loss": float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)}
