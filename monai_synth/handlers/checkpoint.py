"""Atomic training checkpoints (model, EMA, optimizer, LR scheduler, AMP scaler, trainer state) and resume.

Files are written with :func:`monai_synth.utils.io.atomic_torch_save` (temp file + ``os.replace``), so a run killed at
any moment (even SIGKILL) leaves either the previous checkpoint or a complete new one, and loaded with
``weights_only=True``. File names are ``checkpoint_epoch{epoch:05d}.pt``; :func:`latest_checkpoint` picks the
highest epoch.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from monai_synth.handlers.ema import unwrap_model
from monai_synth.utils.io import FolderLock, atomic_torch_save, safe_torch_load

__all__ = [
    "CHECKPOINT_PATTERN",
    "checkpoint_path",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "AtomicCheckpointSaver",
    "CheckpointResumer",
    "MinuteSnapshotSaver",
    "load_weights_for_sampling",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
_TRAINER_KEYS = ("epoch", "iteration", "epoch_length", "max_epochs")


def checkpoint_path(checkpoint_dir: str | os.PathLike, epoch: int) -> Path:
    """``<checkpoint_dir>/checkpoint_epoch{epoch:05d}.pt``."""
    return Path(checkpoint_dir) / f"checkpoint_epoch{int(epoch):05d}.pt"


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest epoch in ``checkpoint_dir`` (``None`` when there is none or no folder).

    Temporary files of an interrupted save (``.checkpoint_epoch*.pt.*.tmp``) are ignored.
    """
    found = _checkpoints_newest_first(checkpoint_dir)
    return found[0] if found else None


def _checkpoints_newest_first(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint_epoch*.pt`` of the folder, highest epoch first (temporary files ignored)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def _state(obj: Any) -> Any:
    return None if obj is None else obj.state_dict()


def save_checkpoint(
    path: str | os.PathLike,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema_model: torch.nn.Module | None = None,
    lr_scheduler: Any | None = None,
    scaler: Any | None = None,
    trainer: Any | None = None,
    extra: dict | None = None,
    others: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: destination file.
        network: trained network (DDP wrapper stripped).
        optimizer: its optimizer.
        ema_model: EMA ``AveragedModel`` (whole state dict incl. ``n_averaged``).
        lr_scheduler: LR scheduler with ``state_dict``.
        scaler: AMP ``GradScaler``.
        trainer: Ignite engine; its ``epoch``, ``iteration``, ``epoch_length``, ``max_epochs`` are stored.
        extra: more plain values/tensors to store under ``"extra"``.
        others: more objects with ``state_dict`` (e.g. a discriminator and its optimizer), stored under ``"others"``.

    Returns:
        the written path.
    """
    obj: dict[str, Any] = {
        "network": unwrap_model(network).state_dict(),
        "optimizer": _state(optimizer),
        "ema": _state(ema_model),
        "lr_scheduler": _state(lr_scheduler),
        "scaler": _state(scaler),
        "trainer": None,
        "rng_cpu": torch.get_rng_state(),
        "extra": extra or {},
        "others": {k: _state(v) for k, v in (others or {}).items()},
    }
    if trainer is not None:
        obj["trainer"] = {k: getattr(trainer.state, k) for k in _TRAINER_KEYS}
        length, iteration = obj["trainer"]["epoch_length"], obj["trainer"]["iteration"]
        if length and iteration % length:  # stopped inside an epoch: store the completed epochs, so that a resumed
            obj["trainer"]["epoch"] = iteration // length  # Ignite run finishes this epoch from the saved iteration
    return atomic_torch_save(obj, path)


def load_checkpoint(
    path: str | os.PathLike,
    network: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    ema_model: torch.nn.Module | None = None,
    lr_scheduler: Any | None = None,
    scaler: Any | None = None,
    trainer: Any | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
    others: dict[str, Any] | None = None,
) -> dict:
    """Load a checkpoint from :func:`save_checkpoint` (``weights_only=True``) into the given objects.

    Objects passed as ``None`` are skipped. The trainer gets its ``epoch`` and ``iteration`` back, so a following
    ``trainer.run()`` continues with epoch ``epoch + 1``.

    Returns:
        the raw checkpoint dictionary.

    Raises:
        ValueError: when the checkpoint lacks an entry for a given object (naming the entry and file).
    """
    ckpt = safe_torch_load(path, map_location=map_location)
    targets = {
        "network": None if network is None else unwrap_model(network),
        "optimizer": optimizer,
        "ema": ema_model,
        "lr_scheduler": lr_scheduler,
        "scaler": scaler,
    }
    for key, obj in targets.items():
        if obj is None:
            continue
        if ckpt.get(key) is None:
            raise ValueError(f"Checkpoint {str(path)!r} has no {key!r} state; it cannot restore the given {key}.")
        obj.load_state_dict(ckpt[key])
    for key, obj in (others or {}).items():
        state = (ckpt.get("others") or {}).get(key)
        if state is None:
            raise ValueError(f"Checkpoint {str(path)!r} has no {key!r} state; it cannot restore the given {key}.")
        obj.load_state_dict(state)
    if trainer is not None:
        if ckpt.get("trainer") is None:
            raise ValueError(f"Checkpoint {str(path)!r} has no trainer state; it cannot resume a trainer.")
        trainer.state.epoch = int(ckpt["trainer"]["epoch"])
        trainer.state.iteration = int(ckpt["trainer"]["iteration"])
    if restore_rng and ckpt.get("rng_cpu") is not None:
        torch.set_rng_state(ckpt["rng_cpu"])
    return ckpt


class _CheckpointObjects:
    """The objects a checkpoint holds; ``network``/``optimizer`` default to the engine's at save/load time."""

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        network: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        ema_model: torch.nn.Module | None = None,
        lr_scheduler: Any | None = None,
        others: dict[str, Any] | None = None,
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.network, self.optimizer = network, optimizer
        self.ema_model, self.lr_scheduler = ema_model, lr_scheduler
        self.others = dict(others or {})

    def _objects(self, engine) -> dict[str, Any]:
        return {
            "network": self.network if self.network is not None else engine.network,
            "optimizer": self.optimizer if self.optimizer is not None else engine.optimizer,
            "ema_model": self.ema_model,
            "lr_scheduler": self.lr_scheduler,
            "others": self.others or None,
        }


class AtomicCheckpointSaver(_CheckpointObjects):
    """Save a checkpoint every ``save_every`` epochs, after the final epoch (Ignite ``EPOCH_COMPLETED``) and when the
    run is terminated inside an epoch (``Events.TERMINATE``, e.g. by a wall-clock budget), so the weights a
    terminated run ends with are on disk. A mid-epoch checkpoint is named after the unfinished epoch and stores the
    completed epochs and the iteration; resuming from it finishes that epoch.

    Args:
        checkpoint_dir: output folder.
        network, optimizer, ema_model, lr_scheduler: objects to save; ``network``/``optimizer`` default to the
            engine's, the AMP scaler is taken from ``engine.scaler``.
        others: more named objects with ``state_dict`` (a discriminator and its optimizer).
        save_every: period in epochs.
        keep_last: keep only this many newest checkpoints (``None`` keeps all).
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        network: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        ema_model: torch.nn.Module | None = None,
        lr_scheduler: Any | None = None,
        save_every: int = 1,
        keep_last: int | None = 2,
        others: dict[str, Any] | None = None,
    ) -> None:
        if int(save_every) < 1:
            raise ValueError(f"`save_every` must be >= 1, got {save_every!r}.")
        if keep_last is not None and int(keep_last) < 1:
            raise ValueError(f"`keep_last` must be >= 1 or None, got {keep_last!r}.")
        super().__init__(checkpoint_dir, network, optimizer, ema_model, lr_scheduler, others)
        self.save_every = int(save_every)
        self.keep_last = None if keep_last is None else int(keep_last)
        self._saved_iteration: int | None = None

    def attach(self, engine) -> None:
        """Register on ``Events.EPOCH_COMPLETED`` and ``Events.TERMINATE``; lock the folder from ``STARTED`` to
        ``COMPLETED`` (:class:`~monai_synth.utils.io.FolderLock`: a second trainer on the same folder fails at
        once)."""
        engine.add_event_handler(Events.STARTED, self._lock)
        engine.add_event_handler(Events.COMPLETED, self._unlock)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.TERMINATE, self._terminated)

    def _lock(self, engine) -> None:
        self._folder_lock = FolderLock(self.checkpoint_dir, "training").acquire()
        # temporary files of a save killed by SIGKILL (atomic_path could not clean up); safe under the lock
        for stale in self.checkpoint_dir.glob(".checkpoint_epoch*.tmp"):
            stale.unlink(missing_ok=True)

    def _unlock(self, engine) -> None:
        lock = getattr(self, "_folder_lock", None)
        if lock is not None:
            lock.release()
            self._folder_lock = None

    def _terminated(self, engine) -> None:
        # Ignite fires no EPOCH_COMPLETED after terminate(), even when it comes at the last iteration of an epoch
        if engine.state.iteration != self._saved_iteration:
            self._save(engine, engine.state.epoch)

    def __call__(self, engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.save_every != 0 and epoch != engine.state.max_epochs:
            return
        self._save(engine, epoch)

    def _save(self, engine, epoch: int) -> None:
        self._saved_iteration = engine.state.iteration
        objects = self._objects(engine)
        for name in ("network", "ema_model"):
            module = objects.get(name)
            if module is not None and not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise FloatingPointError(
                    f"the {name} weights hold NaN or infinite values at epoch {epoch}: no checkpoint written and none "
                    f"pruned in {str(self.checkpoint_dir)!r} (resume from the last good one)."
                )
        path = save_checkpoint(
            checkpoint_path(self.checkpoint_dir, epoch),
            **objects,
            scaler=getattr(engine, "scaler", None),
            trainer=engine,
        )
        logger.info("saved checkpoint %s", path)
        if self.keep_last is not None:
            found = sorted(
                (int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
            )
            for _, old in found[: -self.keep_last]:
                old.unlink(missing_ok=True)


class MinuteSnapshotSaver(_CheckpointObjects):
    """Keep a checkpoint of the first epoch that ends after each of the given minutes of training (wall clock from
    ``Events.STARTED``), for curves of quality against training time.

    Files are ``snapshot_{minutes:09.4f}min.pt`` in ``checkpoint_dir`` (a folder of its own: the regular saver
    prunes and locks its folder); :attr:`taken` lists ``(minutes, path)``. Several marks passed within one epoch give
    one snapshot. ``ema_model`` defaults to the engine's ``ema_model`` attribute.

    Args:
        checkpoint_dir: output folder of the snapshots.
        minutes: the marks, in minutes of training (positive).
        network, ema_model: objects to save (default: the engine's).
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        minutes: Sequence[float],
        network: torch.nn.Module | None = None,
        ema_model: torch.nn.Module | None = None,
    ) -> None:
        marks = sorted(float(m) for m in minutes)
        if not marks or marks[0] <= 0:
            raise ValueError(f"`minutes` must be one or more positive numbers, got {list(minutes)!r}.")
        super().__init__(checkpoint_dir, network, None, ema_model)
        self.pending, self.taken = marks, []
        self._t0: float | None = None

    def attach(self, engine) -> None:
        """Register on ``Events.STARTED`` (the clock) and ``Events.EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine) -> None:
        self._t0 = time.perf_counter()

    def __call__(self, engine) -> None:
        minutes = (time.perf_counter() - self._t0) / 60.0
        if not self.pending or minutes < self.pending[0]:
            return
        self.pending = [m for m in self.pending if m > minutes]
        network = self.network if self.network is not None else engine.network
        ema = self.ema_model if self.ema_model is not None else getattr(engine, "ema_model", None)
        path = save_checkpoint(
            self.checkpoint_dir / f"snapshot_{minutes:09.4f}min.pt", network, ema_model=ema, trainer=engine
        )
        self.taken.append((minutes, path))
        logger.info("snapshot after %.2f min of training: %s", minutes, path)


class CheckpointResumer(_CheckpointObjects):
    """At ``Events.STARTED``, load the latest checkpoint of ``checkpoint_dir`` (if any) and resume from its epoch.

    A run resumed this way continues at the saved epoch with the saved optimizer, EMA, LR-scheduler and AMP-scaler
    state. When the folder holds no checkpoint the run starts from scratch.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        network: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        ema_model: torch.nn.Module | None = None,
        lr_scheduler: Any | None = None,
        map_location: str | torch.device | None = None,
        others: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(checkpoint_dir, network, optimizer, ema_model, lr_scheduler, others)
        self.map_location = map_location

    def attach(self, engine) -> None:
        """Register on ``Events.STARTED``."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine) -> None:
        candidates = _checkpoints_newest_first(self.checkpoint_dir)
        if not candidates:
            logger.info("no checkpoint in %s: training from scratch", self.checkpoint_dir)
            return
        scaler = getattr(engine, "scaler", None)
        for k, path in enumerate(candidates):
            try:
                load_checkpoint(
                    path,
                    **self._objects(engine),
                    scaler=scaler if getattr(engine, "amp", False) else None,
                    trainer=engine,
                    map_location=self.map_location if self.map_location is not None else engine.state.device,
                )
            except ValueError as e:  # unreadable (truncated, corrupt): fall back to the previous one, and say so
                if k == len(candidates) - 1:
                    raise ValueError(f"no readable checkpoint in {str(self.checkpoint_dir)!r}; the oldest: {e}") from e
                logger.warning("checkpoint %s is unreadable (%s); resuming from the previous one %s", path, e,
                               candidates[k + 1])  # fmt: skip
                continue
            logger.info("resumed from %s at epoch %d", path, engine.state.epoch)
            return


def load_weights_for_sampling(
    network: torch.nn.Module, path: str | os.PathLike, use_ema: bool = True, map_location: str = "cpu"
) -> torch.nn.Module:
    """Load sampling weights into ``network`` and return it in eval mode.

    ``path`` may be a training checkpoint from :func:`monai_synth.handlers.save_checkpoint` (the EMA weights are used
    when present and ``use_ema``), a folder of such checkpoints (the latest is used) or a plain ``state_dict`` file.

    Raises:
        FileNotFoundError: when no checkpoint is found.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"No checkpoint_epoch*.pt in {str(path)!r}; train first or pass a file.")
        path = found
    obj = safe_torch_load(path, map_location=map_location)
    kind = "plain"
    if isinstance(obj, dict) and "network" in obj:
        if use_ema and obj.get("ema") is not None:
            state, kind = {k[len("module.") :]: v for k, v in obj["ema"].items() if k.startswith("module.")}, "EMA"
        else:
            state, kind = obj["network"], "raw"
    else:
        state = obj
    unwrap_model(network).load_state_dict(state)
    logger.info("loaded %s weights from %s", kind, path)
    return network.eval()
