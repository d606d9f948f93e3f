"""Training faults: a NaN loss stops training without touching the checkpoints, an unreadable latest checkpoint is
skipped for the previous one, and a second process cannot write into a folder in use."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from ignite.engine import Events

from monai_synth.engines import build_diffusion_trainer, build_diffusion_unet, build_scheduler
from monai_synth.handlers import checkpoint_path, load_checkpoint
from monai_synth.utils.io import LOCK_NAME, FolderLock, FolderLockedError


def make_trainer(ckpt_dir, max_epochs, keep_last=2):
    torch.manual_seed(0)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    data = [{"image": images[i], "label": torch.tensor(i % 2)} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    net = build_diffusion_unet(
        num_classes=2, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    return build_diffusion_trainer(
        net, build_scheduler("ddpm", num_train_timesteps=20), loader, max_epochs=max_epochs, num_classes=2,
        lr=1e-3, ema_decay=0.99, checkpoint_dir=ckpt_dir, checkpoint_every=1, keep_last=keep_last, progress=False,
    )  # fmt: skip


def _poison_at(trainer, iteration: int) -> None:
    """From ``iteration`` on, the network's weights (and so the loss) become NaN, as a diverging run's do."""

    def poison(engine):
        if engine.state.iteration == iteration - 1:
            with torch.no_grad():
                for p in engine.network.parameters():
                    p.fill_(float("nan"))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, poison)


def test_a_nan_loss_stops_training_and_keeps_every_good_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    make_trainer(ckpt, 2).run()  # epochs 1, 2 saved (keep_last=2)
    before = {p.name: p.read_bytes() for p in ckpt.glob("checkpoint_*.pt")}
    assert sorted(before) == ["checkpoint_epoch00001.pt", "checkpoint_epoch00002.pt"]
    trainer = make_trainer(ckpt, 4)  # resumes at epoch 2 (iteration 4); NaN from iteration 6, inside epoch 3
    _poison_at(trainer, 6)
    with pytest.raises(FloatingPointError, match="iteration 6.*untouched"):
        trainer.run()
    after = {p.name: p.read_bytes() for p in ckpt.glob("checkpoint_*.pt")}
    assert after == before  # nothing saved, nothing pruned
    assert not list(ckpt.glob(".*.tmp"))


def test_the_saver_refuses_non_finite_weights(tmp_path):
    from monai_synth.handlers.checkpoint import AtomicCheckpointSaver

    trainer = make_trainer(tmp_path / "ckpt", 1)
    with torch.no_grad():
        next(trainer.network.parameters()).fill_(float("inf"))
    trainer.state.epoch, trainer.state.max_epochs = 1, 1
    saver = AtomicCheckpointSaver(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError, match="no checkpoint written"):
        saver._save(trainer, 1)
    assert not list((tmp_path / "ckpt").glob("checkpoint_*.pt"))


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    ckpt = tmp_path / "ckpt"
    make_trainer(ckpt, 2, keep_last=None).run()
    latest = checkpoint_path(ckpt, 2)
    latest.write_bytes(latest.read_bytes()[:300])  # a disk error / partial copy
    trainer = make_trainer(ckpt, 2, keep_last=None)
    seen = []
    trainer.add_event_handler(Events.STARTED, lambda e: seen.append((e.state.epoch, e.state.iteration)))
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert seen == [(1, 2)]  # resumed from epoch 1, not from scratch
    assert "checkpoint_epoch00002.pt is unreadable" in caplog.text and "checkpoint_epoch00001.pt" in caplog.text
    assert load_checkpoint(checkpoint_path(ckpt, 2))["trainer"]["epoch"] == 2  # epoch 2 redone and saved again


def test_no_readable_checkpoint_is_an_error_naming_the_folder(tmp_path):
    ckpt = tmp_path / "ckpt"
    make_trainer(ckpt, 1).run()
    checkpoint_path(ckpt, 1).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        make_trainer(ckpt, 2).run()


_HOLD = textwrap.dedent(
    """
    import sys, time
    from monai_synth.utils.io import FolderLock
    with FolderLock(sys.argv[1], "holder test"):
        print("LOCKED", flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def held_folder(tmp_path):
    """A folder locked by another, live process."""
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "LOCKED"
        yield folder, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_process_gets_a_clear_error(held_folder):
    folder, proc = held_folder
    with pytest.raises(FolderLockedError, match=f"pid {proc.pid}, holder test"):
        FolderLock(folder).acquire()


def test_generation_into_a_folder_in_use_is_refused_and_touches_nothing(held_folder):
    from helpers import tiny_unet

    from monai_synth.engines import generate_dataset

    folder, _ = held_folder
    (folder / "png").mkdir()
    stale = folder / "png" / "c"
    stale.mkdir()
    (stale / ".synth_000000.png.x.tmp").write_bytes(b"the other process is writing this")
    with pytest.raises(FolderLockedError):
        generate_dataset(tiny_unet(), build_scheduler("ddim", num_train_timesteps=10), folder, num_per_class=1,
                         num_classes=2, image_size=8, num_inference_steps=2, progress=False,
                         class_names=["c", "d"])  # fmt: skip
    assert (stale / ".synth_000000.png.x.tmp").exists()  # the other writer's temporary file survives
    assert not (folder / "generation.json").exists()


def test_training_into_a_folder_in_use_is_refused(held_folder):
    folder, _ = held_folder
    with pytest.raises(FolderLockedError):
        make_trainer(folder, 1).run()
    assert not list(folder.glob("checkpoint_*.pt"))


def test_a_killed_holder_leaves_the_folder_usable(tmp_path):
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "LOCKED"
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    with FolderLock(folder):
        assert (folder / LOCK_NAME).is_file()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with FolderLock(tmp_path), FolderLock(tmp_path):
        pass
    with FolderLock(tmp_path):  # released: can be taken again
        pass
