"""Checkpoint/resume through build_diffusion_trainer: a resumed run continues the interrupted one exactly."""

from __future__ import annotations

import torch
from ignite.engine import Events

from monai_synth.engines import build_diffusion_trainer, build_diffusion_unet, build_scheduler
from monai_synth.handlers import checkpoint_path, latest_checkpoint, load_checkpoint


def make_trainer(ckpt_dir, max_epochs, sample_dir=None):
    torch.manual_seed(0)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    data = [{"image": images[i], "label": torch.tensor(i % 2)} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    net = build_diffusion_unet(
        num_classes=2, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_head_channels=8
    )
    sched = build_scheduler("ddpm", num_train_timesteps=20)
    return build_diffusion_trainer(
        net,
        sched,
        loader,
        max_epochs=max_epochs,
        num_classes=2,
        loss="l1",
        lr=1e-3,
        ema_decay=0.99,
        grad_clip_norm=1.0,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=1,
        keep_last=None,
        sample_dir=sample_dir,
        sample_every=2,
        sample_shape=(1, 8, 8),
        sample_n_per_class=2,
        sample_steps=2,
    )


def flat(sd):
    return torch.cat([v.flatten().float() for v in sd.values() if torch.is_tensor(v)])


def optim_tensors(opt):
    return [v for s in opt.state_dict()["state"].values() for v in s.values() if torch.is_tensor(v)]


def test_resume_continues_exactly(tmp_path):
    # reference: 3 uninterrupted epochs
    ref = make_trainer(tmp_path / "ref", 3)
    ref.run()

    # interrupted after 2 epochs, then resumed with a fresh process-like setup (new objects, re-seeded)
    first = make_trainer(tmp_path / "run", 2)
    first.run()
    saved = load_checkpoint(checkpoint_path(tmp_path / "run", 2), restore_rng=False)
    assert saved["trainer"]["epoch"] == 2 and saved["trainer"]["iteration"] == 4

    stale = tmp_path / "run" / ".checkpoint_epoch00003.pt.abc.tmp"
    stale.write_bytes(b"partial")  # what a SIGKILL during a save leaves behind
    resumed = make_trainer(tmp_path / "run", 3)
    seen = {}

    @resumed.on(Events.EPOCH_STARTED)
    def _record(engine):
        if "epoch" not in seen:
            seen["epoch"] = engine.state.epoch
            seen["iteration"] = engine.state.iteration
            seen["optim"] = [t.clone() for t in optim_tensors(engine.optimizer)]

    resumed.run()
    assert seen["epoch"] == 3 and seen["iteration"] == 4  # the first epoch run is epoch 3, after 4 saved iterations
    saved_optim = [v for s in saved["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert len(saved_optim) == len(seen["optim"]) > 0
    for a, b in zip(saved_optim, seen["optim"]):
        assert torch.equal(a, b)
    assert resumed.state.epoch == 3 and resumed.state.iteration == 6
    torch.testing.assert_close(flat(resumed.network.state_dict()), flat(ref.network.state_dict()))
    torch.testing.assert_close(flat(resumed.ema_model.state_dict()), flat(ref.ema_model.state_dict()))
    assert latest_checkpoint(tmp_path / "run") == checkpoint_path(tmp_path / "run", 3)
    assert not stale.exists()


def test_sample_grids_written(tmp_path):
    trainer = make_trainer(tmp_path / "ck", 3, sample_dir=tmp_path / "grids")
    trainer.run()
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == [
        "samples_epoch00002.png",
        "samples_epoch00003.png",
    ]
