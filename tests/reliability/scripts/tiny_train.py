"""Tiny deterministic diffusion training run used by the SIGKILL fault tests (not a test module).

Usage: ``python tiny_train.py CKPT_DIR MAX_EPOCHS [--pause-in-save EPOCH]``. Prints ``READY`` once the trainer is built,
``START <epoch>`` after the resume handler ran, ``EPOCH <n>`` after each epoch (checkpoint already written) and
``DONE``. With ``--pause-in-save N`` the checkpoint write of epoch N stops half-way (half the bytes in the temporary
file), prints ``IN_SAVE`` and sleeps, so the parent can SIGKILL it in the middle of an atomic save.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def make_trainer(ckpt_dir, max_epochs: int):
    """Deterministic trainer: fixed data and seed, global RNG only (restored from checkpoints), one thread."""
    from monai_synth.engines.diffusion import build_diffusion_trainer, build_diffusion_unet, build_scheduler

    torch.manual_seed(0)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    data = [{"image": images[i], "label": torch.tensor(i % 2)} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False, num_workers=0)
    net = build_diffusion_unet(
        num_classes=2, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    sched = build_scheduler("ddpm", num_train_timesteps=20)
    return build_diffusion_trainer(
        net, sched, loader, max_epochs=max_epochs, num_classes=2, loss="l2", lr=1e-3, ema_decay=0.9,
        checkpoint_dir=ckpt_dir, checkpoint_every=1, keep_last=2,
    )  # fmt: skip


def _pause_in_save(epoch: int) -> None:
    """Make the atomic save of ``epoch`` write half of its bytes, announce it, and hang."""
    import monai_synth.utils.io as io

    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        trainer_state = obj.get("trainer") if isinstance(obj, dict) else None
        if trainer_state and trainer_state.get("epoch") == epoch:
            with open(f, "rb+") as fh:
                size = fh.seek(0, 2)
                fh.truncate(size // 2)
            print("IN_SAVE", flush=True)
            time.sleep(60)

    io.torch.save = slow_save  # atomic_torch_save calls torch.save through the io module's torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt_dir")
    parser.add_argument("max_epochs", type=int)
    parser.add_argument("--pause-in-save", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from ignite.engine import Events

    trainer = make_trainer(args.ckpt_dir, args.max_epochs)
    if args.pause_in_save is not None:
        _pause_in_save(args.pause_in_save)

    @trainer.on(Events.STARTED)
    def _start(engine):
        print(f"START {engine.state.epoch}", flush=True)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(engine):
        print(f"EPOCH {engine.state.epoch}", flush=True)

    print("READY", flush=True)
    trainer.run()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
