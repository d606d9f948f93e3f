"""Tests for atomic checkpoints: save/load round trip, latest selection, no partial files, clear errors."""

from __future__ import annotations

import pytest
import torch

from monai_synth.handlers import checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint


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
