"""Ignite handlers of classifier training: epoch loss/lr statistics, best-weights keeping, metric history."""

from __future__ import annotations

import copy

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["EpochStatsHandler", "HistoryRecorderHandler", "KeepBestHandler"]


class EpochStatsHandler:
    """Trainer handler: mean train loss and current lr into ``engine.state.metrics`` at EPOCH_COMPLETED
    (attached before the LR scheduler and the MLflow handler so both see it)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.total, self.count = 0.0, 0

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._complete)

    def _reset(self, engine) -> None:
        self.total, self.count = 0.0, 0

    def _update(self, engine) -> None:
        out = engine.state.output
        n = int(out["label"].shape[0])
        self.total += float(out["loss"].item()) * n
        self.count += n

    def _complete(self, engine) -> None:
        engine.state.metrics["train_loss"] = self.total / max(self.count, 1)
        engine.state.metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])


class KeepBestHandler:
    """Evaluator handler: copy the network weights whenever the key metric improved this epoch."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network
        self.state: dict[str, torch.Tensor] | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        if engine.state.best_metric_epoch == engine.state.epoch or self.state is None:
            self.state = copy.deepcopy(self.network.state_dict())


class HistoryRecorderHandler:
    """Append every ``engine.state.metrics`` entry to ``history`` lists at EPOCH_COMPLETED."""

    def __init__(self, history: dict[str, list], prefix: str = "", stage: str | None = None) -> None:
        self.history, self.prefix, self.stage = history, prefix, stage

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        for k, v in engine.state.metrics.items():
            self.history.setdefault(self.prefix + k, []).append(float(v))
        if self.stage is not None:
            self.history.setdefault("stage", []).append(self.stage)
