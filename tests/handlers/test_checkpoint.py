"""Tests for atomic checkpoints: save/load round trip, latest selection, no partial files, clear errors."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_unet

from monai_synth.handlers import (
    checkpoint_path,
    create_ema_model,
    latest_checkpoint,
    load_checkpoint,
    load_weights_for_sampling,
    save_checkpoint,
)


def net_and_opt(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return net, opt


def test_round_trip(tmp_path):
    net, opt = net_and_opt(0)
    path = save_checkpoint(tmp_path / "c.pt", net, opt, extra={"note": "x"})
    net2, opt2 = net_and_opt(1)
    ckpt = load_checkpoint(path, net2, opt2)
    assert ckpt["extra"] == {"note": "x"}
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_failed_save_leaves_no_partial_file(tmp_path):
    net, opt = net_and_opt()
    good = save_checkpoint(checkpoint_path(tmp_path, 1), net, opt)
    before = good.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(checkpoint_path(tmp_path, 2), net, opt, extra={"bad": Unpicklable()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch00001.pt"]
    with pytest.raises(RuntimeError, match="boom"):  # overwriting an existing file keeps the old content on failure
        save_checkpoint(good, net, opt, extra={"bad": Unpicklable()})
    assert good.read_bytes() == before
    assert latest_checkpoint(tmp_path) == good


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for name in [
        "checkpoint_epoch00002.pt",
        "checkpoint_epoch00010.pt",
        "checkpoint_epoch00009.pt",
        ".checkpoint_epoch00011.pt.abc.tmp",
        "checkpoint_epoch00012.pt.bak",
        "other.pt",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch00010.pt"


def test_load_errors(tmp_path):
    net, opt = net_and_opt()
    path = save_checkpoint(tmp_path / "c.pt", net)  # no optimizer state
    with pytest.raises(ValueError, match="'optimizer'"):
        load_checkpoint(path, net, opt)
    with pytest.raises(ValueError, match="trainer"):
        load_checkpoint(path, net, trainer=object())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad, net)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt", net)


def _engine(net, opt, stop_at=None):
    from ignite.engine import Engine, Events

    def step(engine, batch):
        opt.zero_grad()
        net(batch).pow(2).sum().backward()
        opt.step()

    engine = Engine(step)
    if stop_at is not None:
        engine.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e: e.terminate() if e.state.iteration == stop_at else None
        )
    return engine


def _batches():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=g) for _ in range(3)]  # epoch_length 3


@pytest.mark.parametrize("stop_at,done_epochs", [(5, 1), (6, 2)])
def test_saver_writes_the_weights_of_a_terminated_run(tmp_path, stop_at, done_epochs):
    from monai_synth.handlers import AtomicCheckpointSaver, CheckpointResumer

    net, opt = net_and_opt()
    engine = _engine(net, opt, stop_at)
    AtomicCheckpointSaver(tmp_path, network=net, optimizer=opt, keep_last=None).attach(engine)
    engine.run(_batches(), max_epochs=4)
    assert engine.state.iteration == stop_at
    path = latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 2)  # named after the epoch that was running
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["trainer"]["iteration"] == stop_at and ckpt["trainer"]["epoch"] == done_epochs
    for k, v in net.state_dict().items():  # the final in-memory weights, not those of the last finished epoch
        assert torch.equal(ckpt["network"][k], v), k
    # resuming finishes the interrupted epoch and stops at the same total as an uninterrupted run
    net2, opt2 = net_and_opt(1)
    resumed = _engine(net2, opt2)
    CheckpointResumer(tmp_path, network=net2, optimizer=opt2, map_location="cpu").attach(resumed)
    resumed.run(_batches(), max_epochs=4)
    assert resumed.state.iteration == 12 and resumed.state.epoch == 4


def test_load_weights_for_sampling(tmp_path):
    """The one sampling-weights loader: a folder (latest checkpoint, EMA), a checkpoint file (raw), a state dict."""
    net = tiny_unet(seed=1)
    ema = create_ema_model(net, decay=0.5)
    ema.update_parameters(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path / "ck" / "checkpoint_epoch00001.pt", net, ema_model=ema)
    target = tiny_unet(seed=2)
    load_weights_for_sampling(target, tmp_path / "ck")  # folder -> latest, EMA weights
    for a, b in zip(target.parameters(), ema.module.parameters()):
        assert torch.equal(a, b)
    load_weights_for_sampling(target, tmp_path / "ck" / "checkpoint_epoch00001.pt", use_ema=False)
    for a, b in zip(target.parameters(), net.parameters()):
        assert torch.equal(a, b)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    load_weights_for_sampling(tiny_unet(seed=3), tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_weights_for_sampling(target, tmp_path)


def test_minute_snapshots_keep_the_first_epoch_after_each_mark(tmp_path, monkeypatch):
    from ignite.engine import Events

    import monai_synth.handlers.checkpoint as ckpt_module
    from monai_synth.handlers import MinuteSnapshotSaver

    clock = {"s": 0.0}  # a fake wall clock: every epoch takes exactly one minute
    monkeypatch.setattr(ckpt_module.time, "perf_counter", lambda: clock["s"])
    net, opt = net_and_opt()
    engine = _engine(net, opt)
    weights = {}

    def tick(e):
        clock["s"] += 60.0
        weights[e.state.epoch] = {k: v.clone() for k, v in net.state_dict().items()}

    engine.add_event_handler(Events.EPOCH_COMPLETED, tick)  # registered first: runs before the saver
    saver = MinuteSnapshotSaver(tmp_path / "snap", minutes=[2.4, 1.5, 2.2, 10.0], network=net)
    saver.attach(engine)
    engine.run(_batches(), max_epochs=4)
    # marks 1.5 -> the epoch ending at minute 2; 2.2 and 2.4 -> one snapshot at minute 3; 10 never reached
    assert [round(m, 6) for m, _ in saver.taken] == [2.0, 3.0] and saver.pending == [10.0]
    names = sorted(p.name for p in (tmp_path / "snap").iterdir())
    assert names == ["snapshot_0002.0000min.pt", "snapshot_0003.0000min.pt"]
    for (_, path), epoch in zip(saver.taken, (2, 3)):
        state = torch.load(path, weights_only=True)
        assert state["trainer"]["epoch"] == epoch
        for k, v in weights[epoch].items():
            assert torch.equal(state["network"][k], v), k


@pytest.mark.parametrize("minutes", [[], [0.0, 5.0], [-1.0]])
def test_minute_snapshots_reject_marks_that_are_not_positive(tmp_path, minutes):
    from monai_synth.handlers import MinuteSnapshotSaver

    with pytest.raises(ValueError, match="positive"):
        MinuteSnapshotSaver(tmp_path, minutes=minutes)
