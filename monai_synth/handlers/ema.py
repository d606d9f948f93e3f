"""Exponential moving average (EMA) of network weights as an Ignite handler.

EMA weights are what diffusion models are sampled from (Ho et al. 2020, Sec. 4 and App. B, decay 0.9999). Built on
``torch.optim.swa_utils.AveragedModel``; the optional warm-up uses ``decay_t = min(decay, (1 + n) / (10 + n))``
with ``n`` the number of updates so far (as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), which
keeps early EMA weights from being dominated by the random initialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from monai.utils import min_version, optional_import
from torch.optim.swa_utils import AveragedModel

from monai_synth.utils.module import unwrap_model

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["ema_decay_at", "ema_multi_avg_fn", "create_ema_model", "EMAHandler", "unwrap_model"]

logger = logging.getLogger(__name__)


def ema_decay_at(num_updates: int, decay: float, warmup: bool) -> float:
    """EMA decay used for the update after ``num_updates`` previous updates: ``min(decay, (1+n)/(10+n))`` with warm-up.

    Args:
        num_updates: number of averaging updates already applied (``n``).
        decay: the target decay (e.g. 0.9999).
        warmup: apply the warm-up formula; otherwise the constant ``decay``.
    """
    if not warmup:
        return float(decay)
    n = float(num_updates)
    return min(float(decay), (1.0 + n) / (10.0 + n))


def ema_multi_avg_fn(decay: float = 0.9999, warmup: bool = True) -> Callable:
    """``multi_avg_fn`` for ``AveragedModel``: ``ema = decay_t * ema + (1 - decay_t) * param``.

    Like ``torch.optim.swa_utils.get_ema_multi_avg_fn`` but with the warm-up schedule of :func:`ema_decay_at`; the
    update count comes from ``AveragedModel.n_averaged`` (a buffer, so it is checkpointed with the EMA weights).
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"`ema_decay` must be in [0, 1], got {decay!r}.")

    @torch.no_grad()
    def _fn(ema_params: list[torch.Tensor], model_params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # AveragedModel copies the weights at the first update (n_averaged == 0); then n = n_averaged - 1 updates
        # of the average have been applied so far.
        d = ema_decay_at(int(num_averaged) - 1, decay, warmup)
        if ema_params and all(p.is_floating_point() for p in ema_params):
            torch._foreach_lerp_(ema_params, model_params, 1.0 - d)
        else:
            for p_ema, p_model in zip(ema_params, model_params):
                if p_ema.is_floating_point():
                    p_ema.lerp_(p_model, 1.0 - d)
                else:
                    p_ema.copy_(p_model)

    return _fn


def create_ema_model(network: torch.nn.Module, decay: float = 0.9999, warmup: bool = True) -> AveragedModel:
    """An ``AveragedModel`` EMA copy of ``network`` (unwrapped from DDP), averaging buffers too.

    Create it before wrapping the network with ``DistributedDataParallel``, or pass the wrapped one: the wrapper is
    stripped. Sample from ``ema.module``.
    """
    return AveragedModel(unwrap_model(network), multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=True)


class EMAHandler:
    """Update an EMA ``AveragedModel`` from the trainer's network every ``update_every`` iterations.

    Args:
        ema_model: from :func:`create_ema_model`.
        network: the trained network; ``None`` to use ``engine.network``.
        update_every: update period in iterations.
        start_iteration: no averaging before this iteration (the first update copies the weights).
    """

    def __init__(
        self,
        ema_model: AveragedModel,
        network: torch.nn.Module | None = None,
        update_every: int = 1,
        start_iteration: int = 0,
    ) -> None:
        if int(update_every) < 1:
            raise ValueError(f"`update_every` must be >= 1, got {update_every!r}.")
        self.ema_model = ema_model
        self.network = network
        self.update_every = int(update_every)
        self.start_iteration = int(start_iteration)

    def attach(self, engine) -> None:
        """Register on ``Events.ITERATION_COMPLETED``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        it = engine.state.iteration
        if it < self.start_iteration or it % self.update_every != 0:
            return
        network = self.network if self.network is not None else engine.network
        self.ema_model.update_parameters(unwrap_model(network))
